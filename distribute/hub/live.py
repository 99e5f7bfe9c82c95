"""Live mirroring: results reach the Hub in batches as the fleet finishes jobs, within a budget.

:func:`mirror_after_finish` is called by a worker right after each finish. It pre-uploads the
job's large files (those the Hub keeps in LFS/Xet) from the machine that made them, then looks at
the fleet's mirror state (:mod:`distribute.hub.cursor`, as fetched by the finish): when the next
commit slot is free and enough is pending — ``DISTRIBUTE_HF_BATCH_FILES`` files, or a job
that has waited ``DISTRIBUTE_HF_BATCH_S`` seconds — it takes the slot and commits every
pending job of the fleet (up to a commit's limits), whoever finished them. Otherwise it returns at
once: some later finish, here or on another worker, commits them. So the fleet makes at most
``DISTRIBUTE_HF_COMMITS_PER_HOUR`` commits an hour however many workers it has (defaults:
:data:`distribute.settings.SETTINGS`).

:func:`flush_mirror` is for a worker that stops: it waits (at most ``DISTRIBUTE_HF_MAX_WAIT_S``)
until the jobs it finished are on the Hub, committing them itself when the slot is free, or
leaving them to the holder that is committing. Neither function raises: a job the mirror could
not commit stays done in git and pending, for the next batch or ``distribute mirror``.
"""
from __future__ import annotations

import logging
import tempfile
import time
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Optional

from ..exceptions import DistributeError
from ..protocol import ORIGIN_MASTER, job_path, parse_utc
from ..redact import redact
from ..repo import Clone
from ..worker import Worker
from .batch import Item, commit_batch, group, items_for, sized
from .compare import compare
from .cursor import MirrorState, claim, read_state, release
from .errors import HubQuotaError, HubUnavailableError
from .files import preupload_files, remote_index
from .hubsettings import HubSettings, settings
from .layout import HubLayout, discover, from_listing, hub_path_for
from .source import done_records, entries, export, git_files, git_layout

__all__ = ["mirror_after_finish", "mirror_when_idle", "flush_mirror", "commit_pending",
           "LIVE_WAIT_S", "PREUPLOAD_MIN_BYTES"]

log = logging.getLogger(__name__)

#: The longest a finishing worker waits on a 429 inline; a longer ``Retry-After`` is recorded in
#: the fleet's mirror state instead, so that nobody commits before it has passed.
LIVE_WAIT_S = 5.0
#: Files from this size on are pre-uploaded by the worker that finished the job.
PREUPLOAD_MIN_BYTES = 64 * 1024
_paused_until: dict[tuple[str, str, str], float] = {}  # (endpoint, type, repo) -> monotonic time
_finished: "weakref.WeakKeyDictionary[Worker, list[str]]" = weakref.WeakKeyDictionary()
_outdated: "weakref.WeakKeyDictionary[Worker, str]" = weakref.WeakKeyDictionary()  # (idle workers)


def mirror_after_finish(worker: Worker, job: str) -> Optional[bool]:
    """Mirror ``job`` live, right after ``worker.finish_job()``. Never raises.

    Returns ``True`` when this call committed a batch holding the job (its files are on the Hub),
    ``None`` when the job waits for a batch (made by this worker or another one, or by
    :func:`flush_mirror` when this worker stops), and ``False`` when the mirror cannot work at
    all (settings). After the Hub was unreachable, live mirroring of that repository pauses for
    ``DISTRIBUTE_HF_PAUSE_S`` seconds in this process (jobs finished meanwhile wait).
    """
    try:
        s = settings()
    except DistributeError as exc:
        log.warning("job %r is done but not mirrored: %s", job, exc)
        return False
    _finished.setdefault(worker, []).append(job)
    key = (s.endpoint or "", s.repo_type, s.repo_id)
    left = _paused_until.get(key, 0.0) - time.monotonic()
    if left > 0:
        log.info("%s", s.mask(f"job {job!r} waits for the Hub: its calls are paused for "
                              f"{left:.0f}s more after a failure"))
        return None
    try:
        _preupload(worker.clone, job, s)
        committed = commit_pending(worker.clone, worker.name, replace(s, max_wait_s=min(
            s.max_wait_s, LIVE_WAIT_S)), worker.clone.resolve("HEAD") or "HEAD")
    except HubQuotaError as exc:
        problem = str(exc)  # (the slot's next time was moved by the wait the Hub asked for)
    except HubUnavailableError as exc:
        _paused_until[key] = time.monotonic() + s.pause_s
        problem = str(exc)
    except DistributeError as exc:
        problem = str(exc)
    except Exception as exc:  # noqa: BLE001 - mirroring must never fail a finished job
        problem = f"{type(exc).__name__}: {exc}"
    else:
        return True if job in (committed or []) else None
    log.warning("%s", s.mask(f"job {job!r} is done; its results wait for a later Hub commit "
                             f"({problem})"))
    return None


