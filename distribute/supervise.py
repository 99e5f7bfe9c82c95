"""Supervision of a job function for the worker loop (:mod:`distribute.loop`).

The job function runs in a thread of its own; the loop's thread (the *owner*) alone drives git,
the remote lock and the heartbeat. The parts:

- :class:`StopSignals`: SIGTERM/SIGINT handlers that only record the request. Every signal also
  wakes the owner at once through the signal wakeup fd (a socket pair), which it waits on.
- :class:`OwnerCalls` and :class:`WorkerView`: the job gets a view of the worker whose methods
  (``commit_update()``, ``include_paths()``...) are executed by the owner thread while it waits,
  so that git is never driven from two threads at once; once the job is over they are refused
  with :class:`~distribute.exceptions.JobStateError`.
- :class:`JobSupervisor`: starts the job thread and waits for it, answering the first signal at
  once, and on a second signal or when the grace period is over interrupts the job function (a
  :class:`JobInterrupted` raised in it, so its ``finally`` blocks run) and waits a bounded time
  for it to end; a thread blocked in C code is left behind (it is a daemon thread).
"""
from __future__ import annotations

import collections
import ctypes
import functools
import inspect
import logging
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, Optional

from .exceptions import JobStateError

log = logging.getLogger(__name__)

#: How long the owner waits for an interrupted job function to end before leaving it behind.
INTERRUPT_WAIT_S = 1.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_MAX_WAIT_S = 1.0  # the owner looks at its state at least this often (a lost wakeup is harmless)

RETURNED, RAISED, STOPPED = "returned", "raised", "stopped"


class JobInterrupted(BaseException):
    """Raised inside the job function when the loop must give its job back (a second stop signal,
    or the grace period after the first one is over). A ``BaseException``, so that ``except
    Exception`` in a job does not swallow it, and its ``finally`` blocks run."""


class StopSignals:
    """SIGTERM/SIGINT while the loop runs: the handlers only record; the owner thread reacts.

    Each signal is counted twice over, by the Python handler (runs in the main thread between two
    bytecodes) and by the byte the C-level handler writes at once to the wakeup socket, whichever
    thread the signal was delivered to; the larger count wins (two signals of one kind may run the
    Python handler once). :meth:`poke` wakes the owner from other threads through the same socket.
    """

    def __init__(self) -> None:
        self._handled: list[int] = []  # appended by the handler: no lock, no I/O
        self._seen: list[int] = []  # read from the wakeup socket by the owner
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._saved: dict[int, Any] = {}
        self._old_fd: Optional[int] = None

    def install(self) -> None:
        """Handle SIGTERM/SIGINT (only possible from the main thread; elsewhere they are left
        alone, with a warning)."""
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: SIGTERM/SIGINT are not handled by the loop")
            return
        for sig in _STOP_SIGNALS:
            self._saved[sig] = signal.signal(sig, self._record)
        self._old_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)

    def _record(self, signum: int, frame: object) -> None:
        self._handled.append(signum)

    def close(self) -> None:
        """Stop handling. If a stop signal came, later ones are ignored (``SIG_IGN``, which also
        holds while the interpreter shuts down) rather than given their old meaning (SIGTERM
        kills, SIGINT raises KeyboardInterrupt): the process is leaving, and what remains of it
        (closing the worker, the last report) must not be cut short."""
        if self._old_fd is not None:
            signal.set_wakeup_fd(self._old_fd)
            self._old_fd = None
        stopped = bool(self.received)
        for sig, old in self._saved.items():
            signal.signal(sig, signal.SIG_IGN if stopped else old)
        self._saved.clear()
        self._reader.close()
        self._writer.close()

    def poke(self) -> None:
        """Wake the owner thread (from any thread)."""
        try:
            self._writer.send(b"\0")
        except OSError:  # full (it is woken anyway) or closed (nobody waits any more)
            pass

    @property
    def received(self) -> list[str]:
        """The names of the stop signals received so far, first first."""
        while True:
            try:
                data = self._reader.recv(512)
            except OSError:  # nothing more to read (BlockingIOError), or closed
                break
            if not data:
                break
            self._seen.extend(b for b in data if b in _STOP_SIGNALS)
        numbers = self._seen if len(self._seen) >= len(self._handled) else self._handled
        return [signal.Signals(n).name for n in numbers]

    @property
    def first(self) -> Optional[str]:
        """The name of the first stop signal, or ``None``."""
        received = self.received
        return received[0] if received else None

    def wait(self, timeout: Optional[float]) -> None:
        """Block until a signal, a poke or ``timeout`` seconds (``None``: at most a second)."""
        timeout = _MAX_WAIT_S if timeout is None else max(0.0, min(timeout, _MAX_WAIT_S))
        try:
            select.select([self._reader], [], [], timeout)
        except (OSError, ValueError):  # closed
            time.sleep(timeout)

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, returning early once a stop signal came."""
        end = time.monotonic() + seconds
        while not self.received and (left := end - time.monotonic()) > 0:
            self.wait(left)


class _Request:
    """One call waiting for the owner thread."""

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.func, self.args, self.kwargs = func, args, kwargs
        self.done = threading.Event()
        self.abandoned = False
        self.value: Any = None
        self.error: Optional[BaseException] = None


class OwnerCalls:
    """Calls made from other threads, executed by the thread that created this object."""

    def __init__(self, poke: Callable[[], None]) -> None:
        self._owner = threading.get_ident()
        self._poke = poke
        self._mutex = threading.Lock()
        self._pending: Deque[_Request] = collections.deque()
        self._closed: Optional[str] = None

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``func(*args, **kwargs)`` in the owner thread and return its result (or raise its
        exception); raise :class:`JobStateError` once :meth:`close` was called."""
        if threading.get_ident() == self._owner:
            return func(*args, **kwargs)
        request = _Request(func, args, kwargs)
        with self._mutex:
            if self._closed is not None:
                raise JobStateError(self._closed)
            self._pending.append(request)
        self._poke()
        try:
            while not request.done.wait(0.05):  # short waits: an interrupt lands between them
                pass
        except BaseException:
            with self._mutex:
                request.abandoned = True
            raise
        if request.error is not None:
            raise request.error
        return request.value

    def serve(self) -> None:
        """Run the pending calls (in the owner thread)."""
        while True:
            with self._mutex:
                if not self._pending:
                    return
                request = self._pending.popleft()
                if request.abandoned:
                    continue
            try:
                request.value = request.func(*request.args, **request.kwargs)
            except BaseException as exc:  # handed to the caller; the owner goes on
                request.error = exc
                if not isinstance(exc, Exception):
                    request.done.set()
                    raise
            request.done.set()

    def close(self, reason: str) -> None:
        """Refuse pending and later calls with ``JobStateError(reason)``."""
        with self._mutex:
            self._closed = reason
            pending, self._pending = list(self._pending), collections.deque()
        for request in pending:
            request.error = JobStateError(reason)
            request.done.set()


