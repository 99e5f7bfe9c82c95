"""Claiming a job inside a write transaction: the next-job calling convention, skipping jobs that
cannot be claimed, requeueing the jobs of silent workers first, and which next-job functions a
holder may run for other workers (:func:`combinable`)."""
from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Callable, Optional

from .exceptions import InvalidJobError
from .ledger import Ledger
from .protocol import (
    GAVE_UP,
    HEARTBEAT_PREFIX,
    QUEUE,
    REJECTED,
    REQUEUED,
    TOOK,
    WAIT_PREFIX,
    check_job,
    commit_message,
    heartbeat_ref,
    served_note,
)
from .redact import redact
from .repo import RefUpdate
from .transaction import Transaction
from .workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover
    from .worker import Worker

log = logging.getLogger(__name__)

NextJobFunc = Callable[..., Optional[str]]
#: Jobs a next-job function may return in one hold that cannot be claimed (already running or
#: done, or not storable) before the hold ends without a claim. Skipped queue lines are committed
#: either way, so a queue that starts with many repeated lines still drains.
MAX_SKIPS = 100_000
_COMBINABLE = "distribute_combinable"


def combinable(func: NextJobFunc) -> NextJobFunc:
    """Mark a module-level next-job function as one a lock holder may run for other workers that
    use the same function (same ``module:qualname``): it must decide from the checkout of master
    alone (``worker.path`` and the ledger), not from state of its own process or from the
    worker's name. The holder then claims for everybody waiting in one push. (A function of a
    script run as ``__main__`` is never combined: two scripts' functions could share a name.)
    Returns ``func``."""
    setattr(func, _COMBINABLE, True)
    return func


def next_job_spec(func: Optional[NextJobFunc]) -> Optional[str]:
    """``module:qualname`` of a :func:`combinable` next-job function, else ``None``."""
    if func is None or not getattr(func, _COMBINABLE, False):
        return None
    name = f"{getattr(func, '__module__', '')}:{getattr(func, '__qualname__', '')}"
    return None if "<" in name or name.startswith(("__main__:", ":")) else name


def call_next_job_func(func: NextJobFunc, worker: "Worker") -> Optional[str]:
    """Call ``func`` with the worker if it takes a positional parameter, else with nothing."""
    try:
        params = [p for p in inspect.signature(func).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.default is p.empty]
    except (TypeError, ValueError):
        params = []
    return func(worker) if params else func()


def claim(worker: "Worker", txn: Transaction, func: NextJobFunc,
          count: Callable[[], int] = lambda: 1) -> list[tuple[str, int]]:
    """In ``txn``: requeue silent workers' jobs, then claim up to ``count()`` jobs (asked after
    the requeue), asking ``func`` until it yields a claimable job (committed as claimed by
    ``worker``, one commit each) or ``None``. Returns ``[(job, attempt), …]``."""
    requeue_silent(worker, txn, txn.workspace.ledger())
    claimed: list[tuple[str, int]] = []
    for _ in range(max(1, count())):
        job, attempt = take(worker, txn, func, worker.name, worker.session)
        if job is None:
            break
        claimed.append((job, attempt))
    if claimed:
        txn.still_valid = lambda: all(_still_ours(worker, txn, job) for job, _ in claimed)
    return claimed


