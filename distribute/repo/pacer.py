"""Pacing: one worker's share of the fleet's budget of pushes and reads per repository.

A git host counts what one repository takes (GitHub asks for at most 6 pushes a minute and 15
reads a second). The fleet shares a budget (``DISTRIBUTE_PUSHES_PER_MIN``,
``DISTRIBUTE_READS_PER_S``) without a server: every worker counts the fleet from the coordination
refs it sees anyway and paces its own git operations to its share. The rule (written down in
``docs/protocol.md``, "Pacing"), for a budget of ``B`` operations per window ``W`` (pushes: per
minute, ``W`` = ``DISTRIBUTE_BUDGET_WINDOW_S``; reads: per second, ``W`` a sixth of that):

* the fleet ``N`` is the number of distinct worker names in the heartbeat and wait refs seen in
  the last ten push windows, itself included (idle workers have no such ref: they count as
  long); the worker takes the share of ``n = N + 1 + new`` workers, ``new`` of them first seen
  within the last window: the spare shares are for workers that join before they are seen;
* with ``s = B / n >= 1`` it makes at most ``floor(s)`` operations in any ``W`` seconds, else at
  most one in any ``W / s`` seconds; an operation counts from its start (in flight: counted) until
  ``W`` after it ended, so that the host, which sees it in between, sees the same spacing;
* reads are also spread evenly (one every ``W / floor(s)``), so that a waiter's polls do not come
  in bursts followed by silence;
* urgent operations (those of a lock hold: renewing or releasing the lock, the hold's reads) are
  never delayed, but counted; taking the lock waits until its release fits too.

One :class:`Pacer` per remote and worker name in a process (:func:`pacer_for`), shared by all the
worker's :class:`~distribute.repo.clone.Clone` objects (its heartbeat's among them), which also
records when each ref was last pushed (:meth:`Pacer.pushed_at`).
"""
from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Protocol, Sequence

from ..protocol import COORD_PREFIX, LOCK_REF
from ..redact import redact
from ..settings import number_setting, seconds_setting, setting_source

log = logging.getLogger(__name__)

PUSH, READ = "push", "read"
#: GitHub's published limits per repository (docs, "Repository limits").
GITHUB_PUSHES_PER_MIN, GITHUB_READS_PER_S = 6.0, 15.0
_GITHUB = re.compile(r"(^|[@/.])github\.com[:/]")
#: Names of workers are read from these ref kinds (under ``refs/distribute/`` or its tracking copy).
_NAMED = re.compile(r"(?:^|/)distribute/(?:hb|wait)/([^@/]+)")
#: How often a waiting operation looks again (the fleet may have shrunk, a flight may have ended).
_RECHECK_S = 0.5
#: A worker seen once counts for this many push windows after it was last seen: an idle worker
#: (no job, not in line) has no ref to be seen by, and neither has one that left.
FORGET_AFTER_WINDOWS = 10


class _Update(Protocol):
    """What the pacer reads of a ref update (:class:`~distribute.repo.transport.RefUpdate`)."""

    @property
    def ref(self) -> str: ...

    @property
    def new(self) -> Optional[str]: ...

    @property
    def expect(self) -> Optional[str]: ...


def is_github(url: str) -> bool:
    """Whether ``url`` names a repository on github.com (https, ssh or scp-like)."""
    return _GITHUB.search(url or "") is not None


