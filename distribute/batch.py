"""A worker's batch: jobs claimed together in one lock hold (or one request) and run one after
another, and finishes kept back so that several jobs close in one push.

A worker with ``max_batch`` above one (the worker loop's ``DISTRIBUTE_MAX_BATCH``) claims up to
that many jobs at once: each is its own claim commit, but all land in one push. It runs them one
by one; finishing one while others of the batch wait commits its result on its branch locally
and defers the close, and the finish of the batch's last job closes all of them in one hold or
one request (each merged as its own job). If the worker dies, the batch's jobs come back to the
queue like any silent worker's job. How many jobs a batch takes is :func:`batch_size`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

from .protocol import Close

__all__ = ["Held", "Finished", "JobClock", "batch_size"]


@dataclass
class Held:
    """A job claimed for this worker that has not started: its branch, the master commit it was
    claimed on, and whether a holder claimed it for us (its branch is then not on the remote)."""

    job: str
    branch: str
    claim_head: str
    granted: bool = False


@dataclass
class Finished:
    """A job finished here whose close waits for the batch's last one: its branch (committed
    locally, ``tip``), the branch's value on the remote (``pushed``, empty if never pushed), the
    commit it was claimed on, and whether a holder may close it for us (``servable``)."""

    job: str
    branch: str
    pushed: str
    claim_head: str
    tip: str
    servable: bool
    reason: Optional[str] = None  #: it fails instead (the host refused one of its files)

    def close(self) -> Close:
        """The part of a request that closes it."""
        return Close(self.job, self.branch, self.tip, self.pushed)


class JobClock:
    """How long this worker's jobs take: a moving average of the last few."""

    def __init__(self) -> None:
        self.mean_s: Optional[float] = None
        self._started: Optional[float] = None

    def started(self) -> None:
        """A job starts now."""
        self._started = time.monotonic()

    def ended(self) -> None:
        """The job started last ended now (its close may come later)."""
        if self._started is None:
            return
        took = time.monotonic() - self._started
        self.mean_s = took if self.mean_s is None else 0.7 * self.mean_s + 0.3 * took
        self._started = None


def batch_size(max_batch: int, batch_s: float, mean_job_s: Optional[float],
               fair_share: int) -> int:
    """Jobs to claim at once: at most ``max_batch``, at most the worker's ``fair_share`` of the
    queue, and at most as many as take ``batch_s`` seconds at the jobs' mean duration (unknown
    before the first job ended: then the other two decide); at least one."""
    by_time = max_batch if not mean_job_s else max(1, math.floor(batch_s / mean_job_s))
    return max(1, min(max_batch, fair_share, by_time))
