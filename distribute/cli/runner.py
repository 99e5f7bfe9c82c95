"""The ready-made worker loop behind ``distribute worker`` (also used by the quickstart).

``run_worker_loop`` takes jobs, calls ``run_func(job, worker)``, finishes or fails each job, and
stops cleanly on SIGTERM/SIGINT: no new job is taken, the running job gets ``grace_s`` seconds to
return (then it is finished as usual), otherwise it is interrupted and given back to the head of
the queue at once. A second signal gives the job back without waiting for the grace period.
"""
from __future__ import annotations

import logging
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..exceptions import (DistributeError, JobStateError, LockLostError, MergeConflictError,
                          NotARemoteError, NotInitializedError, RemoteError)
from ..jobs import queue_jobs_func
from ..ledger import Ledger
from ..redact import redact
from ..worker import Worker
from .common import seconds_setting

log = logging.getLogger(__name__)

RunFunc = Callable[[str, Worker], Any]
_CLOSE_TRIES = 3
_UNSET = object()  # "no next job was asked for" (None means "asked, and the queue was empty")
_STOP = object()  # the job was given back because the loop must stop
_RETRIES = 5  # failures in a row of taking a job (network, lost lock) before giving up


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
    """SIGTERM/SIGINT handling for a job function running in the main thread.

    Python runs signal handlers in the main thread only, and a process-directed signal may be
    delivered to any thread (e.g. a heartbeat thread) without waking a main thread that sleeps
    inside the job function. So a helper thread watches the signal wakeup fd: on the first
    SIGTERM/SIGINT it starts the grace period, on a second one or when the grace is over it marks
    the job as expired, and each time it pokes the main thread with a thread-directed SIGALRM so
    that the handlers run at once. Handlers only set flags or raise: no I/O inside a handler.
    """

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.requested: Optional[str] = None
        self.in_job = False
        self.expired = grace_s <= 0
        self._saved: dict[int, Any] = {}
        self._old_fd: Optional[int] = None
        self._pair: Optional[tuple[socket.socket, socket.socket]] = None
        self._helper: Optional[threading.Thread] = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: SIGTERM/SIGINT are not handled by the loop")
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._saved[sig] = signal.signal(sig, self._on_stop)
        if not hasattr(signal, "pthread_kill"):  # pragma: no cover - not POSIX
            return
        self._saved[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._on_poke)
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        self._pair = (reader, writer)
        self._old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._helper = threading.Thread(target=self._watch, args=(reader, threading.main_thread().ident),
                                        name="distribute-signals", daemon=True)
        self._helper.start()

    def restore(self) -> None:
        if self._pair is not None:
            signal.set_wakeup_fd(self._old_fd if self._old_fd is not None else -1)
            self._pair[1].close()  # the helper's recv returns b"" and it ends
            if self._helper is not None:
                self._helper.join(timeout=5)
            self._pair[0].close()
            self._pair = self._helper = None
        for sig, old in self._saved.items():
            signal.signal(sig, old)
        self._saved.clear()

    def _watch(self, reader: socket.socket, main_ident: Optional[int]) -> None:
        stops, deadline, timing = 0, None, True
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            reader.settimeout(timeout)
            try:
                data = reader.recv(64)
                if not data:
                    return  # restore() closed the other end
            except socket.timeout:
                data = b""
            except OSError:
                return
            new_stops = sum(1 for b in data if b in (signal.SIGTERM, signal.SIGINT))
            stops += new_stops
            if stops and timing and deadline is None:
                deadline = time.monotonic() + self.grace_s
            just_expired = False
            if (stops > 1 or (deadline is not None and time.monotonic() >= deadline)) \
                    and not self.expired:
                self.expired = just_expired = True
                deadline, timing = None, False
            # poke only for news: our own SIGALRM also lands on the wakeup fd, and answering it
            # with another SIGALRM would flood the main thread with signals
            if (new_stops or just_expired) and main_ident is not None:
                try:
                    signal.pthread_kill(main_ident, signal.SIGALRM)  # wake the main thread
                except (OSError, ValueError):
                    return

    def _on_stop(self, signum: int, frame: object) -> None:
        if self.requested is None:
            self.requested = signal.Signals(signum).name
        elif self._pair is None:  # no helper thread: a second signal expires the grace at once
            self.expired = True
        if self.in_job and self.expired:
            raise _GraceExpired()

    def _on_poke(self, signum: int, frame: object) -> None:
        if self.in_job and self.expired:
            raise _GraceExpired()

    def enter_job(self) -> None:
        self.in_job = True
        if self.requested is not None and self.expired:
            raise _GraceExpired()

    def leave_job(self) -> None:
        self.in_job = False


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
        except DistributeError as exc:  # LockLostError, or git interrupted by a signal
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
                    exit_when_queue_empty: bool = False, poll_s: Optional[float] = None,
                    grace_s: Optional[float] = None,
                    report: Optional[Callable[[str], None]] = None,
                    after_finish: Optional[Callable[[Worker, str], bool]] = None) -> LoopResult:
    """Run jobs on ``worker`` until told to stop; return what was done.

    Each job is taken with ``worker.get_next_job(next_job_func)``; ``run_func(job, worker)`` writes
    into ``worker.job_dir`` (and may call ``worker.commit_update()``); then the job is finished. An
    exception becomes ``fail_job("<Type>: <message>")`` with the full traceback committed to the job
    branch as ``traceback.txt``; a merge conflict at finish fails the job too.

    When no job is available: with ``exit_when_queue_empty`` the loop ends; with ``idle_exit`` it
    ends once nothing is queued and nothing is running anywhere (it keeps looking every ``poll_s``
    seconds while other workers run jobs, since those come back to the queue if their worker dies);
    otherwise it looks again every ``poll_s`` seconds forever. ``max_jobs`` limits the jobs taken.
    ``poll_s`` and ``grace_s`` default to the ``DISTRIBUTE_POLL_S`` (5) and ``DISTRIBUTE_GRACE_S``
    (30) settings. ``report`` receives one line per event (default: the log). ``after_finish``
    is called as ``after_finish(worker, job)`` once a job's finish has landed (e.g. to mirror its
    results); it must not raise, and a ``False`` return is reported as "not mirrored".
    """
    poll_s = seconds_setting(poll_s, "DISTRIBUTE_POLL_S", 5.0)
    grace_s = seconds_setting(grace_s, "DISTRIBUTE_GRACE_S", 30.0, zero_ok=True)
    say = report or log.info
    result = LoopResult()
    stopper = _Stopper(grace_s)
    stopper.install()
    taken, idle_note, errors = 0, "", 0
    claimed: Any = _UNSET  # what the previous finish claimed in the same lock hold
    try:
        while True:
            if claimed is not _UNSET:
                job, claimed = claimed, _UNSET
                ledger = None if job is not None or exit_when_queue_empty else \
                    _ledger_now(worker)
            else:
                if stopper.requested is not None:
                    result.ended_by = stopper.requested
                    break
                if max_jobs is not None and taken >= max_jobs:
                    result.ended_by = "max jobs"
                    break
                try:
                    job = worker.get_next_job(next_job_func)
                    ledger = None if job is not None or exit_when_queue_empty else \
                        _ledger_now(worker)
                    errors = 0
                except DistributeError as exc:
                    if stopper.requested is not None:  # Ctrl-C also hit a git child process
                        result.ended_by = stopper.requested
                        break
                    errors += 1
                    if not isinstance(exc, (RemoteError, LockLostError)) or errors > _RETRIES \
                            or isinstance(exc, (NotARemoteError, NotInitializedError)):
                        raise
                    say(f"{worker.name}: {redact(exc)}; trying again in {poll_s * errors:g}s")
                    _sleep(poll_s * errors, stopper)
                    continue
            if job is None:
                if exit_when_queue_empty or ledger is None:
                    result.ended_by = "queue empty"
                    break
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
            more = max_jobs is None or taken < max_jobs
            claimed = _run_one(worker, job, run_func, stopper, result, say,
                               next_job_func if more else None, after_finish)
            if claimed is _STOP:
                result.ended_by = stopper.requested or "stop"
                break
    finally:
        stopper.restore()
    return result


