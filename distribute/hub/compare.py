"""What is not on the Hub yet: master's files against the repository's own listing.

A done job is *mirrored* when every file of its directory on master is in the repository where
:func:`~distribute.hub.hub_path_for` puts it (or, in a repository mirrored before it had a layout
file, at ``<slug>/``) with the same content: git's blob id of a file is exactly the Hub's ``oid``
of a regular file, and for files kept in LFS/Xet the Hub reports their sha256 (compared when the
file is exported, see :mod:`distribute.hub.batch`). In a packed repository a shard is up to date
when its index's blob id is the one master's files make. Nothing here reads a result.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

from ..ledger import Entry
from ..protocol import job_path, job_slug
from ..repo import Clone
from .batch import Item
from .files import RemoteFile
from .layout import HubLayout, hub_path_for, index_path, shard_path, text_blob_id
from .pack import index_text
from .source import GitFile, entries, git_files, git_layout, non_blobs

__all__ = ["Comparison", "compare"]

log = logging.getLogger(__name__)


@dataclass
class Comparison:
    """What :func:`compare` found."""

    items: list[Item] = field(default_factory=list)  # to upload, in ledger order
    considered: int = 0  # distinct done jobs looked at
    up_to_date: int = 0  # ... whose files are all on the Hub
    empty: int = 0  # ... without any file to mirror
    skipped: list[str] = field(default_factory=list)  # files that cannot be uploaded, and why

    def first_pending(self, default: int) -> int:
        """The position of the first record to upload (``default`` when there is none)."""
        return self.items[0].position if self.items else default


def compare(clone: Clone, rev: str, lines: list[str], start: int, layout: HubLayout,
            remote: dict[str, RemoteFile]) -> Comparison:
    """The done records of ``lines`` (master's ``rev``) from position ``start`` that are missing
    or differ in the repository whose whole listing is ``remote``."""
    glayout = git_layout(clone, rev)
    tree = git_files(clone, rev, None, glayout, sizes=False)
    out = Comparison()
    if layout.pack:
        _shards(out, layout.pack, lines, start, tree, glayout, remote)
        return out
    seen: set[str] = set()
    for position, entry in enumerate(entries(lines)):
        if entry.job in seen:
            continue
        seen.add(entry.job)
        if position >= start:
            out.considered += 1
            _folder(out, layout, position, entry, tree, glayout, remote)
    return out


def _matches(r: Optional[RemoteFile], f: GitFile) -> bool:
    return r is not None and r.sha256 is None and r.blob_id == f.blob


def _folder(out: Comparison, layout: HubLayout, position: int, entry: Entry,
            tree: dict[str, dict[str, GitFile]], glayout: int,
            remote: dict[str, RemoteFile]) -> None:
    """Compare one job's folder; an item for it when something must be sent."""
    directory = job_path(entry.job, glayout)
    files = tree.get(directory, {})
    out.skipped += non_blobs(directory, files)
    blobs = {rel: f for rel, f in files.items() if f.kind == "blob"}
    if not blobs:
        out.empty += 1
        return
    base = hub_path_for(entry.job, layout)
    flat = job_slug(entry.job)
    if layout.legacy_flat and not any(f"{base}/{rel}" in remote for rel in blobs) and any(
            f"{flat}/{rel}" in remote for rel in blobs):
        base = flat  # mirrored before the repository had a layout: it stays there
    need: dict[str, tuple[GitFile, Optional[str]]] = {}
    for rel, f in blobs.items():
        r = remote.get(f"{base}/{rel}")
        if not _matches(r, f):
            need[rel] = (f, r.sha256 if r is not None else None)  # (a sha256 is compared on export)
    if need:
        out.items.append(Item(position, entry, need, base if base == flat else ""))
    else:
        out.up_to_date += 1


def _shards(out: Comparison, pack: int, lines: list[str], start: int,
            tree: dict[str, dict[str, GitFile]], glayout: int,
            remote: dict[str, RemoteFile]) -> None:
    """One item per record of each shard (from ``start``'s) whose index differs on the Hub."""
    for k in range(start // pack, (len(lines) + pack - 1) // pack):
        lo, hi = k * pack, min((k + 1) * pack, len(lines))
        records = entries(lines, lo, hi)
        jobs = [(e, job_slug(e.job),
                 {r: f for r, f in tree.get(job_path(e.job, glayout), {}).items()
                  if f.kind == "blob"}) for e in records]
        new = sum(1 for p in range(lo, hi) if p >= start)
        out.considered += new
        r = remote.get(index_path(k))
        text = index_text(jobs)
        if r is not None and shard_path(k) in remote and (
                r.blob_id == text_blob_id(text) if r.sha256 is None
                else r.size == len(text.encode())):
            out.up_to_date += new
            continue
        for i, (entry, _, files) in enumerate(jobs):
            need: dict[str, tuple[GitFile, Optional[str]]] = {rel: (f, None)
                                                              for rel, f in files.items()}
            out.items.append(Item(lo + i, entry, need))