def fair_share(ws: Workspace, name: str) -> int:
    """How many jobs one worker may claim at once: the jobs queued and running over the fleet
    (distinct worker names with a heartbeat or a wait ref on the remote, and ``name``), rounded
    up, at least one: each worker's share of the work left, so that a fleet starting together
    splits the queue evenly and, toward its end, no worker takes more than its share while
    others could run the jobs."""
    names = {name}
    for ref in ws.remote_refs:
        if ref.startswith(HEARTBEAT_PREFIX):
            names.add(ref[len(HEARTBEAT_PREFIX):].rpartition("@")[0] or ref)
        elif ref.startswith(WAIT_PREFIX):
            names.add(ref[len(WAIT_PREFIX):])
    ledger = ws.ledger()
    return max(1, -(-(len(ledger.queued) + len(ledger.running)) // len(names)))


def take(worker: "Worker", txn: Transaction, func: NextJobFunc, name: str,
         session: str, answers: Optional[str] = None) -> tuple[Optional[str], int]:
    """Ask ``func`` (run by ``worker``, the holder) until it yields a claimable job, committed as
    claimed by worker ``name``'s process ``session`` (another one's when the holder serves a
    waiter: ``answers`` is then the request part the claim answers), or ``None``. Returns
    ``(job, attempt)``."""
    ws = txn.workspace
    ledger = ws.ledger()
    note = served_note(worker.name) if name != worker.name or session != worker.session else ""
    skipped = 0
    what = f"the next-job function {getattr(func, '__qualname__', func)!r}"
    for _ in range(MAX_SKIPS):
        with txn.time_limit(worker.next_job_timeout_s, what):
            job = call_next_job_func(func, worker)
        if job is None:
            break
        try:
            entry = ledger.claim(job, name, session)
        except InvalidJobError as exc:
            skipped += 1
            _skip(worker, txn, ledger, job, exc, name, note)
            continue
        ledger.write(ws.root)
        _note_skips(worker, skipped)
        txn.commit(commit_message(name, TOOK, f"{name} took job {job}{note}", job, answers))
        return job, entry.attempt
    else:
        log.warning("%s: the job function returned %d unusable jobs in a row", worker.name,
                    MAX_SKIPS)
    _note_skips(worker, skipped)
    txn.commit(commit_message(name, QUEUE, f"{name} updated the queue{note}"))
    return None, 0


def _note_skips(worker: "Worker", skipped: int) -> None:
    if skipped:
        log.warning("%s skipped %d job(s) that were already running or done, or not storable",
                    worker.name, skipped)


def _still_ours(worker: "Worker", txn: Transaction, job: str) -> bool:
    """After our claim was replayed on a moved master: is the job still claimed by us alone?"""
    ledger = txn.workspace.ledger()
    entry = ledger.running_entry(job)
    return (entry is not None and entry.worker == worker.name and not ledger.is_done(job)
            and sum(e.job == job for e in ledger.running) == 1)


def _skip(worker: "Worker", txn: Transaction, ledger: Ledger, job: object,
          exc: InvalidJobError, name: str, note: str) -> None:
    """A job that cannot be claimed: a valid repeat of a running or done job is dropped (the
    function's edit of the queue stays); a job string that cannot be stored is recorded, as its
    ``repr``, in failed.txt, in the name of worker ``name``, whom the claim was for (``note``:
    `` (served by <holder>)`` when the holder claims for a waiter)."""
    if isinstance(job, str):
        try:
            check_job(job)
            log.debug("%s skips job: %s", worker.name, redact(exc))
            return
        except InvalidJobError:
            pass
    log.warning("%s skips job: %s", worker.name, redact(exc))
    shown = repr(job)
    if not ledger.running_entry(shown) and not ledger.is_done(shown):
        ledger.claim(shown, name)
        ledger.fail(shown, name, f"invalid job string: {exc}")
        ledger.write(txn.workspace.root)
    txn.commit(commit_message(name, REJECTED,
                              f"{name} rejected invalid job {shown[:200]}{note}"))


def requeue_silent(worker: "Worker", txn: Transaction, ledger: Ledger) -> None:
    """Give back running jobs whose worker process has been silent for the job lease (one commit
    each), at once those of this worker's earlier process on the same local copy, and prune the
    heartbeat refs of processes gone for two job leases."""
    refs = txn.workspace.remote_refs
    ours = {worker.session, *worker.dead_sessions, ""}
    for entry in reversed(ledger.running):  # (back at the queue's head in their order)
        if entry.worker == worker.name and entry.session in ours:
            if worker.holds(entry.job):
                continue
            silent, why = True, f"{worker.name} restarted without it"
        else:
            ref = heartbeat_ref(entry.worker, entry.session)
            age = worker.observer.unchanged_for(ref, refs.get(ref))
            silent, why = age >= worker.job_lease_s, f"{entry.worker} silent for {age:.0f}s"
        if not silent:
            continue
        back = ledger.requeue(entry.job, worker.max_attempts, why)
        ledger.write(txn.workspace.root, queue=True)
        verb = "requeued" if back else "gave up"
        txn.commit(commit_message(worker.name, REQUEUED if back else GAVE_UP,
                                  f"{worker.name} {verb} job {entry.job} ({why})", entry.job))
        log.warning("%s %s job %r (%s)", worker.name, verb, entry.job, why)
    busy = {heartbeat_ref(e.worker, e.session) for e in ledger.running}
    for ref, value in refs.items():
        if (ref.startswith(HEARTBEAT_PREFIX) and ref not in busy
                and worker.observer.unchanged_for(ref, value) >= 2 * worker.job_lease_s):
            txn.optional.append(RefUpdate(ref, None, expect=value))
