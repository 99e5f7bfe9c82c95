"""The worker's local copy: its name, its exclusive file lock, and cloning or reusing it."""
from __future__ import annotations

import re
import socket
import time
import uuid
from pathlib import Path
from typing import Optional

import filelock

from . import config
from .exceptions import LocalCopyError, WorkerNameError
from .ledger import Ledger
from .lock import COORD_PREFIX, TRACKING_PREFIX, heartbeat_ref
from .redact import redact
from .remote import Clone

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def check_worker_name(name: str) -> str:
    """Return ``name`` if it is usable as a path component and a ref component, else raise."""
    if (not isinstance(name, str) or not _NAME.match(name) or ".." in name
            or name.endswith((".", ".lock")) or name in ("master", "HEAD")):
        raise WorkerNameError(
            f"worker name {name!r} is not allowed: use 1-64 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'")
    return name


def default_worker_name() -> str:
    """The host name plus a short random suffix."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0]).strip("-.") or "worker"
    return f"{host[:50]}-{uuid.uuid4().hex[:6]}"


def prepare_clone(url: Optional[str], path: Path, name: str) -> Clone:
    """Clone ``url`` into ``path``, or reuse ``path`` if it is a clone of the same remote.

    A new copy is slim (see :meth:`Clone.clone`) unless ``DISTRIBUTE_SLIM_CLONE=0``.
    """
    if (path / ".git").is_dir():
        clone = Clone(path, name=name)
        if url is not None and clone.remote_url() != url:
            raise LocalCopyError(f"{path} is a clone of another remote ({redact(clone.remote_url())}); "
                                 "choose another path")
        return clone
    if url is None:
        raise LocalCopyError(f"{path} is not a clone of a distribute remote")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise LocalCopyError(f"{path} exists and is not a git clone; choose another path")
    return Clone.clone(url, path, name=name, slim=config.get_flag("DISTRIBUTE_SLIM_CLONE", True))


def lock_local_copy(path: Path) -> filelock.BaseFileLock:
    """Hold an exclusive file lock beside ``path`` so that only one process uses the copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path.parent / f".{path.name}.distribute-lock"))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise LocalCopyError(f"the local copy {path} is in use by another worker process") from None
    return lock


def check_name_free(clone: Clone, ledger: Ledger, name: str, heartbeat_s: float) -> None:
    """Refuse to start if a live worker called ``name`` holds running jobs (judged by the age of
    its heartbeat's commit time: three heartbeat intervals)."""
    if not any(e.worker == name for e in ledger.running):
        return
    tracking = TRACKING_PREFIX + heartbeat_ref(name)[len(COORD_PREFIX):]
    if clone.resolve(tracking) is None:
        return
    age = time.time() - float(clone.git("log", "-1", "--format=%ct", tracking) or 0)
    if age < 3 * heartbeat_s:
        raise WorkerNameError(
            f"another worker named {name!r} is alive (heartbeat {age:.0f}s ago) and holds "
            f"running jobs; choose another name, or wait {3 * heartbeat_s - age:.0f}s "
            "if that worker is dead")
