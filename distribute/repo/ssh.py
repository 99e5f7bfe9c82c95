"""OpenSSH connection sharing for ssh remotes: one connection per host serves every git command.

A new ssh connection costs 180-250 ms; git runs several commands per job. :func:`reuse_command`
is the ``GIT_SSH_COMMAND`` that :mod:`distribute.repo.process` sets unless the user chose their own.
"""
from __future__ import annotations

import logging
import os
import shlex
from typing import Optional

log = logging.getLogger(__name__)

#: Longest control directory: OpenSSH first binds ``<dir>/<%C: 40 hex>.<16 random>``, and a unix
#: socket path holds at most 103 bytes on macOS (107 on Linux).
_MAX_CONTROL_DIR = 103 - 58


def reuse_command(control_dir: str) -> str:
    """The ssh command sharing one connection per host through sockets in ``control_dir``."""
    control_path = shlex.quote(f"ControlPath={control_dir}/%C")
    return f"ssh -o ControlMaster=auto -o {control_path} -o ControlPersist=60"


def control_dir(configured: Optional[str]) -> Optional[str]:
    """The directory of the ControlMaster sockets (``/tmp/distribute-ssh-<uid>`` unless
    ``configured``), created with mode 0700; ``None`` when it is not ours, not 0700 or too long.
    """
    if not hasattr(os, "getuid"):
        return None  # no OpenSSH connection sharing without unix sockets (Windows)
    path = os.path.abspath(os.path.expanduser(configured or f"/tmp/distribute-ssh-{os.getuid()}"))
    if len(path.encode()) > _MAX_CONTROL_DIR:
        log.debug("ssh connection reuse off: %s is too long for a socket path", path)
        return None
    try:
        if not os.path.lexists(path):
            os.mkdir(path, 0o700)
        st = os.lstat(path)
    except OSError as exc:
        log.debug("ssh connection reuse off: cannot create %s: %s", path, exc)
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o170777 != 0o040700:  # S_IFDIR | 0700
        log.warning("ssh connection reuse off: %s is not a directory of mode 0700 owned by you",
                    path)
        return None
    return path
