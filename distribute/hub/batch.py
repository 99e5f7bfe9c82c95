"""One Hub commit of many jobs: the unit of both live mirroring and the catch-up.

A batch holds at most ``DISTRIBUTE_MIRROR_BATCH`` jobs, :data:`COMMIT_MAX_FILES` files and
:data:`BATCH_BYTES` of content (a packed repository's: up to 500 shards, within those bytes). In a
folder repository each job's files go to ``<ab>/<cd>/<slug>/``; in a packed one the batch rewrites
the tar shards (and their indexes) that hold its jobs, with every done job of those shards. Files
are read from a commit of master with ``git archive`` (see :mod:`distribute.hub.source`); the first
commit to a new repository also writes its layout file.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Union

from ..ledger import Entry
from ..protocol import job_path, job_slug
from ..repo import Clone
from .files import commit_files
from .hubsettings import HubSettings
from .layout import LAYOUT_FILE, HubLayout, hub_path_for, index_path, shard_of, shard_path, written
from .pack import ShardJob, index_text, write_tar
from .source import GitFile, entries, export, git_files, git_layout, non_blobs, with_sizes

__all__ = ["Item", "BatchResult", "items_for", "sized", "commit_batch", "group", "message",
           "COMMIT_MAX_FILES", "BATCH_BYTES"]

log = logging.getLogger(__name__)

COMMIT_MAX_FILES = 1000
BATCH_BYTES = 256 * 1024 * 1024  # a commit closes early past this much content


@dataclass(frozen=True)
class Item:
    """A done job to put in a commit: its record's position in the ledger, the record, and its
    regular files (``{rel: (GitFile, sha256 the Hub has for it, or None)}``; a file whose sha256
    turns out equal on export is not uploaded)."""

    position: int
    entry: Entry
    files: dict[str, tuple[GitFile, Optional[str]]]
    base: str = ""  # the job's folder on the Hub, if not where hub_path_for puts it

    @property
    def size(self) -> int:
        """Bytes of content."""
        return sum(max(0, f.size) for f, _ in self.files.values())


@dataclass
class BatchResult:
    """What one :func:`commit_batch` did."""

    commit: str = ""  # the Hub commit ("" when nothing had to be uploaded)
    jobs: list[Entry] = field(default_factory=list)  # jobs whose files the commit holds
    up_to_date: list[Entry] = field(default_factory=list)  # jobs found on the Hub after all
    files: int = 0  # files of results uploaded (the layout file is not counted)
    skipped: list[str] = field(default_factory=list)  # files not uploaded, with the reason


def items_for(clone: Clone, rev: str, lines: list[str], start: int, stop: int,
              sizes: bool = True) -> tuple[list[Item], list[str]]:
    """The records at positions ``start..stop-1`` of ``lines`` as items with all their regular
    files (one ``git ls-tree``), and notes on the files that cannot be uploaded."""
    layout = git_layout(clone, rev)
    records = entries(lines, start, stop)
    listing = git_files(clone, rev, dict.fromkeys(e.job for e in records), layout, sizes)
    items, notes = [], []
    for offset, entry in enumerate(records):
        directory = job_path(entry.job, layout)
        files = listing.get(directory, {})
        notes += non_blobs(directory, files)
        blobs: dict[str, tuple[GitFile, Optional[str]]] = {
            rel: (f, None) for rel, f in files.items() if f.kind == "blob"}
        items.append(Item(start + offset, entry, blobs))
    return items, notes


def sized(clone: Clone, rev: str, items: list[Item]) -> list[Item]:
    """``items`` with the sizes of their files (read from git: fetched in a partial copy)."""
    glayout = git_layout(clone, rev)
    listing = with_sizes(clone, rev, {job_path(i.entry.job, glayout):
                                      {rel: f for rel, (f, _) in i.files.items()} for i in items})
    return [replace(i, files={rel: (listing[job_path(i.entry.job, glayout)][rel], sha)
                              for rel, (_, sha) in i.files.items()}) for i in items]


def group(items: list[Item], s: HubSettings, layout: HubLayout) -> list[list[Item]]:
    """``items`` (in ledger order) cut into commits within the limits; in a packed repository a
    commit counts the whole shards it rewrites."""
    out: list[list[Item]] = []
    current: list[Item] = []
    jobs = files = volume = 0
    shards: set[int] = set()
    for item in items:
        shard = shard_of(item.position, layout.pack) if layout.pack else -1
        if current and _over(s, layout, jobs, files, volume, item, shard not in shards):
            out.append(current)
            current, jobs, files, volume, shards = [], 0, 0, 0, set()
        if not layout.pack:
            jobs, files = jobs + 1, files + len(item.files)
        elif shard not in shards:
            jobs, files = jobs + layout.pack, files + 2
            shards.add(shard)
        current.append(item)
        volume += item.size
    return out + ([current] if current else [])


def _over(s: HubSettings, layout: HubLayout, jobs: int, files: int, volume: int, item: Item,
          new_shard: bool) -> bool:
    """Whether adding ``item`` would take a commit past a limit (a packed repository's commits
    are limited by their files — two per shard — and bytes only)."""
    if layout.pack:
        return new_shard and files + 2 > COMMIT_MAX_FILES or volume + item.size > BATCH_BYTES
    return (jobs + 1 > s.commit_jobs or files + len(item.files) > COMMIT_MAX_FILES
            or volume + item.size > BATCH_BYTES)


def message(records: list[Entry], rev: str) -> tuple[str, str]:
    """Commit title and description naming the job(s), the worker(s) and the git commit."""
    if len(records) == 1:
        e = records[0]
        job = e.job if len(e.job) <= 100 else e.job[:97] + "..."
        title = f"Mirror job {job} by {e.worker} from git {rev[:12]}"
    else:
        title = (f"Mirror {len(records)} jobs from git {rev[:12]}: "
                 + ", ".join(e.job for e in records))
        title = title if len(title) <= 200 else title[:197] + "..."
    lines = [f"git commit: {rev}"]
    lines += [f"job: {e.job}\tworker: {e.worker}\tfinished: {e.at}" for e in records[:5000]]
    return title, "\n".join(lines) + "\n"


def commit_batch(clone: Clone, rev: str, s: HubSettings, layout: HubLayout, items: list[Item],
                 lines: Optional[list[str]] = None, dry_run: bool = False) -> BatchResult:
    """Upload ``items`` (files as of master's ``rev``) in ONE Hub commit (none when nothing
    differs, or with ``dry_run``). A packed repository needs ``lines``, every done record."""
    result = BatchResult()
    with tempfile.TemporaryDirectory(prefix="distribute-mirror-") as tmp:
        if layout.pack:
            assert lines is not None, "a packed repository needs the done records"
            pairs = _shards(clone, rev, layout.pack, lines, items, Path(tmp), result)
        else:
            pairs = _folders(clone, rev, layout, items, Path(tmp), result, dry_run)
        if not pairs or dry_run:
            return result
        result.files = len(pairs)
        if not layout.written:
            pairs.append((LAYOUT_FILE, layout.text().encode("utf-8")))
        title, description = message(result.jobs, rev)
        result.commit = commit_files(pairs, title, description, s)
    if not result.commit:  # every file was on the Hub already (e.g. a commit whose answer was lost)
        result.up_to_date += result.jobs
        result.jobs, result.files = [], 0
        return result
    if not layout.written:
        written(s, layout)
    log.info("%s", s.mask(f"mirrored {len(result.jobs)} jobs ({result.files} files) to "
                          f"{s.repo_id}: commit {result.commit[:12]}"))
    return result


def _folders(clone: Clone, rev: str, layout: HubLayout, items: list[Item], tmp: Path,
             result: BatchResult, dry_run: bool) -> list[tuple[str, Union[Path, bytes]]]:
    """The files of ``items`` at their folders, leaving out those the Hub has (by sha256)."""
    if dry_run and not any(sha for item in items for _, sha in item.files.values()):
        result.jobs = [item.entry for item in items]
        return []
    glayout = git_layout(clone, rev)
    wanted = {job_path(i.entry.job, glayout): {rel: f for rel, (f, _) in i.files.items()}
              for i in items}
    got, skipped = export(clone, rev, wanted, tmp)
    result.skipped += skipped
    pairs: list[tuple[str, Union[Path, bytes]]] = []
    for item in items:
        directory = job_path(item.entry.job, glayout)
        base = item.base or hub_path_for(item.entry.job, layout)
        mine = [(f"{base}/{rel}", got[(directory, rel)][0])
                for rel, (_, sha) in sorted(item.files.items())
                if (directory, rel) in got and got[(directory, rel)][1] != sha]
        if mine:
            pairs += mine
            result.jobs.append(item.entry)
        else:
            result.up_to_date.append(item.entry)
    return pairs


def _shards(clone: Clone, rev: str, pack: int, lines: list[str], items: list[Item], tmp: Path,
            result: BatchResult) -> list[tuple[str, Union[Path, bytes]]]:
    """The tar shards (and indexes) holding ``items``, each with every done job of its range."""
    glayout = git_layout(clone, rev)
    pairs: list[tuple[str, Union[Path, bytes]]] = []
    for k in sorted({shard_of(i.position, pack) for i in items}):
        records = entries(lines, k * pack, min((k + 1) * pack, len(lines)))
        listing = git_files(clone, rev, dict.fromkeys(e.job for e in records), glayout)
        jobs: list[ShardJob] = []
        for entry in records:
            directory = job_path(entry.job, glayout)
            files = listing.get(directory, {})
            result.skipped += non_blobs(directory, files)
            blobs = {r: f for r, f in files.items() if f.kind == "blob"}
            jobs.append((entry, job_slug(entry.job), blobs))
        wanted = {job_path(e.job, glayout): files for e, _, files in jobs if files}
        shard_dir = tmp / f"shard-{k}"
        shard_dir.mkdir()
        got, skipped = export(clone, rev, wanted, shard_dir)
        result.skipped += skipped
        members = [(f"{slug}/{rel}", got[(job_path(e.job, glayout), rel)][0])
                   for e, slug, files in jobs for rel in sorted(files)
                   if (job_path(e.job, glayout), rel) in got]
        tar = tmp / f"{k}.tar"
        write_tar(tar, members)
        pairs += [(shard_path(k), tar), (index_path(k), index_text(jobs).encode("utf-8"))]
        result.jobs += [e for e, _, _ in jobs]
    return pairs
