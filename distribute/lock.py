"""The push-based lock and the workers' heartbeats, both plain refs on the remote.

* ``refs/distribute/lock`` exists while someone holds the lock. Its value is a parentless commit
  with an empty tree whose message names the holder. It is taken by a push that expects the ref to
  be absent, renewed by a push that expects our own value, and released by deleting it in the same
  ``--atomic`` push that updates ``master`` (so a holder whose lock was broken cannot write: fencing).
* ``refs/distribute/hb/<worker>`` is moved by a worker while it has a job, to show it is alive.

Expiry never compares clocks of different machines: an :class:`Observer` remembers, on the local
monotonic clock, since when it has seen each ref hold the same value.
"""
from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from typing import Any, Optional

from .exceptions import LockLostError, RemoteError
from .ledger import utc_now
from .remote import Clone, RefUpdate

log = logging.getLogger(__name__)

COORD_PREFIX = "refs/distribute/"
LOCK_REF = "refs/distribute/lock"
HEARTBEAT_PREFIX = "refs/distribute/hb/"
WAIT_PREFIX = "refs/distribute/wait/"
#: Longest pause between two polls for the waiter first in line and the one after it (the others
#: wait up to ``poll_max_s``): few polls, so that they do not slow the holder down, yet a quick
#: hand-over.
POLL_BY_POSITION_S = (0.05, 0.2)
#: Seconds a waiter first in line may leave the free lock untaken before the others skip it
#: (at least: see :meth:`WaitQueue._patience`).
STALE_WAITER_S = 2.0
TRACKING_PREFIX = "refs/remotes/origin/distribute/"


def heartbeat_ref(worker: str) -> str:
    """The remote ref a worker's heartbeat lives on."""
    return HEARTBEAT_PREFIX + worker


