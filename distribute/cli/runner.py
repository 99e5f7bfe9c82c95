"""The ready-made worker loop behind ``distribute worker`` (also used by the quickstart).

``run_worker_loop`` takes jobs, calls ``run_func(job, worker)``, finishes or fails each job, and
stops cleanly on SIGTERM/SIGINT: no new job is taken, the running job gets ``grace_s`` seconds to
return (then it is finished as usual), otherwise it is interrupted and given back to the head of
the queue at once. A second signal gives the job back without waiting for the grace period.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..exceptions import DistributeError, JobStateError, LockLostError, MergeConflictError
from ..jobs import queue_jobs_func
from ..redact import redact
from ..worker import Worker

log = logging.getLogger(__name__)

RunFunc = Callable[[str, Worker], Any]
_CLOSE_TRIES = 3


class _GraceExpired(BaseException):
    """Raised inside the job function when the grace period after SIGTERM/SIGINT is over."""


@dataclass
class LoopResult:
    """What a :func:`run_worker_loop` call did, and why it ended."""

    done: int = 0
    failed: int = 0
    given_back: int = 0
    ended_by: str = ""  # "idle", "queue empty", "max jobs", "SIGTERM", "SIGINT"


class _Stopper:
    """SIGTERM/SIGINT handling. Handlers only set flags or raise: no I/O inside a handler."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.requested: Optional[str] = None
        self.in_job = False
        self._saved: dict[int, Any] = {}
        self._timer = hasattr(signal, "setitimer")

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: SIGTERM/SIGINT are not handled by the loop")
            return
        sigs = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGALRM] if self._timer else [])
        for sig in sigs:
            handler = self._on_alarm if sig == getattr(signal, "SIGALRM", None) else self._on_stop
            self._saved[sig] = signal.signal(sig, handler)

    def restore(self) -> None:
        self._disarm()
        for sig, old in self._saved.items():
            signal.signal(sig, old)
        self._saved.clear()

    def _arm(self) -> None:
        if self.grace_s <= 0 or not self._timer:
            raise _GraceExpired()
        signal.setitimer(signal.ITIMER_REAL, self.grace_s)

    def _disarm(self) -> None:
        if self._timer and self._saved:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_stop(self, signum: int, frame: object) -> None:
        first = self.requested is None
        if first:
            self.requested = signal.Signals(signum).name
        if self.in_job:
            if first:
                self._arm()
            else:  # a second signal: do not wait for the grace period
                raise _GraceExpired()

    def _on_alarm(self, signum: int, frame: object) -> None:
        if self.in_job:
            raise _GraceExpired()

    def enter_job(self) -> None:
        self.in_job = True
        if self.requested is not None:
            self._arm()

    def leave_job(self) -> None:
        self.in_job = False
        self._disarm()


def _close(action: Callable[..., None], *args: str) -> None:
    """Run finish_job/fail_job/give_back_job, retrying when the lock was broken meanwhile."""
    for attempt in range(1, _CLOSE_TRIES + 1):
        try:
            action(*args)
            return
        except (LockLostError, DistributeError) as exc:
            if isinstance(exc, (MergeConflictError, JobStateError)) or attempt == _CLOSE_TRIES:
                raise
            log.warning("%s failed (%s); trying again", action.__name__, redact(exc))
            time.sleep(0.2 * attempt)


def _sleep(seconds: float, stopper: _Stopper) -> None:
    """Sleep in short steps so that a stop request is noticed at once."""
    end = time.monotonic() + seconds
    while stopper.requested is None and (left := end - time.monotonic()) > 0:
        time.sleep(min(0.1, left))


