"""The file API of the Hugging Face repository: create it, upload, delete, list, one-commit uploads.

Every call runs under the retry policy of :mod:`distribute.hub.transport` and fails with a
:class:`~distribute.hub.HubError` sentence that never contains the token.
"""
from __future__ import annotations

import contextvars
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from huggingface_hub import CommitOperationAdd, RepoFile
from huggingface_hub.errors import RepositoryNotFoundError

from .errors import HubError
from .hubsettings import HubSettings, settings
from .transport import calling

__all__ = ["RemoteFile", "initialize_dataset", "upload_file", "upload_directory", "delete_file",
           "list_files", "remote_index", "commit_files", "preupload_files"]

log = logging.getLogger(__name__)

#: Set while :func:`commit_files` runs: the client's note that it skipped an empty commit lands
#: here.
_skipped: contextvars.ContextVar[Optional[list[str]]] = contextvars.ContextVar(
    "distribute_hub_skipped", default=None)


class _EmptyCommitNote(logging.Filter):
    """Catches the client's "No files have been modified since last commit" warning of our own
    commits: for us an expected outcome (everything was there already), told by the return value."""

    def filter(self, record: logging.LogRecord) -> bool:
        box = _skipped.get()
        if box is not None and "No files have been modified" in record.getMessage():
            box.append(record.getMessage())
            return False
        return True


logging.getLogger("huggingface_hub.hf_api").addFilter(_EmptyCommitNote())


@dataclass(frozen=True)
class RemoteFile:
    """A file in the repository: its git blob id, size, and sha256 when it is stored with
    LFS/Xet."""

    blob_id: str
    size: int
    sha256: Optional[str] = None


def initialize_dataset(**kwargs: Any) -> str:
    """Create the repository if it is missing, keep it if present; return its URL.

    ``kwargs`` go to ``HfApi.create_repo`` (e.g. ``private=True``).
    """
    s = settings()
    kwargs.setdefault("exist_ok", True)
    with calling(f"creating {s.repo_id}", s):
        return str(s.api().create_repo(s.repo_id, repo_type=s.repo_type, **kwargs))


def upload_file(path: Union[str, os.PathLike[str]], path_in_repo: Optional[str] = None) -> str:
    """Upload one file (default name in the repository: its base name); return the commit id
    (``""`` when the same file is there already)."""
    local = Path(path)
    if not local.is_file():
        raise HubError(f"cannot upload {path}: not a file")
    target = path_in_repo or local.name
    return commit_files([(target, local)], f"Upload {target}")


def upload_directory(path: Union[str, os.PathLike[str]],
                     path_in_repo: Optional[str] = None) -> Optional[str]:
    """Upload every file under ``path`` (``.git`` excluded) in ONE commit; return its id.

    Files land under ``path_in_repo`` (default: the repository root). Returns ``None`` when the
    directory holds no file, ``""`` when all of them are in the repository already (files equal
    to those there are not sent again).
    """
    root = Path(path)
    if not root.is_dir():
        raise HubError(f"cannot upload {path}: not a directory")
    prefix = (path_in_repo or "").strip("/")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            files.append((f"{prefix}/{rel}" if prefix else rel, Path(dirpath) / name))
    if not files:
        log.info("nothing to upload: %s holds no file", path)
        return None
    return commit_files(files, f"Upload {root.name or root.resolve().name} ({len(files)} files)")


def delete_file(path_in_repo: str) -> str:
    """Delete one file from the repository; return the commit id."""
    s = settings()
    with calling(f"deleting {path_in_repo} from {s.repo_id}", s):
        info = s.api().delete_file(path_in_repo, s.repo_id, repo_type=s.repo_type,
                                   commit_message=f"Delete {path_in_repo}")
    return str(info.oid)


def list_files() -> list[str]:
    """Every file path in the repository, sorted."""
    s = settings()
    with calling(f"listing {s.repo_id}", s):
        return sorted(s.api().list_repo_files(s.repo_id, repo_type=s.repo_type))


def remote_index(s: HubSettings, create: bool = True) -> dict[str, RemoteFile]:
    """``{path: RemoteFile}`` for the whole repository (one paginated tree listing).

    A missing repository is created when ``create`` is true (else it reads as empty).
    """
    api = s.api()
    with calling(f"listing {s.repo_id}", s):
        try:
            entries = list(api.list_repo_tree(s.repo_id, recursive=True, repo_type=s.repo_type))
        except RepositoryNotFoundError:
            if not create:
                return {}
            api.create_repo(s.repo_id, repo_type=s.repo_type, exist_ok=True)
            log.info("created the %s", s.where)
            return {}
    out = {}
    for e in entries:
        if isinstance(e, RepoFile):  # not a folder
            lfs = e.lfs
            out[e.path] = RemoteFile(e.blob_id, int(e.size or 0), lfs.sha256 if lfs else None)
    return out


def commit_files(files: Sequence[tuple[str, Union[Path, bytes]]], title: str, description: str = "",
                 s: Optional[HubSettings] = None) -> str:
    """Upload ``(path_in_repo, local path or content)`` pairs in ONE commit; create the repository
    if missing. Returns the commit id, or ``""`` when every file was already there unchanged (no
    commit is made then)."""
    s = s or settings()
    api = s.api()

    def attempt() -> Any:
        ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=local if isinstance(local, bytes)
                                  else str(local)) for p, local in files]
        return api.create_commit(s.repo_id, ops, commit_message=s.mask(title)[:200] or "Upload",
                                 commit_description=s.mask(description, one_line=False),
                                 repo_type=s.repo_type)

    skipped: list[str] = []
    token = _skipped.set(skipped)
    try:
        with calling(f"uploading {len(files)} file(s) to {s.repo_id}", s):
            try:
                info = attempt()
            except RepositoryNotFoundError:
                api.create_repo(s.repo_id, repo_type=s.repo_type, exist_ok=True)
                log.info("created the %s", s.where)
                info = attempt()
    finally:
        _skipped.reset(token)
    if skipped:
        log.info("%s", s.mask(f"no commit: the {len(files)} file(s) are in {s.repo_id} already"))
        return ""
    return str(info.oid)


def preupload_files(files: Sequence[tuple[str, Path]], s: HubSettings) -> None:
    """Send the content of the files the Hub keeps in LFS/Xet ahead of the commit that will name
    them (``preupload_lfs_files``: one request asks which ones, then only those are sent, unless
    the Hub has their content already); create the repository if missing."""
    api = s.api()

    def attempt() -> None:
        ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(local)) for p, local in files]
        api.preupload_lfs_files(s.repo_id, ops, repo_type=s.repo_type)

    with calling(f"pre-uploading {len(files)} file(s) to {s.repo_id}", s):
        try:
            attempt()
        except RepositoryNotFoundError:
            api.create_repo(s.repo_id, repo_type=s.repo_type, exist_ok=True)
            log.info("created the %s", s.where)
            attempt()
