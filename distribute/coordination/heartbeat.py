"""A worker's heartbeat: ``refs/distribute/hb/<worker>``, moved while it has a job."""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

from ..protocol import heartbeat_ref, marker_message
from ..repo import Clone, RefUpdate

log = logging.getLogger(__name__)


class Heartbeat:
    """Keeps ``refs/distribute/hb/<worker>@<session>`` moving: every push the worker makes
    anyway carries a beat (:meth:`update`), and a background thread pushes one alone only when
    none did for ``interval_s`` seconds. A beat that cannot reach the remote is not retried (the
    next beat is due soon anyway), so that beats resume as soon as the remote is back."""

    def __init__(self, clone: Clone, worker: str, interval_s: float, session: str = "") -> None:
        self.clone = clone
        self.worker = worker
        self.session = session
        self.ref = heartbeat_ref(worker, session)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._beater: Optional[Clone] = None

    def update(self, marker: Optional[str] = None) -> RefUpdate:
        """A ref update that moves the heartbeat now (to put in any push the worker makes).

        ``marker`` may be any fresh commit already on its way to the remote (e.g. the lock value).
        """
        marker = marker or self.clone.make_marker(
            marker_message("heartbeat", self.worker))
        return RefUpdate(self.ref, marker, expect=None)

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
        """Beat alone only when no push of this worker moved the heartbeat (a claim's or a
        checkpoint's, with :meth:`update`) within the interval: the timer restarts with every
        push that carried a beat. A lone beat waits at most one interval for its turn in the
        fleet's push budget (:mod:`distribute.repo.pacer`): a job lease is five intervals."""
        if self._beater is None:  # (one for every start: one loop runs at a time)
            self._beater = Clone(self.clone.path, self.worker, retries=0)
        beater = self._beater
        beater.namespace = self.clone.namespace  # (where the remote keeps the heartbeat)
        last = time.monotonic()  # (start() follows the push that moved the heartbeat)
        while True:
            last = max(last, self.clone.pushed_at(self.ref) or last)
            if self._stop.wait(max(0.0, last + self.interval_s - time.monotonic())):
                return
            if (self.clone.pushed_at(self.ref) or last) > last:
                continue  # a beat rode on another push meanwhile
            try:
                beater.push([self.update()], within_s=self.interval_s)
            except Exception as exc:  # a missed beat is not fatal; the next one may get through
                log.warning("heartbeat of %s failed: %s", self.worker, exc)
            last = time.monotonic()