@dataclass(frozen=True)
class Budget:
    """A fleet's budget per repository: pushes per minute and reads per second (0: unlimited),
    counted over windows of ``window_s`` (pushes) and a sixth of it (reads); ``source`` says
    where the numbers came from."""

    pushes_per_min: float = 0.0
    reads_per_s: float = 0.0
    window_s: float = 60.0
    source: str = "no budget set"

    def limit(self, kind: str) -> tuple[float, float]:
        """``(operations allowed per window, window in seconds)`` for ``kind`` (0: unlimited)."""
        if kind == PUSH:
            return self.pushes_per_min * self.window_s / 60.0, self.window_s
        return self.reads_per_s * self.window_s / 6.0, self.window_s / 6.0

    @property
    def limited(self) -> bool:
        """Whether any of the two is limited."""
        return self.pushes_per_min > 0 or self.reads_per_s > 0

    def describe(self) -> str:
        """One line: ``6 pushes/min and 15 reads/s per repository, fleet-wide (…source…)``."""
        def rate(value: float, unit: str) -> str:
            return f"{value:g} {unit}" if value > 0 else f"unlimited {unit}"
        window = f", counted over {self.window_s:g} s" if self.window_s != 60.0 else ""
        return (f"{rate(self.pushes_per_min, 'pushes/min')} and {rate(self.reads_per_s, 'reads/s')}"
                f" per repository for the whole fleet{window} ({self.source})")


def budget_for(url: str) -> Budget:
    """The budget for remote ``url``: the settings, else GitHub's published limits for a
    github.com remote, else unlimited."""
    github = is_github(url)
    pushes = number_setting("DISTRIBUTE_PUSHES_PER_MIN",
                            fallback=GITHUB_PUSHES_PER_MIN if github else 0.0)
    reads = number_setting("DISTRIBUTE_READS_PER_S", fallback=GITHUB_READS_PER_S if github else 0.0)
    sources = []
    for key in ("DISTRIBUTE_PUSHES_PER_MIN", "DISTRIBUTE_READS_PER_S"):
        where = setting_source(key)
        if where != "default":
            sources.append(f"{key} from {where}")
    default = "GitHub's published limits" if github else "unlimited: not a GitHub remote"
    if len(sources) < 2:
        sources.append(f"otherwise {default}" if sources else default)
    return Budget(pushes, reads, seconds_setting("DISTRIBUTE_BUDGET_WINDOW_S"), "; ".join(sources))


def share(per_window: float, window_s: float, fleet: int, newcomers: int = 0, rank: int = 0
          ) -> tuple[int, float]:
    """The rule: ``(k, span)``, at most ``k`` operations in any ``span`` seconds, for the worker
    of ``rank`` (its place among the ``fleet`` names, sorted) sharing ``per_window`` operations
    per ``window_s``, ``newcomers`` of the fleet first seen within the last window.

    ``n = fleet + 1 + newcomers`` shares (the spare ones for workers that join unseen) of
    ``B = floor(per_window)``: ``q, r = divmod(B, n)``; the first ``r`` ranks get ``q + 1``,
    the others ``q``: over the fleet at most ``B``, and a newcomer's share fits in the spare.
    With ``q = 0`` (fewer operations than shares): one per ``window_s * n / per_window``
    seconds each, which keeps the fleet's average, not every window."""
    n = max(1, fleet) + 1 + newcomers
    q, r = divmod(int(math.floor(per_window)), n)
    if q >= 1:
        return q + (1 if rank < r else 0), window_s
    return 1, window_s * n / per_window