def _ledger_now(worker: Worker) -> Ledger:
    """The ledger after a claim that found no job: the checkout is then the master the worker
    just read (and pushed) under the lock, so no second fetch is needed."""
    return Ledger.read(Path(worker.path))


def _run_one(worker: Worker, job: str, run_func: RunFunc, stopper: _Stopper, result: LoopResult,
             say: Callable[[str], None], chain: Optional[Callable[..., Optional[str]]],
             after_finish: Optional[Callable[[Worker, str], bool]] = None) -> Any:
    """Run one claimed job to its end.

    Returns the next job claimed in the same lock hold as the finish (``None``: the queue was
    empty), ``_UNSET`` when no next job was asked for, or ``_STOP`` when the job was given back
    because we must stop.
    """
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
        say(f"{worker.name} gave back job {job} ({stopper.requested} received; the job was "
            f"interrupted: it did not return within the {stopper.grace_s:g}s grace period "
            "or a second signal came)")
        return _STOP
    except Exception as exc:  # noqa: BLE001 - the user's job failed: record it, keep going
        reason = redact(f"{type(exc).__name__}: {exc}")
        _write_traceback(worker, traceback.format_exc())
        nxt = _close(worker.fail_job, reason, chain=_chain(chain, stopper))
        result.failed += 1
        say(f"{worker.name} failed job {job}: {reason}")
        return nxt
    except BaseException:  # SystemExit or KeyboardInterrupt raised by the job itself
        _close(worker.give_back_job)
        result.given_back += 1
        raise
    took = time.monotonic() - started
    try:
        nxt = _close(worker.finish_job, chain=_chain(chain, stopper))
    except MergeConflictError as exc:
        nxt = _close(worker.fail_job, str(exc), chain=_chain(chain, stopper))
        result.failed += 1
        say(f"{worker.name} failed job {job}: {redact(exc)}")
        return nxt
    except JobStateError as exc:  # e.g. done meanwhile by another worker after a requeue
        say(f"{worker.name} could not finish job {job}: {redact(exc)}")
        if worker.running_job is not None:
            worker.give_back_job()  # clears our state; the ledger is left as it is
        return _UNSET
    result.done += 1
    mirrored = after_finish(worker, job) if after_finish else None
    say(f"{worker.name} finished job {job} in {took:.1f}s"
        + (" (not mirrored)" if mirrored is False else ""))
    return nxt


def _chain(func: Optional[Callable[..., Optional[str]]], stopper: _Stopper) -> Any:
    """The next-job function to claim with, unless we are stopping (then finish only)."""
    return func if func is not None and stopper.requested is None else None


def _write_traceback(worker: Worker, text: str) -> None:
    if worker.job_dir is None:
        return
    try:
        path = Path(worker.job_dir)
        path.mkdir(parents=True, exist_ok=True)
        (path / "traceback.txt").write_text(redact(text), encoding="utf-8")
    except OSError as exc:
        log.warning("could not write traceback.txt: %s", exc)