def run_worker_loop(worker: Worker, run_func: RunFunc,
                    next_job_func: Callable[..., Optional[str]] = queue_jobs_func,
                    max_jobs: Optional[int] = None, idle_exit: bool = False,
                    exit_when_queue_empty: bool = False, poll_s: float = 5.0, grace_s: float = 30.0,
                    report: Optional[Callable[[str], None]] = None) -> LoopResult:
    """Run jobs on ``worker`` until told to stop; return what was done.

    Each job is taken with ``worker.get_next_job(next_job_func)``; ``run_func(job, worker)`` writes
    into ``worker.job_dir`` (and may call ``worker.commit_update()``); then the job is finished. An
    exception becomes ``fail_job("<Type>: <message>")`` with the full traceback committed to the job
    branch as ``traceback.txt``; a merge conflict at finish fails the job too.

    When no job is available: with ``exit_when_queue_empty`` the loop ends; with ``idle_exit`` it
    ends once nothing is queued and nothing is running anywhere (it keeps looking every ``poll_s``
    seconds while other workers run jobs, since those come back to the queue if their worker dies);
    otherwise it looks again every ``poll_s`` seconds forever. ``max_jobs`` limits the jobs taken.
    ``report`` receives one line per event (default: the log).
    """
    say = report or log.info
    result = LoopResult()
    stopper = _Stopper(grace_s)
    stopper.install()
    taken, idle_note = 0, ""
    try:
        while True:
            if stopper.requested is not None:
                result.ended_by = stopper.requested
                break
            if max_jobs is not None and taken >= max_jobs:
                result.ended_by = "max jobs"
                break
            job = worker.get_next_job(next_job_func)
            if job is None:
                if exit_when_queue_empty:
                    result.ended_by = "queue empty"
                    break
                ledger = worker.snapshot()["ledger"]
                if idle_exit and not ledger.queued and not ledger.running:
                    result.ended_by = "idle"
                    break
                note = (f"{worker.name} idle: {len(ledger.queued)} queued, {len(ledger.running)} "
                        f"running on other workers; looking again every {poll_s:g}s")
                if note != idle_note:
                    say(note)
                    idle_note = note
                _sleep(poll_s, stopper)
                continue
            taken, idle_note = taken + 1, ""
            say(f"{worker.name} took job {job}")
            if stopper.requested is not None:
                _close(worker.give_back_job)
                result.given_back += 1
                say(f"{worker.name} gave back job {job} ({stopper.requested} received)")
                continue
            if not _run_one(worker, job, run_func, stopper, result, say):
                result.ended_by = stopper.requested or "stop"
                break
    finally:
        stopper.restore()
    return result


def _run_one(worker: Worker, job: str, run_func: RunFunc, stopper: _Stopper, result: LoopResult,
             say: Callable[[str], None]) -> bool:
    """Run one claimed job to its end; ``False`` if it was given back because we must stop."""
    started = time.monotonic()
    try:
        try:
            stopper.enter_job()
            run_func(job, worker)
        finally:
            stopper.leave_job()
    except _GraceExpired:
        stopper.leave_job()
        _close(worker.give_back_job)
        result.given_back += 1
        say(f"{worker.name} gave back job {job} ({stopper.requested} received, "
            f"the job did not return within {stopper.grace_s:g}s)")
        return False
    except Exception as exc:  # noqa: BLE001 - the user's job failed: record it, keep going
        reason = redact(f"{type(exc).__name__}: {exc}")
        _write_traceback(worker, traceback.format_exc())
        _close(worker.fail_job, reason)
        result.failed += 1
        say(f"{worker.name} failed job {job}: {reason}")
        return True
    except BaseException:  # SystemExit or KeyboardInterrupt raised by the job itself
        _close(worker.give_back_job)
        result.given_back += 1
        raise
    took = time.monotonic() - started
    try:
        _close(worker.finish_job)
    except MergeConflictError as exc:
        _close(worker.fail_job, str(exc))
        result.failed += 1
        say(f"{worker.name} failed job {job}: {redact(exc)}")
        return True
    except JobStateError as exc:  # e.g. done meanwhile by another worker after a requeue
        say(f"{worker.name} could not finish job {job}: {redact(exc)}")
        worker.give_back_job()  # clears our state; the ledger is left as it is
        return True
    result.done += 1
    say(f"{worker.name} finished job {job} in {took:.1f}s")
    return True


def _write_traceback(worker: Worker, text: str) -> None:
    if worker.job_dir is None:
        return
    try:
        path = Path(worker.job_dir)
        path.mkdir(parents=True, exist_ok=True)
        (path / "traceback.txt").write_text(redact(text), encoding="utf-8")
    except OSError as exc:
        log.warning("could not write traceback.txt: %s", exc)