class Pacer:
    """Paces one worker's operations on one remote to its share of :class:`Budget`.

    :meth:`begin` blocks until an operation may start and returns its ticket, :meth:`end` marks
    it ended; :meth:`see` feeds the fleet estimate from refs listed or fetched; :meth:`pushed`
    learns from each push's outcome (the lock held, when each ref was pushed). ``clock`` and
    ``sleep`` are injectable for tests (monotonic seconds).
    """

    def __init__(self, budget: Budget, me: str, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.budget = budget
        self.me = me
        self.clock = clock
        self.sleep = sleep
        #: The lock value this worker holds (from its own pushes), ``None`` if none.
        self.holding: Optional[str] = None
        #: Seconds operations waited for their turn, per kind (benchmarks, logs).
        self.waited_s = {PUSH: 0.0, READ: 0.0}
        self._mutex = threading.Lock()
        self._ops: dict[str, list[list[Optional[float]]]] = {PUSH: [], READ: []}
        self._last_start = {PUSH: -math.inf, READ: -math.inf}
        self._seen: dict[str, float] = {}
        self._first_seen: dict[str, float] = {}
        self._pushed: dict[str, float] = {}
        #: The value each coordination ref got from the last push of this worker that moved it
        #: (``None``: deleted), as :meth:`pushed_value` tells.
        self._values: dict[str, Optional[str]] = {}

    # ---- the fleet -----------------------------------------------------------------------------
    def see(self, refs: Iterable[str]) -> None:
        """Note the worker names of the heartbeat and wait refs among ``refs`` (remote or
        tracking names) as seen now."""
        now = self.clock()
        forgotten = now - FORGET_AFTER_WINDOWS * self.budget.window_s
        with self._mutex:
            for ref in refs:
                match = _NAMED.search(ref)
                if match and match.group(1) != self.me:
                    name = match.group(1)
                    if self._seen.get(name, -math.inf) < forgotten:
                        self._first_seen[name] = now  # new, or back after being forgotten
                    self._seen[name] = now

    def fleet(self) -> tuple[int, int, int]:
        """``(workers, newcomers, rank)``: the distinct workers seen in the last
        :data:`FORGET_AFTER_WINDOWS` push windows, this one included, how many of them were
        first seen within the last one, and this worker's place among their names, sorted."""
        now = self.clock()
        with self._mutex:
            horizon = now - FORGET_AFTER_WINDOWS * self.budget.window_s
            names = [name for name, at in self._seen.items() if at >= horizon]
            new = sum(1 for name in names if self._first_seen[name] >= now - self.budget.window_s)
        return len(names) + 1, new, sorted([*names, self.me]).index(self.me)

    def allowance(self, kind: str) -> Optional[tuple[int, float]]:
        """This worker's ``(k, span)`` for ``kind`` now (see :func:`share`); ``None``:
        unlimited."""
        per_window, window = self.budget.limit(kind)
        return share(per_window, window, *self.fleet()) if per_window > 0 else None

    # ---- operations ----------------------------------------------------------------------------
    def delay(self, kind: str, reserve: int = 0) -> float:
        """Seconds until a paced operation of ``kind`` (leaving room for ``reserve`` more)
        fits this worker's share; 0.0: now; ``inf``: when an operation in flight ends."""
        allowance = self.allowance(kind)
        if allowance is None:
            return 0.0
        with self._mutex:
            return max(0.0, self._wait(kind, self.clock(), allowance, reserve))

    def begin(self, kind: str, urgent: bool = False, within_s: Optional[float] = None,
              reserve: int = 0) -> list[Optional[float]]:
        """Wait until an operation of ``kind`` fits this worker's share (at once if ``urgent``,
        at most ``within_s`` seconds), leaving room for ``reserve`` more (a lock take: its
        release); return its ticket for :meth:`end`."""
        started = self.clock()
        deadline = started + within_s if within_s is not None else math.inf
        while True:
            allowance = None if urgent else self.allowance(kind)
            with self._mutex:
                now = self.clock()
                wait = 0.0 if allowance is None else self._wait(kind, now, allowance, reserve)
                if wait <= 0 or now >= deadline:
                    ticket: list[Optional[float]] = [now, None]
                    if self.budget.limit(kind)[0] > 0:
                        self._ops[kind].append(ticket)
                        if not urgent:
                            self._last_start[kind] = now
                    self.waited_s[kind] += now - started
                    return ticket
            self.sleep(max(0.001, min(wait, deadline - now, _RECHECK_S)))

    def note(self, kind: str, count: int = 1) -> None:
        """Count ``count`` operations of ``kind`` that already happened unpaced (git's own
        on-demand fetches in a partial copy): the next paced ones wait for them."""
        if self.budget.limit(kind)[0] > 0:
            now = self.clock()
            with self._mutex:
                self._ops[kind] += [[now, now] for _ in range(count)]

    def end(self, ticket: list[Optional[float]]) -> None:
        """Mark the operation of ``ticket`` ended (it counts for a window from now)."""
        with self._mutex:
            ticket[1] = self.clock()

    def _wait(self, kind: str, now: float, allowance: tuple[int, float], reserve: int) -> float:
        """Seconds until one more operation (and ``reserve`` after it) fits ``allowance``."""
        k, span = allowance
        ops = self._ops[kind]
        keep = 2 * max(span, self.budget.limit(kind)[1])  # (the span may grow with the fleet)
        ops[:] = [op for op in ops if op[1] is None or op[1] > now - keep]
        ends = sorted(math.inf if op[1] is None else op[1] for op in ops
                      if op[1] is None or op[1] > now - span)
        room = k - 1 - min(reserve, k - 1)  # operations that may still count when it starts
        wait = 0.0
        if len(ends) > room:
            wait = ends[len(ends) - room - 1] + span - now
        if kind == READ:
            wait = max(wait, self._last_start[kind] + span / k - now)
        return wait

    # ---- what pushes teach -------------------------------------------------------------------
    def push_priority(self, updates: Sequence[_Update]) -> tuple[bool, int]:
        """``(urgent, reserve)`` of a push: urgent when it renews or releases the lock this
        worker holds (its lease is on our value); a take (or break) of the lock reserves room
        for its release."""
        lock = [u for u in updates if u.ref == LOCK_REF]
        urgent = any(u.expect and u.expect == self.holding for u in lock)
        take = not urgent and any(u.new for u in lock)
        return urgent, 1 if take else 0

    def pushed(self, updates: Sequence[_Update], applied: bool, refused: Iterable[str],
               sha_of: Callable[[str], Optional[str]]) -> None:
        """Learn from a push's outcome: when each ref moved, and the lock value now held."""
        now = self.clock()
        refused = set(refused)
        with self._mutex:
            for u in updates:
                if applied:
                    self._pushed[u.ref] = now
                    if u.ref.startswith(COORD_PREFIX):  # (not one entry per job branch)
                        self._values[u.ref] = sha_of(u.new) if u.new else None
                if u.ref != LOCK_REF:
                    continue
                if applied:
                    self.holding = sha_of(u.new) if u.new else None
                elif u.ref in refused and u.expect and u.expect == self.holding:
                    self.holding = None  # broken while we held it

    def not_holding(self, value: Optional[str]) -> None:
        """The lock value ``value`` turned out not to be ours (a take answered ok that never
        landed): reads are no longer part of a hold."""
        with self._mutex:
            if self.holding == value:
                self.holding = None

    def pushed_at(self, ref: str) -> Optional[float]:
        """When (this clock) a push of this worker last moved ``ref``; ``None``: not yet."""
        with self._mutex:
            return self._pushed.get(ref)

    def pushed_value(self, ref: str) -> tuple[bool, Optional[str]]:
        """``(True, value)`` with the value the last push of this worker that moved the
        coordination ref ``ref`` gave it (``None``: deleted); ``(False, None)`` when none did."""
        with self._mutex:
            return ref in self._values, self._values.get(ref)

    def counted(self, kind: str, span: float) -> int:
        """Operations of ``kind`` that ended in the last ``span`` seconds or are still running
        (for tests and logs)."""
        now = self.clock()
        with self._mutex:
            return sum(1 for op in self._ops[kind] if op[1] is None or op[1] > now - span)


_registry: dict[tuple[str, str], Pacer] = {}
_registry_mutex = threading.Lock()


def pacer_for(url: str, name: str) -> Pacer:
    """The :class:`Pacer` of worker ``name`` on remote ``url`` in this process (made on first
    use, with :func:`budget_for`; the budget is logged once per remote and process)."""
    key = (url, name)
    with _registry_mutex:
        pacer = _registry.get(key)
        if pacer is None:
            budget = budget_for(url)
            if not any(known == url for known, _ in _registry):
                log.debug("git host budget of %s: %s", redact(url), budget.describe())
            pacer = _registry[key] = Pacer(budget, name)
        return pacer


def promisor_packs(path: Path) -> int:
    """How many packs git fetched into the partial copy at ``path`` (each on-demand fetch of a
    missing object adds one ``.promisor`` file; a repack merges them)."""
    try:
        return sum(1 for entry in os.scandir(path / ".git" / "objects" / "pack")
                   if entry.name.endswith(".promisor"))
    except OSError:
        return 0
