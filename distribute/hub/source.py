"""The git side of the mirror: done records in ledger order, the files of done jobs, exporting them.

Everything here reads a commit of ``master`` through the :class:`~distribute.repo.Clone` and never
touches the work tree:

* :class:`DoneRecords` — every done record (the done segments, then ``done.txt``) in ledger
  order; a record's index in that list is the job's *position*, which never changes (records are
  only ever appended, and segments never change), so the mirror can say "the first N records are
  on the Hub" (:mod:`distribute.hub.cursor`);
* :func:`git_files` — the files of jobs' directories (``updates/<ab>/<cd>/<slug>/``, or
  ``updates/<slug>/`` on remotes of the first, flat layout) from one ``git ls-tree``;
* :func:`export` — those files' contents, from ``git archive`` (binary-safe), checked against
  their blob ids.
"""
from __future__ import annotations

import hashlib
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from ..archive import read_blobs, segments
from ..exceptions import DistributeError
from ..ledger import Entry, split_lines
from ..protocol import (
    DONE_FILE,
    FINISHED,
    FLAT,
    LAYOUT_FILE,
    LOG_RECORD_FORMAT,
    ORIGIN_MASTER,
    UPDATES_DIR,
    finish_subject,
    job_path,
    parse_layout,
    parse_log_record,
)
from ..repo import Clone

__all__ = ["GitFile", "DoneRecords", "done_records", "entries", "git_layout", "git_files",
           "with_sizes", "export", "non_blobs", "finish_commit", "source_of"]

log = logging.getLogger(__name__)

_FETCH_CHUNK = 2000  # blob ids per fetch command


@dataclass(frozen=True)
class GitFile:
    """One file of a job's directory in a commit, as ``git ls-tree`` describes it."""

    rel: str  # path inside the job's directory
    blob: str
    size: int
    kind: str  # "blob", "symlink" or "submodule"


class DoneRecords:
    """Every done record of a commit of master, oldest first (segments read once: they never
    change)."""

    def __init__(self, clone: Clone) -> None:
        self.clone = clone
        self._segments: dict[str, list[str]] = {}

    def read(self, rev: str) -> list[str]:
        """The done records (lines) of ``rev`` in ledger order; duplicates are kept, as positions
        count them. Parse the ones you need with :func:`entries`."""
        listed = segments(self.clone, rev)
        new = [blob for _, blob in listed if blob not in self._segments]
        for blob, text in read_blobs(self.clone, new).items():
            self._segments[blob] = split_lines(text)
        lines = [line for _, blob in listed for line in self._segments.get(blob, [])]
        return lines + split_lines(self.clone.show(rev, DONE_FILE))


def entries(lines: list[str], start: int = 0, stop: Optional[int] = None) -> list[Entry]:
    """The records ``lines[start:stop]``, parsed."""
    return [Entry.parse(line) for line in lines[start:stop]]


_records: dict[str, DoneRecords] = {}


def done_records(clone: Clone) -> DoneRecords:
    """The :class:`DoneRecords` reader of ``clone`` (one per local copy in this process)."""
    key = str(clone.path)
    if key not in _records or _records[key].clone is not clone:
        _records[key] = DoneRecords(clone)
    return _records[key]


def git_layout(clone: Clone, rev: str) -> int:
    """The layout of results in ``rev`` (:data:`~distribute.protocol.SHARDED` or ``FLAT``)."""
    return parse_layout(clone.show(rev, LAYOUT_FILE))


def git_files(clone: Clone, rev: str, jobs: Optional[Iterable[str]] = None,
              layout: Optional[int] = None, sizes: bool = True) -> dict[str, dict[str, GitFile]]:
    """``{job directory: {path inside it: GitFile}}`` of ``rev`` from one ``git ls-tree``.

    ``jobs`` limits the listing to those jobs' directories (``None``: every directory under
    ``updates/``); keys are the directories as :func:`~distribute.protocol.job_path` names them.
    Without ``sizes`` no file is read (sizes are -1): in a partial copy a size needs the file,
    so :func:`with_sizes` fetches the few that are needed in a few requests.
    """
    layout = git_layout(clone, rev) if layout is None else layout
    depth = 2 if layout == FLAT else 4  # updates/<slug>/... or updates/ab/cd/<slug>/...
    paths = [f"{job_path(j, layout)}/" for j in jobs] if jobs is not None else [f"{UPDATES_DIR}/"]
    out: dict[str, dict[str, GitFile]] = {}
    _prefetch(clone, rev, paths, blobs=False)
    for start in range(0, len(paths), _FETCH_CHUNK):
        for mode, kind, blob, path in clone.files_under(rev, paths[start:start + _FETCH_CHUNK]):
            parts = path.split("/", depth)
            if len(parts) <= depth:
                continue
            kind = "symlink" if mode == "120000" else "submodule" if kind == "commit" else "blob"
            rel = parts[depth]
            out.setdefault("/".join(parts[:depth]), {})[rel] = GitFile(rel, blob, -1, kind)
    return with_sizes(clone, rev, out) if sizes else out


def with_sizes(clone: Clone, rev: str, listing: dict[str, dict[str, GitFile]]
               ) -> dict[str, dict[str, GitFile]]:
    """``listing`` (of ``rev``) with the sizes of its regular files (in a partial copy, the files
    are fetched first: a size needs the file)."""
    blobs = sorted({f.blob for files in listing.values() for f in files.values()
                    if f.kind == "blob" and f.size < 0})
    if not blobs:
        return listing
    _prefetch(clone, rev, [f"{d}/" for d in listing])
    size = clone.object_sizes(blobs)
    return {d: {rel: GitFile(f.rel, f.blob, size.get(f.blob, f.size), f.kind) if f.kind == "blob"
                else f for rel, f in files.items()} for d, files in listing.items()}


