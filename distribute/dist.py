"""Entry points: connect a worker to a remote, and initialise a remote's ledger."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Union

from .ledger import LEDGER_FILES, QUEUE_FILE, check_job
from .remote import Clone, RefUpdate
from .worker import Worker, check_worker_name, default_worker_name

__all__ = ["Worker", "worker_from_url", "init_remote"]


def worker_from_url(remote_url: str, path: Union[str, os.PathLike[str], None] = None,
                    name: Optional[str] = None, **tunables: object) -> Worker:
    """Connect a :class:`Worker` to ``remote_url`` using the local copy at ``path``.

    ``path`` is cloned when it does not exist and reused when it is a clone of the same remote
    (default: ``.distribute/<name>`` under the current directory). ``tunables`` are the keyword
    arguments of :class:`Worker` (``lock_lease_s``, ``job_lease_s``, ``max_attempts``, ...).
    """
    name = check_worker_name(name or default_worker_name())
    local = Path(path) if path is not None else Path(".distribute") / name
    return Worker(local, name, remote_url=remote_url, **tunables)  # type: ignore[arg-type]


def init_remote(remote_url: str, jobs: Optional[Iterable[str]] = None) -> bool:
    """Create the ledger files on the remote's ``master`` (an empty bare repo is fine).

    ``jobs`` seed ``jobs.txt`` of a new ledger. Returns ``True`` if the ledger was created, ``False``
    if it already existed (then nothing is changed).
    """
    seed = [check_job(j) for j in jobs or []]
    with tempfile.TemporaryDirectory(prefix="distribute-init-") as tmp:
        clone = Clone.clone(remote_url, Path(tmp) / "remote", name="distribute-init")
        master = clone.ls_remote("refs/heads/master").get("refs/heads/master")
        if master is not None:
            clone.git("fetch", "--quiet", "origin", "refs/heads/master")
            if all(clone.show(master, f) is not None for f in LEDGER_FILES):
                return False
            clone.git("checkout", "--quiet", "--force", "--detach", master)
        else:
            clone.git("checkout", "--quiet", "--orphan", "distribute-init")
        root = Path(clone.path)
        for name in LEDGER_FILES:
            target = root / name
            if not target.exists():
                lines = seed if name == QUEUE_FILE else []
                target.write_text("".join(j + "\n" for j in lines), encoding="utf-8")
        clone.git("add", "--", *LEDGER_FILES)
        clone.git("commit", "--quiet", "-m", "initialise the distribute job ledger")
        if not clone.push([RefUpdate("refs/heads/master", clone.resolve("HEAD"),
                                     expect=master or "")]):
            return False  # someone else initialised it at the same moment
        return True
