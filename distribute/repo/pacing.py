"""The glue between git processes and the :mod:`.pacer`: which worker's share an operation on
the remote comes out of, and the reads git makes on its own.

:class:`PacedProcess` is the base of :class:`~.transport.Transport`: it finds the worker's
:class:`~.pacer.Pacer` (one per remote and worker name in a process), runs an operation on the
remote when it fits the share (:meth:`PacedProcess._paced`), feeds the fleet estimate from the
coordination refs a fetch brought, and counts the fetches git makes by itself inside a local
command of a partial copy (a file it lacks, read by ``checkout``, ``cat-file``…), which cannot
be delayed, as reads the next paced ones pay for.
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

from ..protocol import TRACKING_PREFIX
from .catfile import CatFile, Header
from .pacer import READ, Budget, Pacer, pacer_for, promisor_packs
from .process import GitProcess

log = logging.getLogger(__name__)


class PacedProcess(GitProcess):
    """A :class:`GitProcess` whose operations on the remote come out of a worker's share."""

    def __init__(self, path: object, name: str = "distribute") -> None:
        self._pacer: Optional[Pacer] = None
        self._partial: Optional[bool] = None
        self._fetching = threading.local()  # (this thread runs a fetch: its packs are not lazy)
        super().__init__(path, name)  # type: ignore[arg-type]

    def pacer(self, url: Optional[str] = None) -> Pacer:
        """This worker's :class:`~.pacer.Pacer` on the remote (``url``: that remote's, for a
        clone not made yet): its share of the fleet's budget, the lock it holds, when each ref
        was pushed."""
        if url is not None:
            return pacer_for(url, self.name)
        if self._pacer is None:
            url = self.origin_url or self.remote_url() or str(self.path)
            self._pacer = pacer_for(url, self.name)
        return self._pacer

    def exempt_from_budget(self, why: str) -> None:
        """Run this copy's operations on its ``origin`` outside the fleet's budget (``why``: a
        one-off probe of a few pushes, whose round-trip times must not include waits)."""
        self._pacer = Pacer(Budget(source=why), self.name)

    @contextmanager
    def _paced(self, kind: str, pacer: Pacer, urgent: bool = False,
               within_s: Optional[float] = None, reserve: int = 0) -> Iterator[None]:
        """Run one operation of ``kind`` on the remote when it fits the worker's share
        (reads while it holds the lock are urgent: they are part of the hold)."""
        urgent = urgent or (kind == READ and pacer.holding is not None)
        waited = pacer.waited_s[kind]
        ticket = pacer.begin(kind, urgent=urgent, within_s=within_s, reserve=reserve)
        if pacer.waited_s[kind] - waited >= 1.0:
            log.debug("a %s waited %.1fs for this worker's share of the budget (fleet %s)",
                      kind, pacer.waited_s[kind] - waited, pacer.fleet())
        try:
            yield
        finally:
            pacer.end(ticket)

    def _run(self, args: list[str], index: Optional[str] = None,
             stdin: Optional[str] = None) -> tuple[int, str, str]:
        with self._lazy_reads():
            return super()._run(args, index, stdin)

    def run_bytes(self, *args: str, stdin: bytes = b"") -> tuple[int, bytes, str]:
        """See :meth:`GitProcess.run_bytes`; git's own fetches count as reads, as in ``_run``."""
        with self._lazy_reads():
            return super().run_bytes(*args, stdin=stdin)

    def _ask(self, reader: CatFile, name: str) -> Optional[tuple[Optional[Header], bytes]]:
        with self._lazy_reads():
            return super()._ask(reader, name)

    @contextmanager
    def _lazy_reads(self) -> Iterator[None]:
        """Count the fetches git makes on its own during a local command in a partial copy (a
        missing file read) as reads of the worker's share: they cannot be delayed, only paid
        for by the next paced reads."""
        if getattr(self._fetching, "now", False) or not self._budgets_reads():
            yield
            return
        before = promisor_packs(self.path)
        try:
            yield
        finally:
            fetched = promisor_packs(self.path) - before
            if fetched > 0:
                self.pacer().note(READ, fetched)

    def _budgets_reads(self) -> bool:
        """Whether this is a partial copy and reads are budgeted (then git's own fetches are
        counted)."""
        if self._partial is None:
            if not hasattr(self, "origin_url"):
                return False  # (GitProcess.__init__ reading the URL)
            try:
                config = (self.path / ".git" / "config").read_text()
            except OSError:
                return False
            self._partial = "promisor = true" in config
        return self._partial and self.pacer().budget.limit(READ)[0] > 0

    def pushed_at(self, ref: str) -> Optional[float]:
        """When (``time.monotonic()``) a push of this worker (any of its copies of the remote)
        last moved ``ref``; ``None`` if none did."""
        return self.pacer().pushed_at(ref)

    def _see_fleet(self) -> None:
        """Feed the fleet estimate from the coordination refs a fetch brought (only when a
        budget is set: it costs one local git process)."""
        if self.pacer().budget.limited:
            self.pacer().see(self.run("for-each-ref", "--format=%(refname)",
                                      TRACKING_PREFIX)[1].split())
