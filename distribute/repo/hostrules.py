"""What a host allows: probes of its rules (issue 25); its refusals are read by
:mod:`distribute.repo.refusals`.

The protocol needs three things of a host: ``--atomic`` pushes, pushes to ``refs/distribute/*``,
and the files of a job. Hosts differ: some do not support atomic pushes (Azure DevOps, AWS
CodeCommit), some accept only branches and tags (Alibaba Codeup), some refuse big files (GitHub:
``GH001: Large files detected``). The project stops with one line saying what the host refuses
and what to do, instead of retrying.
"""
from __future__ import annotations

from ..exceptions import HostUnsupportedError, RemoteError
from ..protocol import COORD_PREFIX
from ..redact import redact
from .diagnosis import diagnose
from .transport import Transport

#: git's well-known empty tree: a probe commit needs no object of the copy.
_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
#: The ref a dry-run probe names (never written: a dry run sends nothing).
PROBE_REF = f"{COORD_PREFIX}probe"


def require_atomic(transport: Transport) -> None:
    """Raise :class:`HostUnsupportedError` (one line naming "atomic") when the remote does not
    support ``git push --atomic``. A dry run: the server is asked nothing but its capabilities,
    nothing is written. Any other failure is left for the first real push to report."""
    probe = transport.git("commit-tree", _EMPTY_TREE, "-m", "distribute probe").strip()
    args = ["push", "--dry-run", "--porcelain", "--atomic", "--no-verify", "origin",
            f"{probe}:{PROBE_REF}"]
    try:  # (a host that takes no push from us, e.g. read-only access, says so when we push)
        status, _, err = transport._network(args, what="push")
    except RemoteError:
        return
    if status != 0 and diagnose(err).kind == "no-atomic":
        raise HostUnsupportedError(redact(diagnose(err).message("push")))
