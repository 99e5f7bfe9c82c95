"""A worker's copy on disk: its exclusive file lock, and cloning or reusing it."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import filelock

from ..exceptions import LocalCopyError, RemoteError
from ..redact import redact
from ..settings import flag_setting
from .clone import Clone
from .namespace import branches_of

log = logging.getLogger(__name__)

#: From how many branches a remote's list of refs is worth a word: every push of every worker
#: downloads it (pushes cannot ask for less), and every push is checked against it.
MANY_BRANCHES = 10_000


def prepare_clone(url: Optional[str], path: Path, name: str) -> Clone:
    """Clone ``url`` into ``path``, or reuse ``path`` if it is a clone of the same remote.

    A new copy is slim (see :meth:`Clone.clone`) unless ``DISTRIBUTE_SLIM_CLONE=0``.
    """
    if (path / ".git").is_dir():
        clone = Clone(path, name=name)
        if url is not None and clone.remote_url() != url:
            raise LocalCopyError(f"{path} is a clone of another remote "
                                 f"({redact(clone.remote_url())}); choose another path")
        if clone.sparse_paths() is not None:  # (copies made before sparse indexes were used)
            clone.run("config", "index.sparse", "true")
            clone.run("config", "sparse.expectFilesOutsideOfPatterns", "true")
        return clone
    if url is None:
        raise LocalCopyError(f"{path} is not a clone of a distribute remote")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise LocalCopyError(f"{path} exists and is not a git clone; choose another path")
    clone = Clone.clone(url, path, name=name, slim=flag_setting("DISTRIBUTE_SLIM_CLONE"))
    note_many_branches(clone, url)
    return clone


def note_many_branches(clone: Clone, url: str) -> Optional[int]:
    """Say in one log line what a remote keeping :data:`MANY_BRANCHES` branches or more costs and
    what to run; returns the number of branches (``None`` if the remote could not be asked). One
    request (the list of refs as a push gets it), once per new copy."""
    try:
        heads = branches_of(clone.ls_remote("refs/heads/*", cheap=True))
    except RemoteError:
        return None
    if len(heads) >= MANY_BRANCHES:
        log.warning("%s keeps %d branches: every push of every worker downloads their list "
                    "(%.1f MB) and waits for the server's checks over it; `distribute prune %s` "
                    "deletes those of done and failed jobs (see docs/cli.md)", redact(url),
                    len(heads), sum(len(ref) + 42 for ref in heads) / 1e6, redact(url))
    return len(heads)


def lock_local_copy(path: Path) -> filelock.BaseFileLock:
    """Hold an exclusive file lock beside ``path`` so that only one process uses the copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path.parent / f".{path.name}.distribute-lock"))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise LocalCopyError(f"the local copy {path} is in use by another worker process") from None
    return lock