class WorkerView:
    """What the job function gets as its ``worker``: attributes are those of the real worker (read
    and written through), its methods run in the owner thread (through :class:`OwnerCalls`).
    ``isinstance(view, Worker)`` holds."""

    __slots__ = ("_target", "_calls")

    def __init__(self, target: Any, calls: OwnerCalls) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_calls", calls)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if inspect.ismethod(value) and value.__self__ is self._target:
            calls = self._calls

            @functools.wraps(value)
            def in_owner(*args: Any, **kwargs: Any) -> Any:
                return calls.call(value, *args, **kwargs)

            return in_owner
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._target, name)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # noqa: D105 - makes isinstance(view, Worker) true
        return type(self._target)

    def __dir__(self) -> list[str]:
        return dir(self._target)

    def __repr__(self) -> str:
        return f"<job view of {self._target!r}>"


@dataclass
class Outcome:
    """How a supervised job ended: ``kind`` is ``RETURNED``, ``RAISED`` (``error`` is what it
    raised) or ``STOPPED`` (it must be given back: ``why`` says why)."""

    kind: str
    error: Optional[BaseException] = None
    why: str = ""


def _async_raise(ident: int, exc_type: type) -> bool:
    """Raise ``exc_type`` in the thread ``ident`` at its next bytecode; ``False`` if impossible."""
    try:
        set_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
        found = set_exc(ctypes.c_ulong(ident), ctypes.py_object(exc_type))
        if found > 1:  # pragma: no cover - cannot happen with a live ident; undo
            set_exc(ctypes.c_ulong(ident), None)
        return bool(found == 1)
    except (AttributeError, OSError, ctypes.ArgumentError):  # pragma: no cover
        return False


