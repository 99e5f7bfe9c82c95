"""The pacer's arithmetic: pacers sharing a budget never exceed it in any window.

``distribute.repo.pacer.Pacer`` is driven here with an injected clock by a small discrete-event
simulation of greedy workers (each starts its next operation the moment its pacer allows):
workers join (seen by the others only a while later) and leave (remembered for ten windows),
take and release the lock (the release is urgent: never delayed, but counted). What is checked is
what a host could count: an operation is seen at some moment between its start and its end, so
the check counts every operation whose [start, end] meets the window.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Optional

import pytest

from distribute.protocol import LOCK_REF
from distribute.repo import RefUpdate
from distribute.repo.pacer import PUSH, READ, Budget, Pacer, budget_for, is_github, pacer_for, share


class Clock:
    """A clock the simulation moves; a pacer that would sleep on it is a bug of the driver."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        raise AssertionError(f"a pacer slept {seconds} s although its delay() said 0")


def most_in_any_window(ops: list[tuple[float, float]], window: float) -> int:
    """The most operations whose [start, end] meets one half-open window of ``window`` s."""
    worst = 0
    for a in sorted({start for start, _ in ops} | {end for _, end in ops}):
        worst = max(worst, sum(1 for s, e in ops if s < a + window and e >= a))
    return worst


@dataclass
class Member:
    name: str
    pacer: Pacer
    joins: float
    leaves: float
    holds: bool  # alternate a paced lock take with an urgent release
    ops: list[tuple[float, float]] = field(default_factory=list)
    holding: Optional[str] = None


def simulate(budget: Budget, kind: str, plan: list[tuple[float, float]], seen_after: float,
             horizon: float, seed: int, holds: bool = False) -> list[Member]:
    """Greedy members joining and leaving per ``plan`` ([(join, leave)]), each seen by the
    others ``seen_after`` seconds after it joined (and for as long as it is in the fleet)."""
    rng, clock = random.Random(seed), Clock()
    members = [Member(f"w{i}", Pacer(budget, f"w{i}", clock, clock.sleep), join, leave, holds)
               for i, (join, leave) in enumerate(plan)]
    events = [(m.joins, i) for i, m in enumerate(members)]
    heapq.heapify(events)
    while events:
        at, i = heapq.heappop(events)
        clock.now = at
        me = members[i]
        if at >= min(me.leaves, horizon):
            continue
        # the refs this member sees now: itself, and the others present long enough to be seen
        me.pacer.see([f"refs/distribute/wait/{m.name}" for m in members
                      if m.joins + (0 if m is me else seen_after) <= at < m.leaves])
        urgent = me.holding is not None
        reserve = 1 if holds and not urgent else 0
        wait = 0.0 if urgent else me.pacer.delay(kind, reserve)
        if wait > 0:
            heapq.heappush(events, (at + min(wait, 0.5), i))
            continue
        ticket = me.pacer.begin(kind, urgent=urgent, reserve=reserve)
        end = at + rng.uniform(0.01, 2.0)
        clock.now = end  # (the members are independent: ending it now is ending it at `end`)
        me.pacer.end(ticket)
        me.ops.append((at, end))
        if holds:
            me.holding = None if urgent else "held"
        heapq.heappush(events, (end + (0 if holds and me.holding else rng.uniform(0, 0.3)), i))
    return members


def fleet_ops(members: list[Member]) -> list[tuple[float, float]]:
    return [op for m in members for op in m.ops]


@pytest.mark.parametrize("seed", range(4))
def test_pacers_sharing_a_budget_never_exceed_it_in_any_window(seed: int) -> None:
    """Eight greedy workers, joining one by one and three of them leaving mid-run, on 60 pushes
    a minute: never more than 60 in any 60 s, and most of the budget is used."""
    budget = Budget(pushes_per_min=60, window_s=60)
    plan = [(40.0 * i, 400.0 if i in (2, 5, 6) else 1e9) for i in range(8)]
    members = simulate(budget, PUSH, plan, seen_after=15, horizon=1400, seed=seed)
    ops = fleet_ops(members)
    assert most_in_any_window(ops, 60) <= 60
    # the leavers are forgotten ten windows after they were last seen: five workers are left,
    # n = 6 shares of 60, 10 pushes a window each
    late = [op for op in ops if op[0] >= 1100]
    assert len(late) >= 5 * 10 * 4, len(late)  # (four of the five windows, at least)


@pytest.mark.parametrize("seed", range(3))
def test_holds_stay_within_the_budget_though_releases_are_never_delayed(seed: int) -> None:
    """Workers that take the lock (paced, leaving room for the release) and release it
    (urgent, counted): 30 pushes a minute, 5 workers, never more than 30 in any 60 s."""
    budget = Budget(pushes_per_min=30, window_s=60)
    members = simulate(budget, PUSH, [(0.0, 1e9)] * 5, seen_after=0, horizon=600, seed=seed,
                       holds=True)
    assert most_in_any_window(fleet_ops(members), 60) <= 30
    assert all(len(m.ops) % 2 == 0 or m.holding for m in members)


