"""Built-in next-job functions.

A next-job function runs while its worker holds the remote lock, with ``worker.path`` checked out at
the newest ``master``. It returns the next job string, or ``None`` when there is nothing to do, and
may edit files in the checkout (those edits are committed together with the claim). The built-in
ones are :func:`~distribute.claims.combinable`: a holder runs them for other workers waiting in
line.
"""
from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from .claims import combinable
from .ledger import Ledger, read_lines
from .protocol import QUEUE_FILE, job_stage

log = logging.getLogger(__name__)


class _HasPath(Protocol):
    path: str


@combinable
def random_jobs_func() -> str:
    """The simplest job function: a random job id (a decimal number below 10**12)."""
    return str(random.SystemRandom().randrange(10**12))


@combinable
def queue_jobs_func(worker: _HasPath) -> Optional[str]:
    """Take the first job of ``jobs.txt`` and rewrite the file with the rest; ``None`` when empty.

    Blank lines, CR characters and surrounding spaces are dropped (with a warning) when the file is
    rewritten, so a hand-edited ``jobs.txt`` never stalls the queue.
    """
    path = Path(worker.path) / QUEUE_FILE
    raw = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    jobs = read_lines(path)
    if raw and raw != "".join(j + "\n" for j in jobs):
        log.warning("jobs.txt had blank lines, CR characters or stray spaces; they were removed")
    if not jobs:
        if raw:
            path.write_text("", encoding="utf-8")
        return None
    path.write_text("".join(j + "\n" for j in jobs[1:]), encoding="utf-8")
    return jobs[0]


_STAGE = re.compile(r"[^\s:,\[\]]{0,64}")


def stage_jobs_func(*stages: str) -> Callable[..., Optional[str]]:
    """A :func:`~distribute.claims.combinable` next-job function that takes the first job of
    ``jobs.txt`` whose stage (:func:`distribute.protocol.job_stage`: the text before the first
    ``:``; ``""`` for a job without one) is one of ``stages``, leaving the others queued in their
    order; ``None`` when there is none. Jobs waiting for their parents are not in ``jobs.txt``,
    so it never takes one. Workers with the same set of stages (in any order) serve each other's
    claims. ``distribute worker URL --run M:F --stage embed`` uses it."""
    if not stages:
        raise ValueError("stage_jobs_func needs at least one stage")
    for stage in stages:
        if not isinstance(stage, str) or not _STAGE.fullmatch(stage):
            raise ValueError(f"not a stage name: {stage!r} (the text before a job's first ':', "
                             "without blanks, ',', '[' or ']')")
    wanted = frozenset(stages)

    def next_stage_job(worker: _HasPath) -> Optional[str]:
        path = Path(worker.path) / QUEUE_FILE
        jobs = read_lines(path)
        for index, job in enumerate(jobs):
            if job_stage(job) in wanted:
                rest = jobs[:index] + jobs[index + 1:]
                path.write_text("".join(j + "\n" for j in rest), encoding="utf-8")
                return job
        return None

    next_stage_job.__module__ = __name__  # (its spec names the stages: see claims.next_job_spec)
    next_stage_job.__qualname__ = f"stage_jobs_func[{','.join(sorted(wanted))}]"
    return combinable(next_stage_job)


def _result_id(job: Any) -> str:
    rid = getattr(job, "result_id", None)
    if rid is None and isinstance(job, dict):
        rid = job.get("result_id")
    if rid is None:
        raise ValueError(f"suggested job {job!r} has no result_id")
    return str(rid)


def whetlab_make_next_jobs_func(worker: _HasPath, experiment: Any) -> Callable[[], Optional[str]]:
    """A next-job function backed by a Whetlab-style experiment object.

    The experiment must offer the Whetlab client's protocol:

    * ``suggest()`` → a new job (a mapping of parameters) with a ``result_id`` attribute or key;
    * ``get_by_result_id(result_id)`` → that job again (used by the job code to read its
      parameters);
    * ``update(job, value)`` → report the job's result (the user's job code calls this);
    * ``pending()`` → jobs suggested but not yet updated;
    * ``cancel(job)`` → forget a pending job.

    The returned function first takes jobs that were put back in ``jobs.txt`` (their worker died),
    cancels pending jobs that no worker runs or will run any more, then asks ``suggest()``; the job
    string is the suggestion's ``result_id``.
    """

    def next_job() -> Optional[str]:
        requeued = queue_jobs_func(worker)
        if requeued is not None:
            return requeued
        ledger = Ledger.read(Path(worker.path))
        alive = {e.job for e in ledger.running} | set(ledger.queued)
        for job in list(experiment.pending()):
            rid = _result_id(job)
            if rid not in alive and not ledger.is_done(rid):
                log.info("cancelling pending job %s: no worker runs it", rid)
                experiment.cancel(job)
        return _result_id(experiment.suggest())

    return next_job