def mirror_when_idle(worker: Worker) -> bool:
    """For a worker waiting for jobs: commit the pending batch when it is due (by size, or by
    time: ``DISTRIBUTE_HF_BATCH_S``) and the slot is free, so that the last results of a run
    reach the Hub while the fleet idles. Never raises; ``True`` when it made a commit. Cheap when
    there is nothing to do: it reads the mirror state the last look for jobs fetched, and after
    another worker took the slot it waits for the next look to bring the new state."""
    try:
        s = settings()
        if _paused_until.get((s.endpoint or "", s.repo_type, s.repo_id), 0.0) > time.monotonic():
            return False
        state = read_state(worker.clone, s)
        if state.sha is not None and _outdated.get(worker) == state.sha:
            return False
        committed = commit_pending(worker.clone, worker.name, replace(
            s, max_wait_s=min(s.max_wait_s, LIVE_WAIT_S)), worker.clone.resolve("HEAD") or "HEAD",
            state=state)
        if committed is None and state.sha is not None:
            _outdated[worker] = state.sha
        return bool(committed)
    except Exception as exc:  # noqa: BLE001 - an idle worker must go on looking for jobs
        log.warning("%s", redact(f"{worker.name}: the pending Hub batch waits ({exc})"))
        return False


def _preupload(clone: Clone, job: str, s: HubSettings) -> None:
    """Send the job's large files to the Hub now (folder repositories only), from HEAD."""
    rev = clone.resolve("HEAD") or "HEAD"
    glayout = git_layout(clone, rev)
    directory = job_path(job, glayout)
    files = {rel: f for rel, f in git_files(clone, rev, [job], glayout).get(directory, {}).items()
             if f.kind == "blob" and f.size >= PREUPLOAD_MIN_BYTES}
    if not files:
        return
    layout = discover(s, read_state(clone, s).hub_layout())
    if layout.pack:
        return  # shards are made by the committer
    with tempfile.TemporaryDirectory(prefix="distribute-preupload-") as tmp:
        got, _ = export(clone, rev, {directory: files}, Path(tmp))
        base = hub_path_for(job, layout)
        preupload_files([(f"{base}/{rel}", local)
                         for (_, rel), (local, _) in sorted(got.items())], s)


def _age_s(utc: str) -> float:
    then = parse_utc(utc)
    return 0.0 if then is None else time.time() - then


def _due(clone: Clone, rev: str, lines: list[str], start: int, s: HubSettings) -> bool:
    """Whether the pending records (from ``start``) make a batch: enough files, or old enough."""
    if _age_s(entries(lines, start, start + 1)[0].at) >= s.batch_s:
        return True
    if len(lines) - start >= s.batch_files:
        return True
    items, _ = items_for(clone, rev, lines, start, len(lines), sizes=False)
    return sum(len(i.files) for i in items) >= s.batch_files


