"""Lease clocks that never compare two machines' clocks.

An :class:`Observer` remembers, on the local monotonic clock, since when it has seen each
coordination ref hold the same value. A lease (of the lock, of a heartbeat, of a waiter) has run out
when the observer has seen the same value for the lease's length.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Optional

from ..protocol import HEARTBEAT_PREFIX, LOCK_REF

log = logging.getLogger(__name__)
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
#: Refs whose clocks start again after a period in which the remote could not be seen: the lock
#: and the heartbeats (their owners could not push either). Wait refs keep their order.
LEASED = (LOCK_REF, HEARTBEAT_PREFIX)


class Observer:
    """Remembers since when (local monotonic time) each coordination ref has held its value."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[Optional[str], float]] = {}
        self._mutex = threading.Lock()
        self._last_update = 0.0

    def update(self, refs: dict[str, str], unreachable_at: float = 0.0) -> None:
        """Record a full snapshot of ``refs/distribute/*`` (refs missing from it are absent).

        ``unreachable_at`` is when (monotonic) this machine last failed to reach the remote: if
        that happened since the last snapshot, nobody may have been able to push either, so the
        lease clocks of the lock and of every heartbeat start again.
        """
        with self._mutex:
            now = time.monotonic()
            if unreachable_at > self._last_update:
                for ref, (value, _) in list(self._seen.items()):
                    if ref.startswith(LEASED):
                        self._seen[ref] = (value, now)
            self._last_update = now
            for ref in set(self._seen) | set(refs):
                self._note(ref, refs.get(ref))

    def save(self, path: Path) -> None:
        """Keep the clocks in ``path`` for a later process on this machine (same boot only:
        monotonic time is shared by every process of one boot)."""
        if not _BOOT_ID.exists():
            return
        with self._mutex:
            data = {"boot": _BOOT_ID.read_text().strip(), "seen": self._seen}
        path.write_text(json.dumps(data), encoding="utf-8")

    def load(self, path: Path) -> None:
        """Take over the clocks an earlier process saved with :meth:`save` (if from this boot)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("boot") != _BOOT_ID.read_text().strip():
                return
            seen = {ref: (value, float(since)) for ref, (value, since) in data["seen"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.debug("no usable observations in %s (%s)", path, exc)
            return
        with self._mutex:
            for ref, (value, since) in seen.items():
                if ref not in self._seen or self._seen[ref][0] == value:
                    self._seen[ref] = (value, min(since, self._seen.get(ref, (value, since))[1]))

    def forget(self, ref: str) -> None:
        """Start watching ``ref`` afresh (after a period in which we could not see the remote)."""
        with self._mutex:
            self._seen.pop(ref, None)

    def unchanged_for(self, ref: str, value: Optional[str]) -> float:
        """Seconds we have seen ``ref`` hold ``value`` (``None`` = absent); 0 for a new value."""
        with self._mutex:
            return time.monotonic() - self._note(ref, value)

    def present(self, prefix: str) -> dict[str, tuple[str, float]]:
        """``{ref: (value, since)}`` for the refs under ``prefix`` that exist in the last
        snapshot."""
        with self._mutex:
            return {ref: (value, since) for ref, (value, since) in self._seen.items()
                    if ref.startswith(prefix) and value is not None}

    def _note(self, ref: str, value: Optional[str]) -> float:
        seen = self._seen.get(ref)
        if seen is None or seen[0] != value:
            seen = (value, time.monotonic())
            self._seen[ref] = seen
        return seen[1]