def non_blobs(directory: str, files: dict[str, GitFile]) -> list[str]:
    """Notes for the files of ``directory`` that are not uploaded (symlinks, submodules)."""
    return [f"{directory}/{f.rel} ({f.kind}s are not uploaded)" for f in files.values()
            if f.kind != "blob"]


def _prefetch(clone: Clone, rev: str, directories: list[str], blobs: bool = True) -> None:
    """In a partial copy, fetch what ``directories`` of ``rev`` lack — their trees, and with
    ``blobs`` their files — in a few requests (git would fetch each one when first read)."""
    if not clone.is_partial():
        return
    for _ in range(3):  # a fetched tree brings its subtrees: then only files can be missing
        missing: list[str] = []
        for start in range(0, len(directories), _FETCH_CHUNK):
            missing += clone.missing_objects(rev, directories[start:start + _FETCH_CHUNK],
                                             trees_only=not blobs)
        if not missing:
            return
        for start in range(0, len(missing), _FETCH_CHUNK):
            clone.fetch_objects(missing[start:start + _FETCH_CHUNK])


def export(clone: Clone, rev: str, wanted: dict[str, dict[str, GitFile]], tmp: Path
           ) -> tuple[dict[tuple[str, str], tuple[Path, str]], list[str]]:
    """Write the ``wanted`` files of ``rev`` (``{directory: {rel: GitFile}}``) under ``tmp``.

    Returns ``({(directory, rel): (local path, sha256)}, notes on files not exported)``.
    """
    if not wanted:
        return {}, []
    _prefetch(clone, rev, [f"{d}/" for d in wanted])
    tar_path = tmp / "export.tar"
    clone.archive_tar(rev, [f"{d}/" for d in wanted], str(tar_path))
    got: dict[tuple[str, str], tuple[Path, str]] = {}
    skipped = []
    by_prefix = sorted(wanted, key=len, reverse=True)
    with tarfile.open(tar_path) as tar:
        for number, member in enumerate(tar):
            if not member.isfile():
                continue
            directory = next((d for d in by_prefix if member.name.startswith(d + "/")), None)
            if directory is None:
                continue
            rel = member.name[len(directory) + 1:]
            expected = wanted[directory].get(rel)
            if expected is None:
                continue
            local = tmp / f"f{number}" / rel.rsplit("/", 1)[-1]  # keeps the name progress bars show
            local.parent.mkdir()
            blob = hashlib.sha1(b"blob %d\0" % member.size)
            sha256 = hashlib.sha256()
            with tar.extractfile(member) as src, open(local, "wb") as dst:  # type: ignore[union-attr]
                while chunk := src.read(1 << 20):
                    blob.update(chunk)
                    sha256.update(chunk)
                    dst.write(chunk)
            if blob.hexdigest() == expected.blob:
                got[(directory, rel)] = (local, sha256.hexdigest())
            else:
                skipped.append(f"{member.name} (a .gitattributes rule changes it on export)")
    tar_path.unlink()
    for directory, files in wanted.items():
        for rel in files:
            name = f"{directory}/{rel}"
            if (directory, rel) not in got and not any(s.startswith(name + " (") for s in skipped):
                skipped.append(f"{name} (left out by git archive: "
                               "a .gitattributes export-ignore rule)")
    return got, skipped


def source_of(clone: Clone, job: str) -> tuple[str, Entry]:
    """The commit that finished ``job`` (found from the copy's HEAD, else master) and its record."""
    for fetched in (False, True):
        if fetched:
            clone.fetch()
        for sha in dict.fromkeys(filter(None, (clone.resolve("HEAD"),
                                               clone.resolve(ORIGIN_MASTER)))):
            prefix = job + "\t"
            line = next((record for record in reversed(done_records(clone).read(sha))
                         if record.startswith(prefix) or record == job), None)
            entry = Entry.parse(line) if line is not None else None
            if entry is not None:
                return finish_commit(clone, sha, entry), entry
    raise DistributeError(f"job {job!r} is not done on master: only finished jobs are mirrored")


def finish_commit(clone: Clone, sha: str, entry: Entry) -> str:
    """The commit that finished ``entry.job`` among the last ones before ``sha`` (else ``sha``).

    Right after ``finish_job`` it is HEAD, or HEAD's parent when the next job was claimed in the
    same lock hold (``finish_job(next_job_func)``). It is the commit whose trailers say
    ``finished`` and name the job; only when there is none, a commit without trailers (made by a
    version before them) whose subject is ``<worker> finished job <job>``."""
    out = clone.first_parent_log(sha, f"{LOG_RECORD_FORMAT}%x1f%s", limit=50)
    old_style = None
    for line in out.split("\n"):  # not splitlines(): it also splits at the trailer separator
        fields = line.split("\x1f", 4)  # the trailers hold no control characters; a subject may
        commit, event, _, job = parse_log_record("\x1f".join(fields[:4]))
        if event == FINISHED and job == entry.job:
            return commit
        if (not event and old_style is None and len(fields) > 4
                and fields[4] == finish_subject(entry.worker, entry.job)):
            old_style = commit
    return old_style or sha