def test_reads_are_spread_evenly_within_a_compressed_window() -> None:
    """Reads: 15 a second over windows of a sixth of the push window (here 1 s of a 6-s
    window): 4 workers never exceed 15 in any second, each no faster than its spacing."""
    budget = Budget(reads_per_s=15, window_s=6)
    members = simulate(budget, READ, [(0.0, 1e9)] * 4, seen_after=0, horizon=60, seed=7)
    ops = fleet_ops(members)
    assert most_in_any_window(ops, 1.0) <= 15
    for rank, m in enumerate(members):
        k, span = share(15, 1.0, 4, 0, rank)
        assert (k, span) == (3, 1.0)  # n = 5 shares of 15: no remainder
        starts = [s for s, _ in m.ops]
        assert all(b - a >= span / k - 1e-9 for a, b in zip(starts, starts[1:]))


def test_a_share_below_one_keeps_the_average() -> None:
    """Six pushes a minute (GitHub's) among 11 workers: one push per 120 s each (n = 12), so the
    fleet's long-run rate stays within 6 a minute."""
    assert share(6, 60, 11, 0, 5) == (1, 120.0)
    budget = Budget(pushes_per_min=6, window_s=60)
    members = simulate(budget, PUSH, [(0.0, 1e9)] * 11, seen_after=0, horizon=1200, seed=3)
    assert len(fleet_ops(members)) <= 6 * 1200 / 60 + 11


def test_the_rule() -> None:
    """q = B // n per window, the first B % n ranks one more: the fleet's shares sum to at most
    B, with room for a newcomer that sees the fleet (and is not yet seen by it)."""
    for budget in range(1, 201):
        for fleet in range(1, 61):
            for newcomers in (0, 1, 3):
                ks = [share(budget, 60, fleet, newcomers, rank) for rank in range(fleet)]
                if budget < fleet + 1 + newcomers:
                    assert all(k == 1 and span * budget == pytest.approx(
                        60 * (fleet + 1 + newcomers)) for k, span in ks)
                    continue
                assert all(span == 60 for _, span in ks)
                # a newcomer sees them all for the first time (all new to it), first by name
                newcomer = share(budget, 60, fleet + 1, fleet, 0)[0]
                assert sum(k for k, _ in ks) + newcomer <= budget
                if newcomers == 0:  # (the spare share is what a steady fleet leaves unused)
                    assert sum(k for k, _ in ks) >= budget * fleet / (fleet + 1) - fleet


def test_urgent_pushes_are_those_of_the_hold() -> None:
    """A take reserves its release; a push whose lease is our own lock value is urgent; a
    refused renewal means the lock is no longer ours."""
    pacer = Pacer(Budget(pushes_per_min=6), "w")
    take = [RefUpdate(LOCK_REF, "a" * 40, expect="")]
    assert pacer.push_priority(take) == (False, 1)
    pacer.pushed(take, True, [], lambda rev: rev)
    assert pacer.holding == "a" * 40 and pacer.pushed_at(LOCK_REF) is not None
    release = [RefUpdate("refs/heads/master", "b" * 40, "c" * 40),
               RefUpdate(LOCK_REF, None, expect="a" * 40)]
    assert pacer.push_priority(release) == (True, 0)
    pacer.pushed(release[1:], False, [LOCK_REF], lambda rev: rev)
    assert pacer.holding is None
    assert pacer.push_priority(release) == (False, 0)


def test_budgets_by_host_and_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_github("git@github.com:me/jobs.git") and is_github("https://github.com/me/j.git")
    assert not is_github("https://gitlab.com/me/jobs.git") and not is_github("/srv/github.com.git")
    hub = budget_for("https://x:y@github.com/me/jobs.git")
    assert (hub.pushes_per_min, hub.reads_per_s, hub.window_s) == (6, 15, 60)
    assert "GitHub" in hub.source and "6 pushes/min and 15 reads/s" in hub.describe()
    assert not budget_for("https://gitlab.com/me/jobs.git").limited
    monkeypatch.setenv("DISTRIBUTE_PUSHES_PER_MIN", "0")
    monkeypatch.setenv("DISTRIBUTE_READS_PER_S", "40")
    mine = budget_for("git@github.com:me/jobs.git")
    assert (mine.pushes_per_min, mine.reads_per_s) == (0, 40)
    assert "DISTRIBUTE_READS_PER_S from environment" in mine.source
    assert pacer_for("/nowhere/a.git", "w1") is pacer_for("/nowhere/a.git", "w1")
    assert pacer_for("/nowhere/a.git", "w1") is not pacer_for("/nowhere/a.git", "w2")
