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

    def _marker(self) -> str:
        return self.clone.make_marker(f"lock {self.holder} {utc_now()} {uuid.uuid4().hex[:12]}")

    def acquire(self) -> None:
        """Block until we hold the lock, breaking it once its value has been stale for the lease."""
        marker = self._marker()
        expect = ""  # optimistic first try: the lock is usually free
        delay = self.poll_min_s
        while True:
            if self.clone.push([RefUpdate(LOCK_REF, marker, expect=expect)]):
                with self._mutex:
                    self.value = marker
                log.debug("%s took the lock", self.holder)
                return
            last_look = time.monotonic()
            while True:
                try:
                    refs = self.clone.ls_remote(COORD_PREFIX + "*")
                except RemoteError as exc:
                    log.warning("%s cannot see the lock (%s); still waiting", self.holder, exc)
                    time.sleep(self.poll_max_s)
                    continue
                if time.monotonic() - last_look > self.lease_s / 3:
                    self.observer.forget(LOCK_REF)  # we were not watching: the lease starts again
                last_look = time.monotonic()
                self.observer.update(refs)
                current = refs.get(LOCK_REF)
                if current is None:
                    expect = ""
                    break
                held_for = self.observer.unchanged_for(LOCK_REF, current)
                if held_for >= self.lease_s:
                    log.warning("%s breaks the lock: unchanged for %.0fs (lease %.0fs)",
                                self.holder, held_for, self.lease_s)
                    expect = current
                    break
                self.waits += 1
                time.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.poll_max_s)

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


def describe_coordination(clone: Clone) -> dict[str, Any]:
    """``{"lock": None or {"holder", "held_s"}, "heartbeats": {worker: age_s}}`` from the fetched
    tracking refs. Ages compare the values' commit times with this machine's clock: good for
    display, never used for decisions."""
    now = time.time()
    stamps = {}
    for ref, sha in clone.local_refs(TRACKING_PREFIX).items():
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
