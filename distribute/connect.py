"""Entry points: connect a worker to a remote (from arguments or from settings), and initialise a
remote's ledger."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Union

from .exceptions import DistributeError
from .protocol import (INIT, LAYOUT_FILE, LEDGER_FILES, MASTER, QUEUE_FILE, SHARDED, check_job,
                       check_worker_name, commit_message, default_worker_name, layout_text)
from .repo import Clone
from .settings import get_env
from .transaction import create_master
from .worker import Worker

__all__ = ["Worker", "worker_from_url", "init_remote", "create_from_config"]


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


def create_from_config(remote_url: Optional[str] = None, path: Optional[str] = None,
                       name: Optional[str] = None, **tunables: object) -> Worker:
    """A :class:`Worker` built from ``DISTRIBUTE_REMOTE``, ``DISTRIBUTE_PATH`` and
    ``DISTRIBUTE_NAME`` (environment first, then ``.env``); arguments given here win.

    ``tunables`` are passed on (``job_lease_s=...``); unset ones come from their own settings.
    """
    url = remote_url or get_env("DISTRIBUTE_REMOTE")
    if not url:
        raise DistributeError("no remote given: set DISTRIBUTE_REMOTE (environment or .env) "
                              "or pass the remote URL")
    return worker_from_url(url, path or get_env("DISTRIBUTE_PATH"),
                           name or get_env("DISTRIBUTE_NAME"), **tunables)


def init_remote(remote_url: str, jobs: Optional[Iterable[str]] = None) -> bool:
    """Create the ledger files on the remote's ``master`` (an empty bare repo is fine).

    ``jobs`` seed ``jobs.txt`` of a new ledger. Returns ``True`` if the ledger was created, ``False``
    if it already existed (then nothing is changed).
    """
    seed = [check_job(j) for j in jobs or []]
    with tempfile.TemporaryDirectory(prefix="distribute-init-") as tmp:
        clone = Clone.clone(remote_url, Path(tmp) / "remote", name="distribute-init")
        master = clone.ls_remote(MASTER).get(MASTER)
        if master is not None:
            clone.git("fetch", "--quiet", "origin", MASTER)
            if all(clone.show(master, f) is not None for f in LEDGER_FILES):
                return False
            clone.git("checkout", "--quiet", "--force", "--detach", master)
        else:
            clone.git("checkout", "--quiet", "--orphan", "distribute-init")
        root = Path(clone.path)
        if master is None:  # a new remote gets the sharded layout of results
            (root / LAYOUT_FILE).write_text(layout_text(SHARDED), encoding="utf-8")
            clone.git("add", "--", LAYOUT_FILE)
        for name in LEDGER_FILES:
            target = root / name
            if not target.exists():
                lines = seed if name == QUEUE_FILE else []
                target.write_text("".join(j + "\n" for j in lines), encoding="utf-8")
        clone.git("add", "--", *LEDGER_FILES)
        message = commit_message("distribute-init", INIT, "initialise the distribute job ledger")
        return create_master(clone, message, master)
