"""The queue of lock waiters: ``refs/distribute/wait/<worker>``, first come, first served."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable, Optional, Union

from ..protocol import WAIT_PREFIX, wait_ref
from ..repo import RefUpdate

if TYPE_CHECKING:  # pragma: no cover
    from .lock import RemoteLock

log = logging.getLogger(__name__)

#: Longest pause between two polls for the waiter first in line and the one after it (the others
#: wait up to ``poll_max_s``): few polls, so that they do not slow the holder down, yet a quick
#: hand-over.
POLL_BY_POSITION_S = (0.05, 0.2)
#: Seconds a waiter first in line may leave the free lock untaken before the others skip it
#: (at least: see :meth:`WaitQueue._patience`).
STALE_WAITER_S = 2.0


class WaitQueue:
    """One worker's place in the queue of lock waiters: ``refs/distribute/wait/<worker>``.

    Every waiter orders the wait refs by when it first saw each one (ties by name), so all agree
    but for waiters that arrived at the same moment; a disagreement only means two waiters race
    for the free lock, and the compare-and-swap push picks one. A waiter that is first in line
    but leaves the lock free (or stale) for ``STALE_WAITER_S`` (longer when polls are slow or
    ``poll_max_s`` is long) is taken for dead and skipped; once its wait ref has kept its value
    for the lock lease, the next taker deletes it when it releases the lock (after serving its
    request, if it carries one). A live waiter that was only slow joins again when it sees its
    wait ref gone (one with a request first reads the answer on master).
    """

    def __init__(self, lock: RemoteLock, marker: Union[str, Callable[[], str]],
                 answerable: bool = False) -> None:
        self.lock = lock
        self.ref = wait_ref(lock.holder)
        self._marker = marker
        #: The marker carries a request a holder may serve (then deletes our wait ref).
        self.answerable = answerable
        self.joined = False
        self._first: Optional[tuple[str, str]] = None  # first in line while takeable: (ref, value)
        self._first_since = 0.0
        self.poll_s = 0.0  # how long our last look at the remote took

    @property
    def marker(self) -> str:
        """Our wait ref's value (made when first needed: most takes never join the line)."""
        if callable(self._marker):
            self._marker = self._marker()
        return self._marker

    def others_known(self) -> bool:
        """Whether our last look at the remote showed other workers waiting."""
        return any(ref != self.ref for ref in self.lock.observer.present(WAIT_PREFIX))

    def join(self) -> None:
        """Announce that we wait (once; again if our wait ref was deleted as stale). The push
        is not read back (:meth:`~distribute.repo.transport.Transport.push_result`): the look
        that follows at once reads our wait ref, and one not there (a host that answered ok for
        a push it never applied) is taken as one deleted (:meth:`ahead_of_us`; a request's, as
        answered: its worker reads master for the answer and finds none)."""
        if not self.joined:
            self.lock.clone.push([RefUpdate(self.ref, self.marker, expect=None)],
                                 read_back=False)
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
        """Ref updates for the push that takes the lock: leave the queue."""
        return [RefUpdate(self.ref, None, expect=self.marker)] if self.joined else []

    def dead_waiters(self) -> list[RefUpdate]:
        """Deletions of the wait refs of dead waiters (idle first in line, unchanged for the lock
        lease), for the push that releases the lock: the hold serves their requests first."""
        return [RefUpdate(ref, None, expect=value)
                for ref, value in self.lock.dead_waiters.items()
                if self.lock.observer.unchanged_for(ref, value) >= self.lock.lease_s]
