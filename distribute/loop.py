"""The worker loop, as library code: behind ``distribute worker`` and the quickstart, and usable
from your own scripts.

``run_worker_loop`` takes jobs, calls ``run_func(job, worker)``, finishes or fails each job, and
stops cleanly on SIGTERM/SIGINT: no new job is taken, the running job gets ``grace_s`` seconds to
return (then it is finished as usual), otherwise it is interrupted and given back to the head of
the queue at once. A second signal gives the job back without waiting for the grace period.

The job function runs in a thread of its own, supervised by the loop's thread, which alone drives
git, the remote lock and the heartbeat (see :mod:`distribute.supervise`): the signal handlers only
record the request, and no exception is ever raised from them.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .exceptions import (
    DistributeError,
    FileTooLargeError,
    HostUnsupportedError,
    JobStateError,
    LockLostError,
    MergeConflictError,
    NotARemoteError,
    NotInitializedError,
    RemoteError,
)
from .jobbranch import drop_oversized
from .ledger import Ledger
from .next_jobs import queue_jobs_func
from .protocol import MASTER
from .redact import redact
from .settings import count_setting, seconds_setting
from .supervise import RAISED, STOPPED, JobSupervisor, StopSignals
from .worker import Worker

log = logging.getLogger(__name__)

RunFunc = Callable[[str, Worker], Any]
_CLOSE_TRIES = 3
_UNSET = object()  # "no next job was asked for" (None means "asked, and the queue was empty")
_STOP = object()  # the job was given back because the loop must stop
_RETRIES = 5  # failures in a row of taking a job (network, lost lock) before giving up


@dataclass
class LoopResult:
    """What a :func:`run_worker_loop` call did, and why it ended."""

    done: int = 0
    failed: int = 0
    given_back: int = 0
    ended_by: str = ""  # "idle", "queue empty", "max jobs", "SIGTERM", "SIGINT"


def _close(action: Callable[..., Any], *args: Any, chain: Any = None) -> Any:
    """Run finish_job/fail_job/give_back_job, retrying when the lock was broken meanwhile.

    With ``chain`` (a next-job function) the next job is claimed in the same lock hold and
    returned; without, ``_UNSET`` is returned.
    """
    for attempt in range(1, _CLOSE_TRIES + 1):
        try:
            if chain is None:
                action(*args)
                return _UNSET
            return action(*args, next_job_func=chain)
        except DistributeError as exc:  # LockLostError, or a network failure
            if isinstance(exc, (MergeConflictError, JobStateError, FileTooLargeError)) \
                    or attempt == _CLOSE_TRIES:
                raise
            log.warning("%s failed (%s); trying again", action.__name__, redact(exc))
            time.sleep(0.2 * attempt)


def run_worker_loop(worker: Worker, run_func: RunFunc,
                    next_job_func: Callable[..., Optional[str]] = queue_jobs_func,
                    max_jobs: Optional[int] = None, idle_exit: bool = False,
                    exit_when_queue_empty: bool = False, poll_s: Optional[float] = None,
                    grace_s: Optional[float] = None,
                    report: Optional[Callable[[str], None]] = None,
                    after_finish: Optional[Callable[[Worker, str], Optional[bool]]] = None,
                    on_idle: Optional[Callable[[Worker], object]] = None,
                    batch: Optional[int] = None) -> LoopResult:
    """Run jobs on ``worker`` until told to stop; return what was done.

    Each job is taken with ``worker.get_next_job(next_job_func)``; ``run_func(job, worker)`` writes
    into ``worker.job_dir`` (and may call ``worker.commit_update()``); then the job is finished. An
    exception becomes ``fail_job("<Type>: <message>")`` with the full traceback committed to the job
    branch as ``traceback.txt`` (kept in master's history by the failure, its commit named in
    ``failed.txt``); a merge conflict at finish fails the job too.

    When no job is available: with ``exit_when_queue_empty`` the loop ends; with ``idle_exit`` it
    ends once nothing is queued, waiting or running anywhere (it keeps looking while other
    workers run jobs, since those come back to the queue if their worker dies, and while jobs of
    other stages are queued, since they may queue jobs of its own); otherwise it keeps
    looking forever. Idle looks back off from 1 s to ``poll_s`` and cost one ref listing each
    unless ``master`` moved (see :class:`IdlePolling`). ``max_jobs`` limits the jobs taken.
    ``poll_s`` and ``grace_s`` default to the ``DISTRIBUTE_POLL_S`` and ``DISTRIBUTE_GRACE_S``
    settings. ``report`` receives one line per event (default: the log). ``after_finish``
    is called as ``after_finish(worker, job)`` once a job's finish has landed (e.g. to mirror its
    results); it must not raise, and a ``False`` return is reported as "not mirrored".
    ``on_idle(worker)`` is called before each idle wait (e.g. to commit a mirror batch that is due).
    ``batch`` (default: the ``DISTRIBUTE_MAX_BATCH`` setting) is the most jobs claimed at once
    (:mod:`distribute.batch`): the jobs of a batch run one after another and their finishes land
    together; ``after_finish`` is called for each job once its finish landed. When the loop ends,
    jobs of the batch not started go back to the queue (:meth:`Worker.release_batch`).

    ``run_func`` runs in a thread of its own. The ``worker`` it gets stands for ``worker``
    (attributes, ``isinstance``), but the worker's methods it calls (``commit_update()``...) are
    executed by the loop's thread, which alone drives git; once the job is over (or given back)
    they raise :class:`JobStateError`. SIGTERM/SIGINT (handled when the loop runs in the main
    thread): no new job is taken; ``report`` gets one line at once naming the job and its grace;
    the job has ``grace_s`` seconds to return (then it is finished as usual), and when they are
    over or a second signal comes, :class:`~distribute.supervise.JobInterrupted` is raised in the
    job function and the job is given back. Once a stop signal ended the loop, later SIGTERM/SIGINT
    are ignored for the rest of the process (it is leaving: its last steps must not be cut short).
    """
    poll_s = seconds_setting("DISTRIBUTE_POLL_S", poll_s)
    most = count_setting("DISTRIBUTE_MAX_BATCH", batch)
    grace_s = seconds_setting("DISTRIBUTE_GRACE_S", grace_s)
    say = report or log.info
    result = LoopResult()
    signals = StopSignals()
    signals.install()
    taken, idle_note, errors = 0, "", 0
    ledger: Optional[Ledger] = None  # the ledger of the last look that found no job
    idle = IdlePolling(poll_s)
    claimed: Any = _UNSET  # what the previous finish claimed in the same lock hold
    try:
        while True:
            worker.max_batch = _batch_cap(most, max_jobs, taken)
            if claimed is not _UNSET:
                job, claimed = claimed, _UNSET
                ledger = None if job is not None or exit_when_queue_empty else \
                    _ledger_now(worker)
            else:
                if signals.first is not None:
                    result.ended_by = signals.first
                    break
                if max_jobs is not None and taken >= max_jobs:
                    result.ended_by = "max jobs"
                    break
                if idle.quiet(worker, ledger, next_job_func is queue_jobs_func):
                    ledger = idle.ledger or ledger
                    if idle_exit and ledger is not None and not ledger.queued \
                            and not ledger.running and not ledger.waiting():
                        result.ended_by = "idle"
                        break
                    if on_idle is not None:
                        on_idle(worker)
                    signals.sleep(idle.next_wait())
                    continue
                try:
                    job = worker.get_next_job(next_job_func)
                    ledger = None if job is not None or exit_when_queue_empty else \
                        _ledger_now(worker)
                    errors = 0
                    idle.looked()
                except DistributeError as exc:
                    if signals.first is not None:  # leaving anyway
                        result.ended_by = signals.first
                        break
                    errors += 1
                    if not isinstance(exc, (RemoteError, LockLostError)) or errors > _RETRIES \
                            or isinstance(exc, (NotARemoteError, NotInitializedError,
                                            HostUnsupportedError)):
                        raise
                    say(f"{worker.name}: {redact(exc)}; trying again in {poll_s * errors:g}s")
                    signals.sleep(poll_s * errors)
                    continue
            if job is None:
                if exit_when_queue_empty or ledger is None:
                    result.ended_by = "queue empty"
                    break
                if idle_exit and not ledger.queued and not ledger.running \
                        and not ledger.waiting():
                    result.ended_by = "idle"
                    break
                note = (f"{worker.name} idle: {len(ledger.queued)} queued, {len(ledger.running)} "
                        f"running on other workers; looking again within {poll_s:g}s")
                if note != idle_note:
                    say(note)
                    idle_note = note
                if on_idle is not None:
                    on_idle(worker)
                signals.sleep(idle.next_wait())
                continue
            taken, idle_note, ledger = taken + 1, "", None
            idle.reset()
            say(f"{worker.name} took job {job}")
            if signals.first is not None:
                _close(worker.give_back_job)
                result.given_back += 1
                say(f"{worker.name} gave back job {job} ({signals.first} received)")
                continue
            more = max_jobs is None or taken < max_jobs
            supervisor = JobSupervisor(signals, grace_s, say, worker.name, job)
            worker.max_batch = _batch_cap(most, max_jobs, taken)
            claimed = _run_one(worker, job, run_func, supervisor, result,
                               next_job_func if more else None, after_finish)
            if claimed is _STOP:
                result.ended_by = signals.first or "stop"
                break
        _release(worker, say, after_finish)
    finally:
        signals.close()
    return result


def _batch_cap(most: int, max_jobs: Optional[int], taken: int) -> int:
    """The batch a claim may take now: ``most``, and no more than ``max_jobs`` leaves."""
    return most if max_jobs is None else max(1, min(most, max_jobs - taken))


def _release(worker: Worker, say: Callable[[str], None],
             after_finish: Optional[Callable[[Worker, str], Optional[bool]]]) -> None:
    """At the loop's end: close the batch's jobs finished here, give back those not started."""
    try:
        worker.release_batch()
    except DistributeError as exc:  # they come back to the queue once our heartbeat is silent
        say(f"{worker.name} could not release its batch: {redact(exc)}")
        return
    for job in worker.landed:
        if after_finish is not None:
            after_finish(worker, job)


class IdlePolling:
    """How an idle worker looks for work without keeping the git host busy: waits that double
    from 1 s up to ``poll_s``, and between two lock holds a single cheap look at ``master`` (one
    ref listing); the lock is taken again only when ``master`` moved, or, while other workers run
    jobs, every third of a job lease (so that a dead worker's job is still requeued)."""

    def __init__(self, poll_s: float) -> None:
        self.poll_s = poll_s
        self.wait = min(1.0, poll_s)
        self.last_hold = time.monotonic()
        #: The ledger of the last look without the lock, and the master it was read from.
        self.ledger: Optional[Ledger] = None
        self._read_at: Optional[str] = None

    def reset(self) -> None:
        """Work was found: the next idle period starts with short waits again."""
        self.wait = min(1.0, self.poll_s)

    def looked(self) -> None:
        """A lock hold looked at the whole ledger just now."""
        self.last_hold = time.monotonic()

    def next_wait(self) -> float:
        """The pause before the next look (doubling up to ``poll_s``)."""
        wait, self.wait = self.wait, min(self.wait * 2, self.poll_s)
        return wait

    def quiet(self, worker: Worker, ledger: Optional[Ledger], queue: bool = False) -> bool:
        """Whether nothing can have changed for this idle worker since its last lock hold.
        With ``queue`` (the next-job function takes the queue's head, nothing else), a moved
        master is read without the lock (one fetch, no push): still quiet while nothing is
        queued (:attr:`ledger` is then what was read)."""
        self.ledger = None
        if ledger is None or (ledger.running and
                              time.monotonic() - self.last_hold >= worker.job_lease_s / 3):
            return False
        try:
            head = worker.clone.ls_remote(MASTER, cheap=True).get(MASTER)
            if head in (worker.workspace.master, self._read_at):
                return True
            if not queue:
                return False
            self.ledger, self._read_at = worker.snapshot()["ledger"], head
            return not self.ledger.queued
        except DistributeError:
            return False  # the full look reports the problem


def _ledger_now(worker: Worker) -> Ledger:
    """The ledger after a claim that found no job: the checkout is then the master the worker
    just read (and pushed) under the lock, so no second fetch is needed."""
    return Ledger.read(Path(worker.path))


def _run_one(worker: Worker, job: str, run_func: RunFunc, supervisor: JobSupervisor,
             result: LoopResult, chain: Optional[Callable[..., Optional[str]]],
             after_finish: Optional[Callable[[Worker, str], Optional[bool]]] = None) -> Any:
    """Run one claimed job to its end.

    Returns the next job claimed in the same lock hold as the finish (``None``: the queue was
    empty), ``_UNSET`` when no next job was asked for, or ``_STOP`` when the job was given back
    because we must stop.
    """
    say, signals = supervisor.say, supervisor.signals
    started = time.monotonic()
    outcome = supervisor.run(run_func, worker)
    error = outcome.error
    if outcome.kind == STOPPED:
        if worker.running_job is None:  # the job function closed its job itself
            say(f"{worker.name} stopped with job {job} closed by its function ({outcome.why})")
            return _STOP
        _close(worker.give_back_job)
        result.given_back += 1
        say(f"{worker.name} gave back job {job} ({outcome.why})")
        return _STOP
    if outcome.kind == RAISED and error is not None and not isinstance(error, Exception):
        _close(worker.give_back_job)  # SystemExit or KeyboardInterrupt raised by the job itself
        result.given_back += 1
        raise error
    if outcome.kind == RAISED and error is not None:  # the user's job failed: record it, go on
        reason = redact(f"{type(error).__name__}: {error}")
        drop_oversized(worker, str(error))  # (files too large could never be committed)
        _write_traceback(worker, "".join(traceback.format_exception(
            type(error), error, error.__traceback__)))
        nxt = _close(worker.fail_job, reason, chain=_chain(chain, signals))
        result.failed += 1
        say(f"{worker.name} failed job {job}: {reason}")
        return nxt
    took = time.monotonic() - started
    try:
        nxt = _close(worker.finish_job, chain=_chain(chain, signals))
    except (MergeConflictError, FileTooLargeError) as exc:
        drop_oversized(worker, str(exc))
        nxt = _close(worker.fail_job, str(exc), chain=_chain(chain, signals))
        result.failed += 1
        say(f"{worker.name} failed job {job}: {redact(exc)}")
        return nxt
    except JobStateError as exc:  # e.g. done meanwhile by another worker after a requeue
        say(f"{worker.name} could not finish job {job}: {redact(exc)}")
        if worker.running_job is not None:
            worker.give_back_job()  # clears our state; the ledger is left as it is
        return _UNSET
    result.done += 1
    mirrored = [after_finish(worker, done) for done in worker.landed] if after_finish else []
    say(f"{worker.name} finished job {job} in {took:.1f}s"
        + (" (not mirrored)" if False in mirrored else "")
        + ("" if job in worker.landed else " (it lands with its batch)"))
    return nxt


def _chain(func: Optional[Callable[..., Optional[str]]], signals: StopSignals) -> Any:
    """The next-job function to claim with, unless we are stopping (then finish only)."""
    return func if func is not None and signals.first is None else None


def _write_traceback(worker: Worker, text: str) -> None:
    if worker.job_dir is None:
        return
    try:
        path = Path(worker.job_dir)
        path.mkdir(parents=True, exist_ok=True)
        (path / "traceback.txt").write_text(redact(text), encoding="utf-8")
    except OSError as exc:
        log.warning("could not write traceback.txt: %s", exc)
