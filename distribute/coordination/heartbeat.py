"""A worker's heartbeat: ``refs/distribute/hb/<worker>``, moved while it has a job."""
from __future__ import annotations

import logging
import threading
from typing import Optional

from ..protocol import heartbeat_ref, marker_message
from ..repo import Clone, RefUpdate

log = logging.getLogger(__name__)


class Heartbeat:
    """Pushes ``refs/distribute/hb/<worker>@<session>`` every ``interval_s`` seconds in a
    background thread. A beat that cannot reach the remote is not retried (the next beat is due
    soon anyway), so that beats resume as soon as the remote is back."""

    def __init__(self, clone: Clone, worker: str, interval_s: float, session: str = "") -> None:
        self.clone = clone
        self.worker = worker
        self.session = session
        self.ref = heartbeat_ref(worker, session)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

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
        beater = Clone(self.clone.path, self.worker, retries=0)
        while not self._stop.wait(self.interval_s):
            try:
                beater.push([self.update()])
            except Exception as exc:  # a missed beat is not fatal; the next one may get through
                log.warning("heartbeat of %s failed: %s", self.worker, exc)
