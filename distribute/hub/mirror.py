"""The catch-up: every done job's results on the Hub, compared with the Hub's own tree.

**The Hub is the source of truth of what is mirrored** (:mod:`distribute.hub.compare`): a done
job is mirrored when every file of its directory on ``master`` is in the repository with the same
content. :func:`catch_up` compares one ``git ls-tree`` with one (paginated) listing of the
repository, without reading any result, and uploads the difference in few, large
commits — each in a commit slot of the fleet's budget (:mod:`distribute.hub.cursor`), waiting for
the slot and for the Hub's ``Retry-After`` within ``DISTRIBUTE_HF_MAX_WAIT_S``. Afterwards it moves
the fleet's cursor over every record it found complete, so that live mirroring goes on from there.
It is safe to run repeatedly, next to live workers; a run that stopped is simply run again.

Live mirroring is in :mod:`distribute.hub.live`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Optional, Union

from ..exceptions import DistributeError, NotInitializedError
from ..protocol import ORIGIN_MASTER, job_path, short_host
from ..repo import Clone
from ..worker import Worker
from .batch import BatchResult, Item, commit_batch, group, sized
from .compare import compare
from .cursor import MirrorState, advance, claim, read_state, release
from .errors import HubError, HubQuotaError
from .files import remote_index
from .hubsettings import DEFAULT_BATCH, HubSettings, settings
from .layout import HubLayout, discover, from_listing
from .live import flush_mirror, mirror_after_finish
from .source import GitFile, done_records, git_files, git_layout, non_blobs, source_of

log = logging.getLogger(__name__)

__all__ = ["mirror_job", "mirror_after_finish", "flush_mirror", "catch_up", "MirrorReport",
           "DEFAULT_BATCH", "take_slot"]


@dataclass
class MirrorReport:
    """What a catch-up found and did."""

    commit: str = ""  # the master commit whose files were compared and uploaded
    done: int = 0  # done jobs considered
    up_to_date: int = 0  # ... whose files were all on the Hub already
    empty: int = 0  # ... without any file to mirror
    pending: list[str] = field(default_factory=list)  # jobs that needed an upload
    uploaded_jobs: int = 0
    uploaded_files: int = 0
    commits: list[str] = field(default_factory=list)  # Hub commit ids made
    skipped: list[str] = field(default_factory=list)  # files not uploaded, with the reason
    layout: str = ""  # the repository's layout, in words
    waited_s: float = 0.0  # time spent waiting for commit slots


def _clone_of(worker_or_clone: Union[Worker, Clone]) -> tuple[Clone, str]:
    if isinstance(worker_or_clone, Worker):
        return worker_or_clone.clone, worker_or_clone.name
    if isinstance(worker_or_clone, Clone):
        return worker_or_clone, f"mirror-{short_host()}"
    raise TypeError(f"expected a Worker or a Clone, not {type(worker_or_clone).__name__}")


def take_slot(clone: Clone, s: HubSettings, holder: str) -> tuple[MirrorState, float]:
    """Wait for the fleet's next commit slot and take it; ``(held state, seconds waited)``.
    Raises :class:`HubQuotaError` when it is not free within ``DISTRIBUTE_HF_MAX_WAIT_S``."""
    started = time.monotonic()
    while True:
        state = read_state(clone, s, refresh=True)
        wait = state.wait_s()
        held = claim(clone, s, state, holder) if wait == 0 else None
        if held is not None:
            return held, time.monotonic() - started
        pause = min(wait, 2.0) if state.committing() else max(wait, 0.5)
        if time.monotonic() - started + pause > s.max_wait_s:
            who = f"{state.holder} is committing" if state.committing() else "the budget"
            raise HubQuotaError(s.mask(
                f"no Hub commit slot within {s.max_wait_s:g}s ({who}; next slot in {wait:.0f}s, "
                f"DISTRIBUTE_HF_COMMITS_PER_HOUR={s.commits_per_hour:g})"), wait)
        time.sleep(pause)


def _commit_in_slot(clone: Clone, s: HubSettings, holder: str, rev: str, layout: HubLayout,
                    items: list[Item], lines: list[str], report: Optional[MirrorReport] = None
                    ) -> BatchResult:
    """:func:`commit_batch` in a commit slot; a 429 whose wait is too long for the request is
    waited out through the slot (so the whole fleet waits too), within the same bound."""
    while True:
        held, waited = take_slot(clone, s, holder)
        if report is not None:
            report.waited_s += waited
        try:
            result = commit_batch(clone, rev, s, layout, items, lines)
        except HubQuotaError as exc:
            wait = exc.retry_after or s.interval_s
            release(clone, held, holder, not_before=time.time() + wait)
            if wait > s.max_wait_s:
                raise
            continue
        except BaseException:
            release(clone, held, holder)
            raise
        release(clone, held, holder, hub_commit=result.commit, layout=layout)
        return result


def mirror_job(worker_or_clone: Union[Worker, Clone], job: str,
               s: Optional[HubSettings] = None) -> Optional[str]:
    """Upload the done ``job``'s results in ONE commit, in the fleet's next commit slot; return
    the commit id (``None`` when the job has no file, or it was all on the Hub already).

    Files are taken from the commit that finished the job; the Hub commit's message names the
    job, the worker that finished it and that git commit. Raises :class:`HubError` (or a git
    error) on failure.
    """
    s = s or settings()
    clone, holder = _clone_of(worker_or_clone)
    rev, entry = source_of(clone, job)
    lines = done_records(clone).read(rev)
    position = next(i for i, line in enumerate(lines) if line.split("\t", 1)[0] == job)
    glayout = git_layout(clone, rev)
    directory = job_path(job, glayout)
    files = git_files(clone, rev, [job], glayout).get(directory, {})
    for note in non_blobs(directory, files):
        log.warning("%s", s.mask(f"job {job!r}: not uploaded: {note}"))
    blobs: dict[str, tuple[GitFile, Optional[str]]] = {
        rel: (f, None) for rel, f in files.items() if f.kind == "blob"}
    if not blobs:
        log.info("%s", s.mask(f"job {job!r} has no file to mirror"))
        return None
    layout = discover(s, read_state(clone, s).hub_layout())
    result = _commit_in_slot(clone, s, holder, rev, layout, [Item(position, entry, blobs)], lines)
    for note in result.skipped:
        log.warning("%s", s.mask(f"job {job!r}: not uploaded: {note}"))
    return result.commit or None


def catch_up(worker_or_clone: Union[Worker, Clone], since: Optional[str] = None,
             batch: Optional[int] = None, dry_run: bool = False,
             pack: Optional[int] = None) -> MirrorReport:
    """Upload the results of every done job that are missing or differ on the Hub.

    Commits hold up to ``batch`` jobs (``DISTRIBUTE_MIRROR_BATCH``), 1000 files and 256 MB.
    ``since`` (a commit of master) limits the look to jobs finished after it. ``dry_run`` only
    reports what would be uploaded (it reads the files it must compare by sha256, uploads
    nothing and creates nothing). ``pack`` (``DISTRIBUTE_HF_PACK``) packs a new repository's
    results into tar shards of that many jobs. When a commit fails, the error says how far it
    got; the commits made stay, and running it again continues.
    """
    if batch is not None and batch < 1:
        raise DistributeError(f"the batch size must be at least 1, not {batch}")
    s = settings()
    s = replace(s, commit_jobs=batch) if batch is not None else s
    s = replace(s, pack=pack) if pack is not None else s
    clone, holder = _clone_of(worker_or_clone)
    clone.fetch()
    master = clone.resolve(ORIGIN_MASTER)
    if master is None:
        raise NotInitializedError("the remote has no master branch: nothing to mirror")
    lines = done_records(clone).read(master)
    start = 0
    if since:
        base = clone.resolve(since)
        if base is None:
            raise DistributeError(f"--since {since}: no such commit in the remote's master")
        start = len(done_records(clone).read(base))
    if start >= len(lines):
        return MirrorReport(commit=master)
    remote = remote_index(s, create=not dry_run)
    layout = from_listing(s, remote, read_state(clone, s).hub_layout())
    comparison = compare(clone, master, lines, start, layout, remote)
    report = MirrorReport(commit=master, done=comparison.considered,
                          up_to_date=comparison.up_to_date,
                          empty=comparison.empty, skipped=comparison.skipped,
                          layout=layout.describe())
    items = comparison.items
    report.pending = list(dict.fromkeys(i.entry.job for i in items if i.position >= start))
    if items and not dry_run:
        items = sized(clone, master, items)
    _upload(clone, s, holder, master, layout, items, lines, report, dry_run, start)
    return report


def _upload(clone: Clone, s: HubSettings, holder: str, master: str, layout: HubLayout,
            items: list[Item], lines: list[str], report: MirrorReport, dry_run: bool,
            start: int) -> None:
    """Commit ``items`` group by group; then move the fleet's cursor over what is complete."""
    groups = group(items, s, layout)
    chunk: list[Item] = []
    try:
        for chunk in groups:
            if dry_run:
                result = commit_batch(clone, master, s, layout, chunk, lines, dry_run=True)
            else:
                result = _commit_in_slot(clone, s, holder, master, layout, chunk, lines, report)
            report.skipped += result.skipped
            for entry in result.up_to_date:
                if entry.job in report.pending:
                    report.pending.remove(entry.job)
                    report.up_to_date += 1
            if result.commit:
                pending = set(report.pending)
                report.commits.append(result.commit)
                report.uploaded_jobs += sum(1 for e in result.jobs if e.job in pending)
                report.uploaded_files += result.files
    except HubError as exc:
        if not dry_run and start == 0 and chunk:  # every record before this batch is complete
            advance(clone, s, chunk[0].position, holder, layout=layout)
        raise type(exc)(s.mask(
            f"{exc}; {report.uploaded_jobs} of {len(report.pending)} jobs were mirrored before "
            "that; run `distribute mirror` again to continue")) from exc
    if not dry_run and start == 0:  # (with --since, the records before it were not looked at)
        advance(clone, s, len(lines), holder, layout=layout)
