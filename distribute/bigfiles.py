"""Files over the size limit (issue 25, "Big files"): the limit, and the route of such a file to a
store outside git with a pointer committed in its place.

A job's file over ``DISTRIBUTE_MAX_FILE_MB`` (or over the host's own limit, once the host refused
one) can never be pushed. Without a store the job fails at once (:class:`FileTooLargeError`).
With a store (:class:`LargeFileStore`; the integration layer installs one, e.g.
:func:`distribute.hub.keep_large_files` when the Hugging Face mirror is configured), the file is
uploaded and a pointer ``<name>.hub.json`` (:mod:`distribute.protocol.pointer`) is written beside
it: git gets the pointer, never the file. Reads that meet a pointer (``worker.include_paths``,
``worker.inputs``, a resumed job's checkpoint) write the file back beside it from the store,
its SHA-256 checked. The store is injected: nothing here knows the Hub.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

from .exceptions import DistributeError, FileTooLargeError
from .protocol.pointer import Pointer, pointed_name, pointer_name
from .redact import redact
from .repo.pacer import is_github
from .repo.refusals import HOST_REFUSED_SIZE, host_limit_mb
from .settings import number_setting

__all__ = ["LargeFile", "LargeFileStore", "LargeFiles", "max_file_bytes", "oversized",
           "set_aside", "resolve_pointers", "fetch_into", "read_pointer", "sha256_of"]

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LargeFile:
    """A file of a job's directory to keep in the store: its path relative to the directory, its
    place on disk, size and SHA-256."""

    rel: str
    local: Path
    size: int
    sha256: str


class LargeFileStore(Protocol):
    """Where files over the size limit go (see :func:`distribute.hub.keep_large_files`)."""

    def put(self, job: str, files: list[LargeFile]) -> dict[str, Pointer]:
        """Store ``files`` of ``job``'s directory (one upload for all of them); return their
        pointers by ``rel``. Raise :class:`DistributeError` when they cannot be stored."""

    def get(self, pointer: Pointer, target: Path) -> None:
        """Write the file ``pointer`` names at ``target``, its size and SHA-256 checked. Raise
        :class:`DistributeError` when it cannot."""


class LargeFiles:
    """A worker's rule for big files: the limit (``DISTRIBUTE_MAX_FILE_MB`` for its remote, lowered
    to the host's own once the host refused a file with the store installed) and the ``store``
    (``None``: a file over the limit fails its job)."""

    def __init__(self, url: Optional[str]) -> None:
        self.url = url
        self.store: Optional[LargeFileStore] = None
        self._host: Optional[int] = None

    def limit(self) -> Optional[int]:
        """The largest file a job may commit, in bytes (``None``: no limit)."""
        setting = max_file_bytes(self.url)
        if self._host is None:
            return setting
        return self._host if setting is None else min(setting, self._host)

    def learn(self, refusal: str) -> bool:
        """After the host's size refusal ``refusal``: with a store, take the limit the host named
        as this worker's from now on. ``True`` when that lowered the limit (the refused files can
        go to the store now); ``False`` without a store, without a limit named, or when files
        under the new limit were refused already (nothing to gain by trying again)."""
        mb = host_limit_mb(refusal) if HOST_REFUSED_SIZE in refusal else None
        if self.store is None or mb is None:
            return False
        limit, before = int(mb * 2**20), self.limit()
        if before is not None and before <= limit:
            return False
        self._host = limit
        log.warning("the host refuses files over %.2f MB: bigger files go to the store from now "
                    "on", mb)
        return True


def max_file_bytes(url: Optional[str]) -> Optional[int]:
    """``DISTRIBUTE_MAX_FILE_MB`` in bytes (unset: 50 MB for a GitHub remote ``url``, else no
    limit; 0: no limit)."""
    mb = number_setting("DISTRIBUTE_MAX_FILE_MB", fallback=50.0 if is_github(url or "") else 0.0)
    return int(mb * 1024 * 1024) if mb > 0 else None


def oversized(directory: str, limit: Optional[int]) -> list[tuple[Path, str]]:
    """The files of ``directory`` over ``limit`` bytes, each with one line naming it, its size
    and the limit (none when ``limit`` is ``None``)."""
    if limit is None or not directory or not os.path.isdir(directory):
        return []
    found = []
    for root, _, files in os.walk(directory):
        for name in files:
            path = Path(root, name)
            size = path.lstat().st_size
            if size > limit and not path.is_symlink():
                found.append((path, f"file {path.relative_to(directory)} is {size / 2**20:.2f} "
                              f"MB, over the limit of {limit / 2**20:.2f} MB "
                              "(DISTRIBUTE_MAX_FILE_MB): the job cannot be committed"))
    return sorted(found)


def set_aside(store: Optional[LargeFileStore], job: str, directory: str,
              limit: Optional[int]) -> list[str]:
    """The files of ``directory`` over ``limit``, relative to it, for the commit to leave out:
    each is in ``store`` with its pointer written beside it (uploaded now unless the pointer
    there names the same content already). Raises :class:`FileTooLargeError` naming the file,
    its size and the limit when there is no store, or the store failed (its reason added)."""
    found = oversized(directory, limit)
    if not found:
        return []
    if store is None:
        raise FileTooLargeError(found[0][1])
    todo: list[LargeFile] = []
    for path, line in found:
        if pointed_name(path.name) is not None:  # (a pointer is never that big)
            raise FileTooLargeError(line)
        size, digest = path.stat().st_size, sha256_of(path)
        known = read_pointer(path.with_name(pointer_name(path.name)))
        if known is None or (known.size, known.sha256) != (size, digest):
            todo.append(LargeFile(path.relative_to(directory).as_posix(), path, size, digest))
    if todo:
        try:
            pointers = store.put(job, todo)
        except DistributeError as exc:
            line = next(line for path, line in found if path == todo[0].local)
            raise FileTooLargeError(redact(f"{line.split(': the job')[0]}, and it could not "
                                           f"be stored elsewhere: {exc}")) from exc
        for item in todo:
            item.local.with_name(pointer_name(item.local.name)).write_text(
                pointers[item.rel].text(), encoding="utf-8")
            log.info("job %r: %s (%d bytes) is kept in the store, a pointer in git", job,
                     item.rel, item.size)
    return [path.relative_to(directory).as_posix() for path, _ in found]


def resolve_pointers(store: Optional[LargeFileStore], directory: Path,
                     fetched: Optional[Callable[[Path], None]] = None) -> list[Path]:
    """Write the file of each pointer under ``directory`` beside it (those missing, or differing
    from what the pointer names) from ``store``; return the files written. ``fetched(path)`` is
    called for each (e.g. to make git ignore it). A pointer that cannot be resolved (no store,
    the store failed) is logged and left as it is: the job goes on without the file."""
    written: list[Path] = []
    if not directory.is_dir():
        return written
    for root, _, files in os.walk(directory):
        for name in sorted(files):
            target_name = pointed_name(name)
            pointer = read_pointer(Path(root, name)) if target_name else None
            if pointer is None or target_name is None:
                continue
            target = Path(root, target_name)
            if target.is_file() and not target.is_symlink() and \
                    target.stat().st_size == pointer.size and sha256_of(target) == pointer.sha256:
                continue
            if store is None:
                log.warning("%s names a file kept on the Hub (%s of %s); no store is configured "
                            "to fetch it (the Hugging Face mirror)", Path(root, name),
                            pointer.path, pointer.repo_id)
                continue
            try:
                store.get(pointer, target)
            except DistributeError as exc:
                log.warning("could not fetch %s from the store: %s", target, redact(exc))
                continue
            written.append(target)
            if fetched is not None:
                fetched(target)
    return written


def fetch_into(pointer: Pointer, target: Path, fetch: Callable[[Path], None]) -> None:
    """Run ``fetch(tmp)`` (a download of ``pointer``'s file to a temporary path beside
    ``target``), check its size and SHA-256, then move it to ``target``. Raises
    :class:`DistributeError` on a mismatch (nothing is left behind)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".distribute-", dir=target.parent)
    os.close(fd)
    try:
        fetch(Path(tmp))
        size, digest = os.path.getsize(tmp), sha256_of(Path(tmp))
        if (size, digest) != (pointer.size, pointer.sha256):
            raise DistributeError(f"{pointer.path} at {pointer.revision[:12]} is not the file the "
                                  f"pointer names (size {size}, sha256 {digest[:12]}…; expected "
                                  f"{pointer.size}, {pointer.sha256[:12]}…)")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_pointer(path: Path) -> Optional[Pointer]:
    """The pointer in the file ``path`` (``None``: no such file, or not a pointer)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 64 * 1024:
            return None
        return Pointer.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def sha256_of(path: Path) -> str:
    """The SHA-256 of the file at ``path`` (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()

