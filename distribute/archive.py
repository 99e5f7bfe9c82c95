"""The done archive: older records of ``done.txt`` in immutable segments ``done/<seq>.txt`` (from
the 1 000th on, ``done/<seq // 1000>/<seq>.txt``: :func:`~distribute.protocol.segment_path`).

``done.txt`` on master keeps the most recent records (at most twice
:data:`~distribute.protocol.DONE_RECENT`), so that a claim or a finish parses and rewrites a small
file however many jobs are done; a finish that finds it full moves the oldest records into a new
segment in the same commit (:func:`roll_into_segment`). Readers see ``segments + done.txt`` as one
ledger (:func:`all_done`). "Is this job done?" looks at ``done.txt`` first and then at the
segments, which a worker reads once (they never change) and keeps in memory (:class:`DoneIndex`).
"""
from __future__ import annotations

import logging
from typing import Optional

from .ledger import Entry, split_lines
from .protocol import DONE_DIR, DONE_RECENT, segment_path
from .repo import Clone
from .repo.trees import splice

log = logging.getLogger(__name__)


def segments(clone: Clone, rev: str) -> list[tuple[str, str]]:
    """``[(path, blob)]`` of the done segments in ``rev`` (in ``done/`` and its numbered
    subdirectories), oldest first."""
    entries = clone.tree_entries(f"{rev}:{DONE_DIR}") or []
    found = [(f"{DONE_DIR}/{e.path}", e.sha) for e in entries
             if e.kind == "blob" and e.path.endswith(".txt")]
    for sub in (e.path for e in entries if e.kind == "tree" and e.path.isdigit()):
        found += [(f"{DONE_DIR}/{sub}/{e.path}", e.sha)
                  for e in clone.tree_entries(f"{rev}:{DONE_DIR}/{sub}") or []
                  if e.kind == "blob" and e.path.endswith(".txt")]
    return sorted(found, key=lambda item: (segment_number(item[0]), item[0]))


def segment_number(path: str) -> int:
    """The number of the segment at ``path`` (0 for a file not named like one)."""
    name = path.rsplit("/", 1)[-1][:-4]
    return int(name) if name.isdigit() else 0


def read_blobs(clone: Clone, blobs: list[str]) -> dict[str, str]:
    """The texts of ``blobs``, fetched from the remote in one request where the copy lacks them."""
    if not blobs:
        return {}
    clone.fetch_objects(blobs)
    found = clone.read_objects(blobs)
    texts: dict[str, str] = {}
    for blob in blobs:
        if blob not in found:
            log.warning("done segment %s could not be read", blob)
            continue
        texts[blob] = found[blob].decode("utf-8", "replace")
    return texts


def all_done(clone: Clone, rev: str, recent: list[Entry]) -> list[Entry]:
    """Every done record at ``rev``: the segments', oldest first, then ``recent``."""
    listed = segments(clone, rev)
    texts = read_blobs(clone, [blob for _, blob in listed])
    older = [Entry.parse(line) for _, blob in listed for line in split_lines(texts.get(blob))]
    return older + recent


class DoneIndex:
    """The jobs recorded in the done segments, read once per segment (segments never change).

    A job once done stays done, so a job found here needs no look at git; a job not found is
    looked for in segments added since, at most once per :meth:`stale` (the owner calls it when
    the checkout moves to a commit made elsewhere, and :meth:`add` for segments it writes)."""

    def __init__(self, clone: Clone) -> None:
        self.clone = clone
        self._jobs: set[str] = set()
        self._read: set[str] = set()
        self._looked: Optional[str] = None  # the rev whose segments are all read

    def stale(self) -> None:
        """The checkout moved: segments may have been added."""
        self._looked = None

    def add(self, records: list[Entry]) -> None:
        """Records just put into a new segment by this copy."""
        self._jobs.update(e.job for e in records)

    def contains(self, rev: str, job: str) -> bool:
        """Whether ``job`` is in one of the done segments of ``rev``."""
        if job in self._jobs or self._looked == rev:
            return job in self._jobs
        new = [blob for _, blob in segments(self.clone, rev) if blob not in self._read]
        if new:
            for blob, text in read_blobs(self.clone, new).items():
                self._jobs.update(line.split("\t", 1)[0] for line in split_lines(text))
                self._read.add(blob)
        self._looked = rev
        return job in self._jobs


def next_segment(listed: list[tuple[str, str]]) -> int:
    """The number of the next segment after those ``listed`` (:func:`segments`)."""
    return 1 + max((segment_number(p) for p, _ in listed), default=0)


def split_recent(lines: list[str]) -> tuple[list[list[str]], list[str]]:
    """Split the records of a ``done.txt`` (its lines, oldest first) as finishes would have over
    time: ``(segments, recent)``, segments of :data:`~distribute.protocol.DONE_RECENT` records
    each, oldest first, and the most recent ``DONE_RECENT`` to ``2 * DONE_RECENT - 1`` records
    left in ``done.txt`` (all of them when there are fewer than ``2 * DONE_RECENT``)."""
    count = max(0, (len(lines) - DONE_RECENT) // DONE_RECENT)
    cut = count * DONE_RECENT
    return [lines[i:i + DONE_RECENT] for i in range(0, cut, DONE_RECENT)], lines[cut:]


def roll_into_segment(clone: Clone, old: list[Entry]) -> Optional[str]:
    """Put ``old`` records into a new segment, amending the commit just made at ``HEAD`` (same
    message and parents) without the index; returns the new commit, checked out."""
    if not old:
        return None
    seq = next_segment(segments(clone, "HEAD"))
    blob = clone.write_blob("".join(e.line() + "\n" for e in old))
    tree = splice(clone, "HEAD", segment_path(seq), blob, blob=True)
    commit = clone.commit_tree(tree, clone.commit_message("HEAD"), clone.parents_of("HEAD"))
    clone.checkout_detached(commit)
    log.info("moved %d done records into %s", len(old), segment_path(seq))
    return commit