def commit_pending(clone: Clone, holder: str, s: HubSettings, rev: str, force: bool = False,
                   state: Optional[MirrorState] = None) -> Optional[list[str]]:
    """If the commit slot is free and a batch is due (always, with ``force``), take the slot and
    commit the pending records of ``rev`` (one commit's worth); return the jobs committed
    (``[]``: nothing to do yet; ``None``: the slot was free by ``state`` but another worker
    took it first, or ``state`` was not the remote's any more)."""
    state = state or read_state(clone, s)
    if state.wait_s() > 0:
        return []
    lines = done_records(clone).read(rev)
    if state.cursor >= len(lines) or not (force or _due(clone, rev, lines, state.cursor, s)):
        return []
    held = claim(clone, s, state, holder)
    if held is None:
        return None
    try:
        if held.layout:
            layout = discover(s, held.hub_layout())
            stop = min(len(lines), held.cursor + max(s.commit_jobs, layout.pack))
            items, notes = items_for(clone, rev, lines, held.cursor, stop)
        else:  # no mirror state for this repository yet: what is on the Hub already?
            items, notes, layout = _compared(clone, s, rev, lines)
        for note in notes:
            log.warning("%s", s.mask(f"not uploaded: {note}"))
        if not items:
            release(clone, held, holder, cursor=len(lines), layout=layout)
            return []
        batch = group(items, s, layout)[0]
        rest = items[len(batch):]
        end = (rest[0].position if rest else len(lines) if not held.layout
               else batch[-1].position + 1)
        result = commit_batch(clone, rev, s, layout, batch, lines)
    except HubQuotaError as exc:
        release(clone, held, holder, not_before=time.time() + (exc.retry_after or s.interval_s))
        raise
    except BaseException:
        release(clone, held, holder)
        raise
    release(clone, held, holder, cursor=end, hub_commit=result.commit, layout=layout)
    return [item.entry.job for item in batch]


def _compared(clone: Clone, s: HubSettings, rev: str, lines: list[str]
              ) -> tuple[list[Item], list[str], HubLayout]:
    """The records of ``rev`` not on the Hub (one listing of the repository), sized for a commit."""
    remote = remote_index(s)
    layout = from_listing(s, remote)
    found = compare(clone, rev, lines, 0, layout, remote)
    items = found.items[:max(s.commit_jobs, layout.pack)]
    return sized(clone, rev, items) + found.items[len(items):], found.skipped, layout


def flush_mirror(worker: Worker, max_wait_s: Optional[float] = None) -> bool:
    """Before ``worker`` stops: see the jobs it mirrored live onto the Hub. Never raises.

    Waits at most ``max_wait_s`` (``DISTRIBUTE_HF_MAX_WAIT_S``) for commit slots; commits the
    pending batch itself when the slot is free (every pending job of the fleet, not only its
    own), or lets the worker committing now do it. Returns ``True`` when every job this worker
    finished is on the Hub (per the fleet's mirror state), ``False`` when some are left for
    other workers or ``distribute mirror`` (a warning says how many).
    """
    mine = _finished.pop(worker, [])
    if not mine:
        return True
    try:
        s = settings()
    except DistributeError as exc:
        log.warning("%s: %d finished jobs are not mirrored: %s", worker.name, len(mine), exc)
        return False
    wait = s.max_wait_s if max_wait_s is None else max_wait_s
    try:
        left = _flush(worker.clone, worker.name, s, set(mine), time.monotonic() + wait)
        problem = f"no commit slot within {wait:g}s (DISTRIBUTE_HF_MAX_WAIT_S)"
    except DistributeError as exc:
        left, problem = len(mine), str(exc)
    except Exception as exc:  # noqa: BLE001 - a stopping worker must stop
        left, problem = len(mine), f"{type(exc).__name__}: {exc}"
    if not left:
        return True
    log.warning("%s", s.mask(f"{worker.name}: {left} of the {len(mine)} jobs it finished are not "
                             f"on the Hub yet ({problem}); a later batch or `distribute mirror` "
                             "uploads them"))
    return False


def _flush(clone: Clone, holder: str, s: HubSettings, mine: set[str], deadline: float) -> int:
    """Commit or wait until the records of ``mine`` are below the cursor; how many are not."""
    while True:
        state = read_state(clone, s, refresh=True)
        rev = clone.resolve(ORIGIN_MASTER) or "HEAD"
        lines = done_records(clone).read(rev)
        first: dict[str, int] = {}
        for position, line in enumerate(lines):
            first.setdefault(line.split("\t", 1)[0], position)
        left = sum(1 for job in mine if first.get(job, -1) >= state.cursor)
        if not left:
            return 0
        pause = state.wait_s()
        if pause == 0:
            try:
                if commit_pending(clone, holder, s, rev, force=True, state=state):
                    continue
            except HubQuotaError:
                continue  # the slot's next time now says how long the Hub wants us to wait
            pause = 1.0  # another worker took the slot first
        if state.committing():
            pause = min(pause, 2.0)  # the holder may finish early: look again soon
        if time.monotonic() + pause > deadline:
            return left
        time.sleep(pause)