class Observer:
    """Remembers since when (local monotonic time) each coordination ref has held its value."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[Optional[str], float]] = {}
        self._mutex = threading.Lock()

    def update(self, refs: dict[str, str]) -> None:
        """Record a full snapshot of ``refs/distribute/*`` (refs missing from it are absent)."""
        with self._mutex:
            for ref in set(self._seen) | set(refs):
                self._note(ref, refs.get(ref))

    def forget(self, ref: str) -> None:
        """Start watching ``ref`` afresh (after a period in which we could not see the remote)."""
        with self._mutex:
            self._seen.pop(ref, None)

    def unchanged_for(self, ref: str, value: Optional[str]) -> float:
        """Seconds we have seen ``ref`` hold ``value`` (``None`` = absent); 0 for a new value."""
        with self._mutex:
            return time.monotonic() - self._note(ref, value)

    def present(self, prefix: str) -> dict[str, tuple[str, float]]:
        """``{ref: (value, since)}`` for the refs under ``prefix`` that exist in the last snapshot."""
        with self._mutex:
            return {ref: (value, since) for ref, (value, since) in self._seen.items()
                    if ref.startswith(prefix) and value is not None}

    def _note(self, ref: str, value: Optional[str]) -> float:
        seen = self._seen.get(ref)
        if seen is None or seen[0] != value:
            seen = (value, time.monotonic())
            self._seen[ref] = seen
        return seen[1]


class RemoteLock:
    """The single remote lock. ``acquire()`` waits; ``release_update()`` is put in the final push."""

    def __init__(self, clone: Clone, holder: str, lease_s: float, observer: Observer,
                 poll_min_s: float = 0.02, poll_max_s: float = 1.0) -> None:
        self.clone = clone
        self.holder = holder
        self.lease_s = lease_s
        self.observer = observer
        self.poll_min_s = poll_min_s
        self.poll_max_s = poll_max_s
        self.value: Optional[str] = None
        self.waits = 0  # number of polls spent waiting, for benchmarks
        self._mutex = threading.Lock()
        self._stop_renew: Optional[threading.Event] = None
        self._renewer: Optional[threading.Thread] = None
        self._seen: tuple[Optional[str], float] = (None, 0.0)  # lock value, first seen (waiting)
        #: wait refs (and their values) skipped as dead: idle at the head of the line
        self.dead_waiters: dict[str, str] = {}
        self._typical_hold_s = 0.0

    def _marker(self) -> str:
        return self.clone.make_marker(f"lock {self.holder} {utc_now()} {uuid.uuid4().hex[:12]}")

    def acquire(self) -> None:
        """Block until we hold the lock, breaking it once its value has been stale for the lease.

        Waiting is first come, first served: a waiter announces itself with a wait ref and takes
        the lock only when it is the oldest waiter it knows of (see :class:`WaitQueue`).
        """
        marker = self._marker()
        wait = WaitQueue(self, marker)
        if not wait.others_known() and self.clone.push([RefUpdate(LOCK_REF, marker, expect="")]):
            self._took(marker)  # the usual case without contention: one round trip
            return
        try:
            self._wait_and_take(marker, wait)
        except BaseException:
            wait.leave()
            raise

    def _wait_and_take(self, marker: str, wait: "WaitQueue") -> None:
        delay = self.poll_min_s
        self._seen = (None, 0.0)
        last_look = time.monotonic()
        while True:
            wait.join()
            try:
                started = time.monotonic()
                refs = self.clone.ls_remote(COORD_PREFIX + "*")
                wait.poll_s = time.monotonic() - started
            except RemoteError as exc:
                log.warning("%s cannot see the lock (%s); still waiting", self.holder, exc)
                time.sleep(self.poll_max_s)
                continue
            if time.monotonic() - last_look > self.lease_s / 3:
                self.observer.forget(LOCK_REF)  # we were not watching: the lease starts again
            last_look = time.monotonic()
            self.observer.update(refs)
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
                                    *wait.take_updates()]):
                    self._took(marker)
                    return
                continue  # someone else was quicker: look again at once
            self.waits += 1
            pause, delay = self._pause(0 if takeable else len(ahead), held_for, delay)
            time.sleep(pause)

    def _pause(self, position: int, held_for: float, delay: float) -> tuple[float, float]:
        """The pause before the next poll, and the next back-off ``delay``, for a waiter with
        ``position`` waiters before it while the lock has been held for ``held_for`` seconds.

        The first two in line poll fast, to take over as soon as the lock is free; the others
        sleep through half the time until they are second in line, judged from the holds seen,
        so that their polls do not slow the holder down on a busy server.
        """
        cap = min(POLL_BY_POSITION_S[position] if position < len(POLL_BY_POSITION_S)
                  else self.poll_max_s, self.poll_max_s)
        delay = min(delay, cap)
        pause = delay * random.uniform(0.5, 1.0)
        if position >= len(POLL_BY_POSITION_S) and self._typical_hold_s:
            due = self._typical_hold_s * (position - 1) - held_for
            pause = max(pause, min(0.5 * due, self.poll_max_s))
        return pause, min(delay * 2, cap)

    def _note_holds(self, current: Optional[str]) -> None:
        """Learn how long holds last, from the lock values seen while waiting."""
        now = time.monotonic()
        if current == self._seen[0]:
            return
        if self._seen[0] is not None:
            hold = now - self._seen[1]
            self._typical_hold_s = hold if not self._typical_hold_s else \
                0.7 * self._typical_hold_s + 0.3 * hold
        self._seen = (current, now)

    def _took(self, marker: str) -> None:
        with self._mutex:
            self.value = marker
        log.debug("%s took the lock", self.holder)

    def renew(self) -> bool:
        """Move the lock to a fresh value (resets everyone's lease clock); ``False`` if it was lost."""
        with self._mutex:
            old = self.value
        if old is None:
            return False
        marker = self._marker()
        if self.clone.push([RefUpdate(LOCK_REF, marker, expect=old)]):
            with self._mutex:
                if self.value == old:
                    self.value = marker
            return True
        log.error("%s lost the lock while holding it (it was broken by another worker)", self.holder)
        with self._mutex:
            self.value = None
        return False

    def start_renewing(self) -> None:
        """Renew the lease in the background (every third of it) until :meth:`stop_renewing`."""
        stop = threading.Event()
        self._stop_renew = stop

        def loop() -> None:
            while not stop.wait(self.lease_s / 3):
                try:
                    if not self.renew():
                        return
                except Exception as exc:  # keep trying: the final push is fenced anyway
                    log.warning("lock renewal failed: %s", exc)

        self._renewer = threading.Thread(target=loop, name="distribute-lock-renew", daemon=True)
        self._renewer.start()

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
            self.value = None

    def release(self) -> None:
        """Release the lock without writing anything else."""
        if self.value is not None and not self.clone.push([self.release_update()]):
            log.warning("%s could not release the lock: it had been broken", self.holder)
        self.forget()


class WaitQueue:
    """One worker's place in the queue of lock waiters: ``refs/distribute/wait/<worker>``.

    Every waiter orders the wait refs by when it first saw each one (ties by name), so all agree
    but for waiters that arrived at the same moment; a disagreement only means two waiters race
    for the free lock, and the compare-and-swap push picks one. A waiter that is first in line
    but leaves the lock free (or stale) for ``STALE_WAITER_S`` (longer when polls are slow or
    ``poll_max_s`` is long) is taken for dead and skipped; once
    its wait ref has kept its value for the lock lease, the next taker deletes it (a live waiter
    that was only slow keeps its place).
    """

    def __init__(self, lock: RemoteLock, marker: str) -> None:
        self.lock = lock
        self.ref = WAIT_PREFIX + lock.holder
        self.marker = marker
        self.joined = False
        self._first: Optional[tuple[str, str]] = None  # first in line while takeable: (ref, value)
        self._first_since = 0.0
        self.poll_s = 0.0  # how long our last look at the remote took

    def others_known(self) -> bool:
        """Whether our last look at the remote showed other workers waiting."""
        return any(ref != self.ref for ref in self.lock.observer.present(WAIT_PREFIX))

    def join(self) -> None:
        """Announce that we wait (once; again if our wait ref was deleted as stale)."""
        if not self.joined:
            self.lock.clone.push([RefUpdate(self.ref, self.marker, expect=None)])
            self.joined = True

    def leave(self) -> None:
        """Withdraw from the queue (best effort: a dead waiter's ref is cleaned up by others)."""
        if self.joined:
            try:
                self.lock.clone.push([RefUpdate(self.ref, None, expect=self.marker)])
            except Exception as exc:  # noqa: BLE001 - only an optimisation for the others
                log.debug("could not withdraw %s: %s", self.ref, exc)

    def ahead_of_us(self, refs: dict[str, str], takeable: bool) -> list[str]:
        """The live waiters in line before us, first first, judged on ``refs`` (the snapshot the
        observer was just updated with); empty when it is our turn. ``takeable``: the lock is
        free or stale, so the first in line should be taking it."""
        if self.joined and refs.get(self.ref) != self.marker:
            self.joined = False  # deleted as stale while we were slow: queue again
        dead = self.lock.dead_waiters
        for ref in [ref for ref, value in dead.items() if refs.get(ref) != value]:
            del dead[ref]  # gone, or alive again with a new value
        present = self.lock.observer.present(WAIT_PREFIX)
        now = time.monotonic()
        ours = (present[self.ref][1] if self.joined and self.ref in present else now, self.ref)
        line = [ref for since, ref in sorted((since, ref) for ref, (_, since) in present.items())
                if ref not in dead and (since, ref) < ours]
        if not line or not takeable:
            self._first = None
            return line
        first = (line[0], refs[line[0]])
        if first != self._first:
            self._first, self._first_since = first, now
        elif now - self._first_since >= self._patience():
            log.warning("%s skips %s: first in line but idle for %.1fs", self.lock.holder,
                        first[0][len(WAIT_PREFIX):], now - self._first_since)
            dead[first[0]] = first[1]
            return self.ahead_of_us(refs, takeable)
        return line

    def _patience(self) -> float:
        """How long the first in line may leave the lock untaken: ``STALE_WAITER_S``, more when
        polls are slow (a busy machine) or waiters sleep long (``poll_max_s``)."""
        return max(STALE_WAITER_S, 2 * self.lock.poll_max_s + 4 * self.poll_s)

    def take_updates(self) -> list[RefUpdate]:
        """Ref updates for the push that takes the lock: leave the queue, delete dead waiters."""
        updates = [RefUpdate(ref, None, expect=value)
                   for ref, value in self.lock.dead_waiters.items()
                   if self.lock.observer.unchanged_for(ref, value) >= self.lock.lease_s]
        if self.joined:
            updates.append(RefUpdate(self.ref, None, expect=self.marker))
        return updates


def describe_coordination(clone: Clone) -> dict[str, Any]:
    """``{"lock": None or {"holder", "held_s"}, "heartbeats": {worker: age_s}}`` from the fetched
    tracking refs. Ages compare the values' commit times with this machine's clock: good for
    display, never used for decisions."""
    now = time.time()
    stamps = {}
    for ref, sha in clone.local_refs(TRACKING_PREFIX).items():
        if ref.startswith(TRACKING_PREFIX + "wait/"):
            continue
        subject, _, when = clone.git("log", "-1", "--format=%s%x00%ct", sha).partition("\0")
        stamps[ref[len(TRACKING_PREFIX):]] = (subject.split(" "), max(0.0, now - float(when)))
    lock = stamps.pop("lock", None)
    return {
        "lock": None if lock is None else {"holder": lock[0][1] if len(lock[0]) > 1 else "?",
                                           "held_s": round(lock[1], 1)},
        "heartbeats": {ref[len("hb/"):]: round(age, 1) for ref, (_, age) in stamps.items()
                       if ref.startswith("hb/")},
    }


def break_lock(clone: Clone) -> Optional[str]:
    """Delete the lock whatever its value; return the holder's description, or ``None`` if free."""
    clone.fetch()
    value = clone.resolve(TRACKING_PREFIX + "lock")
    if value is None:
        return None
    message = clone.git("log", "-1", "--format=%s", value).strip()
    if not clone.push([RefUpdate(LOCK_REF, None, expect=value)]):
        raise LockLostError("the lock changed while breaking it; run the command again")
    return message.removeprefix("lock ")


class Heartbeat:
    """Pushes ``refs/distribute/hb/<worker>`` every ``interval_s`` seconds in a background thread."""

    def __init__(self, clone: Clone, worker: str, interval_s: float) -> None:
        self.clone = clone
        self.worker = worker
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def update(self, marker: Optional[str] = None) -> RefUpdate:
        """A ref update that moves the heartbeat now (to put in any push the worker makes).

        ``marker`` may be any fresh commit already on its way to the remote (e.g. the lock value).
        """
        marker = marker or self.clone.make_marker(
            f"heartbeat {self.worker} {utc_now()} {uuid.uuid4().hex[:8]}")
        return RefUpdate(heartbeat_ref(self.worker), marker, expect=None)

    def start(self) -> None:
        """Start beating (idempotent)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="distribute-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and wait for an in-flight push."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.clone.push([self.update()])
            except Exception as exc:  # a missed beat is not fatal; the next one may get through
                log.warning("heartbeat of %s failed: %s", self.worker, exc)
