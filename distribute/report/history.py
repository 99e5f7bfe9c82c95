"""The history pass of ``distribute report``: ``master``'s first-parent commits as
``(commit time, subject)``, oldest first, read through the worker's clone.

A shallow copy gets its whole history once (commits only where the server filters); the list is
then kept in the copy and extended with the commits added since, so a report reads ``master``'s
history at most once and usually only its newest commits.
"""
from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Optional

from ..exceptions import RemoteError
from ..redact import redact

if TYPE_CHECKING:  # types only: git runs solely through the clone given
    from ..repo import Clone

log = logging.getLogger(__name__)

KEPT_FILE = "distribute-report-history"
KEPT_MAGIC = "distribute-report-history 1"
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class History(NamedTuple):
    """``master``'s first-parent history: ``(commit time, subject)`` oldest first."""

    commits: list[tuple[int, str]]
    complete: bool
    tip: Optional[str]


def read_history(clone: "Clone", tip: Optional[str]) -> History:
    """All first-parent commits of ``tip``: at most one ``git log`` pass, usually much less.

    A shallow copy (workers' and the command line's copies start shallow) gets its whole history
    first, once: ``git fetch --unshallow``, commits only (``--filter=tree:0``) when the copy is a
    partial clone, so the fetch carries neither trees nor files. If that fetch fails the history
    is what the copy has (``complete`` is false) and durations of older jobs are unknown.

    The list is kept in the copy (``.git/distribute-report-history``, with the commit it ends at);
    the next call reads only the commits added since, after checking that the kept commit is the
    first parent of the oldest new one (a rewritten ``master`` gets a full pass again).
    """
    if tip is None:
        return History([], True, None)
    complete = _unshallow(clone)
    kept_tip, commits = _load_kept(clone) if complete else (None, [])
    if kept_tip == tip:
        return History(commits, True, tip)
    new = _log_since(clone, tip, kept_tip) if kept_tip else None
    if new is None:
        out = clone.first_parent_log(tip, "%ct %s", nul=True)
        commits = []
        for record in out.split("\0"):
            stamp, _, subject = record.strip("\n").partition(" ")
            if stamp.isdigit():
                commits.append((int(stamp), subject))
        commits.reverse()
    else:
        commits += new
    if complete:
        _keep(clone, tip, commits)
    return History(commits, complete, tip)


def _unshallow(clone: "Clone") -> bool:
    """Complete the history of a shallow copy (once); ``False`` if that failed."""
    if not (clone.path / ".git" / "shallow").exists():
        return True
    started = time.perf_counter()
    why = clone.unshallow_master()
    if why is not None:
        log.warning("could not fetch the history of master (%s); job durations cover only "
                    "the commits this copy has", redact(why))
        return False
    log.info("fetched the history of master in %.1fs (once per local copy)",
             time.perf_counter() - started)
    return True


def _log_since(clone: "Clone", tip: str, kept: str) -> Optional[list[tuple[int, str]]]:
    """First-parent commits of ``tip`` after ``kept``, oldest first; ``None`` unless ``kept`` is
    on ``tip``'s first-parent chain."""
    try:
        out = clone.first_parent_log(f"{kept}..{tip}", "%ct %P%n%s", nul=True)
    except RemoteError:
        return None
    new: list[tuple[int, str]] = []
    first_parent = ""
    for record in reversed([r for r in out.split("\0") if r.strip("\n")]):
        head, _, subject = record.strip("\n").partition("\n")
        stamp, _, parents = head.partition(" ")
        if not stamp.isdigit():
            return None
        if not new:
            first_parent = parents.split(" ")[0]
        new.append((int(stamp), subject))
    return new if new and first_parent == kept else None


def _kept_path(clone: "Clone") -> Path:
    return clone.path / ".git" / KEPT_FILE


def _load_kept(clone: "Clone") -> tuple[Optional[str], list[tuple[int, str]]]:
    """The kept history list and the commit it ends at; ``(None, [])`` if absent or unreadable.

    The file: ``<magic> <sha>``, a line of the commit times, then the subjects, each ended by NUL.
    """
    try:
        text = _kept_path(clone).read_text(encoding="utf-8", errors="surrogateescape")
        header, _, rest = text.partition("\n")
        times, _, subjects = rest.partition("\n")
        magic, _, sha = header.rpartition(" ")
        stamps = [int(t) for t in times.split()]
        names = subjects.split("\0")
        if magic != KEPT_MAGIC or not _SHA.match(sha) or names[-1] or len(names) != len(stamps) + 1:
            return None, []
        return sha, list(zip(stamps, names))
    except (OSError, ValueError):
        return None, []


def _keep(clone: "Clone", tip: str, commits: list[tuple[int, str]]) -> None:
    path = _kept_path(clone)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(f"{KEPT_MAGIC} {tip}\n" + " ".join(str(t) for t, _ in commits) + "\n"
                       + "".join(s + "\0" for _, s in commits),
                       encoding="utf-8", errors="surrogateescape")
        os.replace(tmp, path)
    except OSError as exc:  # only a cache: the next report reads the whole history again
        log.info("could not keep the history list in %s: %s", path, exc)