class _JobThread:
    """The daemon thread running one job function; publishes its :class:`Outcome`."""

    def __init__(self, func: Callable[[], Any], poke: Callable[[], None], name: str) -> None:
        self._func = func
        self._poke = poke
        self._mutex = threading.Lock()
        self._in_job = False
        self.outcome: Optional[Outcome] = None
        self.interrupted = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self._in_job = True
        self._thread.start()

    def _main(self) -> None:
        try:  # everything inside: an interrupt landing late must not reach the thread's excepthook
            try:
                self._func()
                outcome = Outcome(RETURNED)
            except JobInterrupted as exc:
                outcome = Outcome(STOPPED, exc)
            except BaseException as exc:  # noqa: BLE001 - the owner decides what it means
                outcome = Outcome(RAISED, exc)
            self.outcome = outcome
            with self._mutex:  # from here on no interrupt is sent
                self._in_job = False
            self._poke()
        except BaseException:  # noqa: BLE001 - an interrupt landed in the lines above
            if self.outcome is None:
                self.outcome = Outcome(STOPPED)
            self._in_job = False
            self._poke()

    def interrupt(self) -> bool:
        """Raise :class:`JobInterrupted` in the job function unless it has ended."""
        with self._mutex:
            if not self._in_job or self._thread.ident is None:
                return False
            self.interrupted = _async_raise(self._thread.ident, JobInterrupted)
            return self.interrupted


class JobSupervisor:
    """Runs ``func(job, view)`` in a job thread and waits for it in the calling (owner) thread.

    ``say`` gets one line as soon as a stop signal is noticed: the job, the grace left, and that a
    second signal gives it back now. With ``grace_s`` 0 the first signal stops the job at once.
    """

    def __init__(self, signals: StopSignals, grace_s: float, say: Callable[[str], None],
                 worker_name: str, job: str) -> None:
        self.signals = signals
        self.grace_s = grace_s
        self.say = say
        self.worker_name = worker_name
        self.job = job

    def run(self, func: Callable[[str, Any], Any], worker: Any) -> Outcome:
        """Run the job to its :class:`Outcome`. Afterwards, calls of the worker's methods from the
        job's threads are refused (:class:`JobStateError`)."""
        calls = OwnerCalls(self.signals.poke)
        view = WorkerView(worker, calls)
        thread = _JobThread(lambda: func(self.job, view), self.signals.poke,
                            f"distribute-job-{self.job[:40]}")
        outcome = Outcome(STOPPED, why="the job ended without an outcome")
        try:
            thread.start()
            outcome = self._watch(thread, calls)
        finally:
            calls.close(f"job {self.job!r} is over on this worker ({outcome.kind}); "
                        "the worker can no longer be used from the job function")
        return outcome

    def _watch(self, thread: _JobThread, calls: OwnerCalls) -> Outcome:
        deadline: Optional[float] = None
        noticed = 0
        while True:
            calls.serve()
            if thread.outcome is not None:
                return thread.outcome
            received = self.signals.received
            if received and not noticed:
                noticed = len(received)
                self._acknowledge(received)
                if self.grace_s > 0:
                    deadline = time.monotonic() + self.grace_s
            if len(received) > 1:
                return self._stop(thread, calls, f"{' then '.join(received[:2])} received: "
                                  "given back without waiting for the grace period")
            if received and deadline is None:
                return self._stop(thread, calls, f"{received[0]} received, and the grace "
                                  "period is 0s")
            if received and deadline is not None and time.monotonic() >= deadline:
                return self._stop(thread, calls, f"{received[0]} received: the job did not "
                                  f"return within the {self.grace_s:g}s grace period")
            self.signals.wait(None if deadline is None else deadline - time.monotonic())

    def _acknowledge(self, received: list[str]) -> None:
        who, sig = self.worker_name, received[0]
        if len(received) > 1 or self.grace_s <= 0:
            self.say(f"{who}: {' then '.join(received[:2])} received: giving job {self.job} "
                     "back now")
            return
        again = "Ctrl-C again" if sig == "SIGINT" else "a second SIGTERM or Ctrl-C"
        self.say(f"{who}: {sig} received: job {self.job} has {self.grace_s:g}s of its grace left "
                 f"to return; {again} gives it back now")

    def _stop(self, thread: _JobThread, calls: OwnerCalls, why: str) -> Outcome:
        """Interrupt the job function and wait a little for it to end (serving the calls its
        ``finally`` blocks make): a job that returned meanwhile is finished, else given back."""
        thread.interrupt()
        end = time.monotonic() + INTERRUPT_WAIT_S
        while thread.outcome is None and (left := end - time.monotonic()) > 0:
            calls.serve()
            self.signals.wait(left)
        calls.serve()
        outcome = thread.outcome
        if outcome is not None and outcome.kind == RETURNED:
            return outcome
        if outcome is None:
            log.warning("%s: the function of job %s did not stop within %gs of its interruption "
                        "(blocked outside Python code?); leaving it behind", self.worker_name,
                        self.job, INTERRUPT_WAIT_S)
            why += "; the job function did not stop and was left behind"
        elif thread.interrupted:
            why += "; the job function was interrupted"
        return Outcome(STOPPED, None if outcome is None else outcome.error, why)
