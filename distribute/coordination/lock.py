"""The push-based lock: ``refs/distribute/lock`` exists while someone holds it.

Its value is a marker (see :mod:`distribute.protocol`) naming the holder. It is taken by a push
that expects the ref to be absent, renewed by a push that expects our own value, and released by
deleting it in the same ``--atomic`` push that updates ``master`` (so a holder whose lock was
broken cannot write: fencing). Waiting is first come, first served (:mod:`.waitqueue`); a value
unchanged for the lease (by the :class:`~.observer.Observer`) is broken by the first in line.
A waiter may carry a request (:class:`~distribute.protocol.Request`) that the holder serves in its
own push, deleting the wait ref: the waiter then stops waiting (:class:`RequestAnswered`).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Optional, Sequence

from ..exceptions import LockLostError, RemoteError
from ..protocol import COORD_PREFIX, LOCK_REF, WAIT_PREFIX, Request, marker_message
from ..repo import Clone, RefUpdate
from .observer import Observer
from .waitqueue import POLL_BY_POSITION_S, WaitQueue

log = logging.getLogger(__name__)


class RequestAnswered(Exception):
    """Our wait ref, which carried a request, is gone: a holder served the request (or took us
    for a dead waiter). Nothing is held; read ``master`` to learn which."""


class RemoteLock:
    """The single remote lock. ``acquire()`` waits; ``release_update()`` is put in the final
    push."""

    def __init__(self, clone: Clone, holder: str, lease_s: float, observer: Observer,
                 poll_min_s: float = 0.02, poll_max_s: float = 1.0,
                 poll_budget: float = 5.0) -> None:
        self.clone = clone
        self.holder = holder
        self.lease_s = lease_s
        self.observer = observer
        self.poll_min_s = poll_min_s
        self.poll_max_s = poll_max_s
        #: Polls per second the whole line may send: waiters behind the first poll less often
        #: the longer the line, so that a big fleet does not flood the git host.
        self.poll_budget = poll_budget
        self.value: Optional[str] = None
        self.waits = 0  # number of polls spent waiting, for benchmarks
        self._mutex = threading.Lock()
        self._stop_renew: Optional[threading.Event] = None
        self._renewer: Optional[threading.Thread] = None
        self._seen: tuple[Optional[str], float] = (None, 0.0)  # lock value, first seen (waiting)
        #: wait refs (and their values) skipped as dead: idle at the head of the line
        self.dead_waiters: dict[str, str] = {}
        self._typical_hold_s = 0.0
        self._took_at = 0.0
        #: The values our lock has had since we took it (a fetch may show one renewed since).
        self._values: set[str] = set()
        self._renew_limit: tuple[Optional[float], str] = (None, "")
        #: Clean-ups for the push that releases the lock: the wait refs of dead waiters.
        self.leftovers: list[RefUpdate] = []

    def _marker(self) -> str:
        return self.clone.make_marker(marker_message("lock", self.holder))

    def acquire(self, request: Optional[Request] = None,
                tip: Optional[Sequence[str]] = None) -> None:
        """Block until we hold the lock, breaking it once its value has been stale for the lease.

        Waiting is first come, first served: a waiter announces itself with a wait ref and takes
        the lock only when it is the oldest waiter it knows of (see :class:`WaitQueue`). With a
        ``request``, the wait ref's marker carries it (with ``tip`` as its parent) and
        :class:`RequestAnswered` is raised if a holder deletes the wait ref meanwhile.
        """
        marker = self._marker()
        wait = WaitQueue(self, (lambda: self.clone.make_marker(request.message(), tip))
                         if request else marker, answerable=request is not None)
        if not wait.others_known():  # the usual case without contention: one round trip
            if self.clone.push([RefUpdate(LOCK_REF, marker, expect="")], read_back=False):
                self._took(marker)
                return
        try:
            self._wait_and_take(marker, wait)
        except BaseException:
            wait.leave()
            raise

    def _wait_and_take(self, marker: str, wait: "WaitQueue") -> None:
        delay = self.poll_min_s
        self._seen = (None, 0.0)
        last_look, slept = time.monotonic(), 0.0
        seen_first: Optional[str] = "?"  # the lock's value at our first look in line
        while True:
            wait.join()
            try:
                started = time.monotonic()
                refs = self.clone.ls_remote(COORD_PREFIX + "*", cheap=True)
                wait.poll_s = time.monotonic() - started
            except RemoteError as exc:
                self.clone.unreachable_at = time.monotonic()
                log.warning("%s cannot see the lock (%s); still waiting", self.holder, exc)
                time.sleep(self.poll_max_s)
                continue
            if time.monotonic() - last_look - slept - wait.poll_s > self.lease_s / 3:
                self.observer.forget(LOCK_REF)  # we were not watching: the lease starts again
            last_look = time.monotonic()
            if wait.answerable and wait.joined and refs.get(wait.ref) != wait.marker:
                wait.joined = False
                raise RequestAnswered(wait.ref)
            self.observer.update(refs, self.clone.unreachable_at)
            current = refs.get(LOCK_REF)
            self._note_holds(current)
            held_for = self.observer.unchanged_for(LOCK_REF, current) if current else 0.0
            takeable = current is None or held_for >= self.lease_s
            ahead = wait.ahead_of_us(refs, takeable)
            if not ahead and takeable:
                if current is not None:
                    log.warning("%s breaks the lock: unchanged for %.0fs (lease %.0fs)",
                                self.holder, held_for, self.lease_s)
                if self.clone.push([RefUpdate(LOCK_REF, marker, expect=current or ""),
                                    *wait.take_updates()], read_back=False):
                    self.leftovers = wait.dead_waiters()
                    self._took(marker)
                    return
                continue  # someone else was quicker: look again at once
            self.waits += 1
            if seen_first == "?":
                seen_first = current
            if wait.answerable and ahead and current is not None and current != seen_first:
                pause = self._until_served(held_for)  # a hold begun since we joined
            else:
                pause, delay = self._pause(0 if takeable else len(ahead), held_for, delay)
            slept = min(pause, self.lease_s / 4)  # (watching the lease closely enough)
            time.sleep(slept)

    def _pause(self, position: int, held_for: float, delay: float) -> tuple[float, float]:
        """The pause before the next poll, and the next back-off ``delay``, for a waiter with
        ``position`` waiters before it while the lock has been held for ``held_for`` seconds.

        The first two in line poll fast, to take over as soon as the lock is free (the first
        at most eight times per hold seen); the others sleep through half the time until they
        are second in line, judged from the holds seen; all but the first share the fleet's poll
        budget (:attr:`poll_budget`): a holder may serve their requests meanwhile.
        """
        cap = min(POLL_BY_POSITION_S[position] if position < len(POLL_BY_POSITION_S)
                  else self.poll_max_s, self.poll_max_s)
        if position == 0:
            cap = max(cap, min(self._typical_hold_s / 8, 0.5))
        delay = min(delay, cap)
        pause = delay * random.uniform(0.5, 1.0)
        if position >= len(POLL_BY_POSITION_S) and self._typical_hold_s:
            due = self._typical_hold_s * (position - 1) - held_for
            pause = max(pause, min(0.5 * due, self.poll_max_s))
        if position >= 1:
            pause = max(pause, self._line_share() * random.uniform(0.75, 1.25))
        return pause, min(delay * 2, cap)

    def _until_served(self, held_for: float) -> float:
        """The pause of a waiter behind the first whose request the current hold has likely
        seen (the lock's value changed since we joined the line): look again when the hold
        should be over (judged from the holds seen), within the line's share of the poll
        budget."""
        hold = self._typical_hold_s or 1.0
        due = hold - held_for if hold > held_for else hold / 4
        return max(self.poll_min_s, min(due, self._line_share()) * random.uniform(0.8, 1.2))

    def _line_share(self) -> float:
        """Seconds between two looks of one waiter when the line shares :attr:`poll_budget`."""
        return len(self.observer.present(WAIT_PREFIX)) / self.poll_budget

    def _note_holds(self, current: Optional[str]) -> None:
        """Learn how long holds last, from the lock values seen while waiting."""
        now = time.monotonic()
        if current == self._seen[0]:
            return
        if self._seen[0] is not None:
            self._learn_hold(now - self._seen[1])
        self._seen = (current, now)

    def _learn_hold(self, hold: float) -> None:
        self._typical_hold_s = hold if not self._typical_hold_s else \
            0.7 * self._typical_hold_s + 0.3 * hold

    def _took(self, marker: str) -> None:
        self._took_at = time.monotonic()
        with self._mutex:
            self.value = marker
            self._values = {marker}
        log.debug("%s took the lock", self.holder)

    def seen(self, refs: dict[str, str]) -> bool:
        """Whether our lock is on the remote in ``refs`` (its coordination refs, as the fetch
        that follows taking the lock brought them). A take is pushed without a read-back of its
        own (:meth:`~distribute.repo.transport.Transport.push_result`): a host may answer ok
        for a take it never applied, and this read is what shows it landed. If it did not, the
        lock is not ours: forgotten, to be waited for again (``False``)."""
        with self._mutex:
            value, ours = self.value, self._values
        if value is not None and refs.get(LOCK_REF) in ours:  # (renewed since the fetch: ours)
            return True
        log.warning("%s: the host answered ok for taking the lock, but the lock is not there "
                    "(%s); waiting for it again", self.holder, (refs.get(LOCK_REF) or "free")[:12])
        self.stop_renewing()
        self.clone.pacer().not_holding(value)
        with self._mutex:
            self.value = None
        return False

    def renew(self) -> bool:
        """Move the lock to a fresh value (resets everyone's lease clock); ``False`` if it was
        lost."""
        with self._mutex:
            old = self.value
        if old is None:
            return False
        marker = self._marker()
        if self.clone.push([RefUpdate(LOCK_REF, marker, expect=old)]):
            with self._mutex:
                if self.value == old:
                    self.value = marker
                    self._values.add(marker)
            return True
        log.error("%s lost the lock while holding it (it was broken by another worker)",
                  self.holder)
        with self._mutex:
            self.value = None
        return False

    def start_renewing(self) -> None:
        """Renew the lease in the background (every third of it) until :meth:`stop_renewing`
        (nothing to do if it is renewing already)."""
        if self._renewer is not None:
            return
        stop = threading.Event()
        self._stop_renew = stop

        def loop() -> None:
            while not stop.wait(self.lease_s / 3):
                limit, what = self._renew_limit
                if limit is not None and time.monotonic() >= limit:
                    log.error("%s: %s is still running after its time limit; the lock is no "
                              "longer renewed, so another worker will break it and this claim "
                              "will be discarded", self.holder, what)
                    return
                try:
                    if not self.renew():
                        return
                except Exception as exc:  # keep trying: the final push is fenced anyway
                    log.warning("lock renewal failed: %s", exc)

        self._renewer = threading.Thread(target=loop, name="distribute-lock-renew", daemon=True)
        self._renewer.start()

    def limit_renewal(self, seconds: Optional[float], what: str = "") -> None:
        """Stop renewing ``seconds`` from now (``None``: no limit) — a hung step (``what``) must
        not hold the lock forever; when it ends, its push is fenced off."""
        self._renew_limit = (None if seconds is None else time.monotonic() + seconds, what)

    def stop_renewing(self) -> None:
        """Stop the background renewal and wait for an in-flight renewal to finish."""
        if self._stop_renew is not None and self._renewer is not None:
            self._stop_renew.set()
            self._renewer.join()
        self._stop_renew = self._renewer = None

    def release_update(self) -> RefUpdate:
        """The ref update that releases the lock; raises if we no longer hold it."""
        with self._mutex:
            value = self.value
        if value is None:
            raise LockLostError("the lock was broken while we held it; nothing was written")
        return RefUpdate(LOCK_REF, None, expect=value)

    def forget(self) -> None:
        """Mark the lock as no longer ours (after a push that released it, or after losing it)."""
        with self._mutex:
            if self.value is not None:  # our own hold teaches how long holds last, too
                self._learn_hold(time.monotonic() - self._took_at)
            self.value = None
        self.leftovers = []

    def release(self) -> None:
        """Release the lock without writing anything else."""
        if self.value is not None and not self.clone.push([self.release_update()]):
            log.warning("%s could not release the lock: it had been broken", self.holder)
        if self.leftovers:
            try:
                self.clone.push(self.leftovers)
            except Exception as exc:  # noqa: BLE001 - others clean a dead wait ref up
                log.debug("could not withdraw from the line: %s", exc)
        self.forget()
