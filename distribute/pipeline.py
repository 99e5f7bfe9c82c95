"""Pipelines: a running job's follow-up jobs (``worker.then``) and its parents' results
(``worker.inputs``).

A follow-up is only recorded while the job runs; the finish queues it in the same commit that
moves the job to done (:func:`queue_follow_ups`, called by :func:`distribute.serve.record_close`),
with the job as its parent, after any other parents it names. A failure or a give-back queues
nothing. Parents live in ``parents.txt`` (see :class:`distribute.ledger.Ledger` and
``docs/protocol.md``); :meth:`FollowUps.check_out_inputs` reads them at the claim and checks the
parents' result directories out in the worker's (slim) copy.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .exceptions import InvalidJobError, JobStateError
from .ledger import Entry, Ledger, split_lines
from .protocol import PARENTS_FILE, check_job, job_path, utc_now
from .redact import redact

if TYPE_CHECKING:  # pragma: no cover
    from .worker import Worker

log = logging.getLogger(__name__)

FollowUp = tuple[str, tuple[str, ...]]


class FollowUps:
    """The pipeline state of one worker's running job: its follow-ups and its inputs."""

    def __init__(self) -> None:
        #: ``[(job, more parents)]`` recorded by :meth:`then`, in order.
        self.jobs: list[FollowUp] = []
        #: ``{parent job: local path of its result directory}`` of the running job.
        self.inputs: dict[str, str] = {}

    def then(self, running: str, job: str, after: Sequence[str] = ()) -> None:
        """Record follow-up ``job`` of the ``running`` job, also after the jobs ``after``."""
        check_job(job)
        if isinstance(after, str):
            raise TypeError("after= wants a list of jobs, not one string")
        parents = tuple(dict.fromkeys(check_job(p) for p in after))
        if job == running or job in parents:
            raise InvalidJobError(f"job {job!r} cannot be its own parent")
        if any(job == known for known, _ in self.jobs):
            raise InvalidJobError(f"follow-up job {job!r} was already recorded")
        self.jobs.append((job, parents))

    def check_out_inputs(self, worker: "Worker", job: str) -> None:
        """At the claim of ``job``: read its parents from the checkout and check their result
        directories out (fetched on demand in a slim copy). Trouble is logged: the job then
        finds a parent's directory missing."""
        self.jobs, self.inputs = [], {}
        parents: list[str] = []
        for line in split_lines(_read(Path(worker.path) / PARENTS_FILE)):
            name, *above = line.split("\t")
            if name.strip() == job:
                parents = [p.strip() for p in above if p.strip()]
        if not parents:
            return
        paths = [job_path(p, worker.workspace.layout) for p in parents]
        try:
            worker.include_paths(*paths)
        except Exception as exc:  # noqa: BLE001 - the job sees what it has
            log.warning("%s could not check out the inputs of %r: %s", worker.name, job,
                        redact(exc))
        self.inputs = {p: os.path.join(worker.path, path) for p, path in zip(parents, paths)}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def queue_follow_ups(ledger: Ledger, job: str, worker: str,
                     follow_ups: Sequence[FollowUp]) -> int:
    """In the finish of ``job`` (already moved to done in ``ledger``): queue its follow-ups, each
    after ``job`` and the parents it names; one already queued, waiting, running or done is
    skipped, one with an unknown parent goes to failed with that reason. Returns how many were
    queued (or left waiting)."""
    coming = frozenset(child for child, _ in follow_ups)
    active = set(ledger.queued) | set(ledger.waiting()) | {e.job for e in ledger.running}
    queued = 0
    for child, more in follow_ups:
        if child in active or ledger.is_done(child):
            log.warning("%s: follow-up job %r of %r is already queued, running or done",
                        worker, child, job)
            continue
        try:
            state = ledger.add_after(child, [job, *more], worker, coming)
        except InvalidJobError as exc:
            ledger.failed.append(ledger_failure(child, worker, str(exc)))
            continue
        queued += state != "failed"
        active.add(child)
    return queued


def ledger_failure(job: str, worker: str, reason: str) -> Entry:
    """A ``failed.txt`` record for a job that never ran."""
    return Entry(job, worker, utc_now(), 0, reason)


def require_running(worker: "Worker") -> str:
    """The running job of ``worker``, else :class:`JobStateError`."""
    if worker.running_job is None:
        raise JobStateError("no job is running on this worker: then() records follow-ups of "
                            "the running job")
    return worker.running_job
