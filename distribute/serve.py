"""Serving lock waiters: the holder of the lock closes and claims jobs for the workers in line.

A worker that needs the lock only to finish (or fail) its job and to claim its next one with a
:func:`~distribute.claims.combinable` next-job function waits in line with a
:class:`~distribute.protocol.Request` on its wait ref. Whoever holds the lock serves, in its own
hold, every request it can: it merges the waiter's job branch (taking the job's directory from
the branch's tip), moves the job to done or failed, claims the next job in the waiter's name (and
moves the heartbeat of a waiter that had no job: one that had keeps beating itself), one commit
each as the waiter would have made them, and deletes the
served wait refs in the same atomic push. One push to master then carries the work of many
workers, while next-job functions still run one call at a time under the lock.

A request is served only when the holder can do exactly what the waiter would do: the job still
runs under the waiter's session, the branch changed only the job's directory (the waiter checks)
and master has nothing there yet, and the waiter's next-job function is the holder's. Otherwise it
is left in line, and the waiter takes the lock in its turn.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from .archive import roll_into_segment
from .claims import NextJobFunc, next_job_spec, take
from .exceptions import JobStateError
from .jobbranch import changed_only, merge_job, merged_fast, take_directory
from .ledger import Ledger
from .pipeline import FollowUp, queue_follow_ups
from .protocol import (
    FAILED,
    FINISHED,
    WAIT_PREFIX,
    Request,
    commit_message,
    finish_subject,
    heartbeat_ref,
    job_branch,
    job_path,
    marker_message,
    served_note,
)
from .redact import redact
from .repo import RefUpdate
from .transaction import Transaction, Workspace

if TYPE_CHECKING:  # pragma: no cover
    from .worker import Worker

log = logging.getLogger(__name__)

#: Requests one hold serves at most (the rest wait for the next hold).
MAX_SERVED = 64
_SHA = re.compile(r"^[0-9a-f]{40}$")


def record_close(txn: Transaction, ledger: Ledger, job: str, name: str, session: str,
                 reason: Optional[str], note: str = "",
                 hooks: Optional[Callable[[], None]] = None,
                 answers: Optional[str] = None, follow_ups: Sequence[FollowUp] = ()) -> None:
    """Move worker ``name``'s (process ``session``) ``job`` to done (``reason`` is ``None``; a merge
    made just before is amended with the ledger edit) or failed, in one commit of ``txn``; older
    done records roll into a segment in that commit, waiting jobs whose last parent it was are
    queued (a failure fails them), and a finish queues ``follow_ups``
    (:func:`~distribute.pipeline.queue_follow_ups`). ``hooks`` run before the commit;
    ``answers`` is the request part the commit answers (when it is made for a waiter)."""
    ws = txn.workspace
    amend = reason is None and merged_fast(ws.clone)
    queue_before = list(ledger.queued)
    ledger.close(job, name, reason, session)
    queued = queue_follow_ups(ledger, job, name, follow_ups) if reason is None else 0
    archived = ledger.roll()
    ledger.write(ws.root, queue=ledger.queued != queue_before)
    if hooks is not None:
        hooks()
    subject = finish_subject(name, job, queued) if reason is None else \
        f"{name} failed job {job}: {reason[:200]}"
    txn.commit(commit_message(name, FINISHED if reason is None else FAILED, subject + note, job,
                              answers), amend)
    roll_into_segment(ws.clone, archived)  # (in the same commit)
    ws.done_index.add(archived)


def close_own_job(txn: Transaction, job: str, name: str, session: str, branch: str,
                  reason: Optional[str], claim_head: Optional[str],
                  hooks: Sequence[Callable[[], None]] = (),
                  follow_ups: Sequence[FollowUp] = ()) -> None:
    """The holder's own close in ``txn``: merge ``job``'s ``branch`` (claimed on ``claim_head``)
    unless failing, and move the job to done (queueing ``follow_ups``) or failed
    (:func:`record_close`), running ``hooks`` before its commit. Raises :class:`JobStateError`
    when another worker did the job meanwhile."""
    ledger = txn.workspace.ledger()
    entry = ledger.running_entry(job)
    if (entry is None or entry.worker != name) and ledger.is_done(job):
        raise JobStateError(f"job {job!r} was already done by another worker; "
                            f"this result stays on branch {branch}")
    if reason is None:
        merge_job(txn.workspace.clone, job, job_path(job, txn.workspace.layout), claim_head,
                  branch)
    def run_hooks() -> None:
        for hook in hooks:
            hook()

    record_close(txn, ledger, job, name, session, reason, hooks=run_hooks,
                 follow_ups=follow_ups)


def requests_in_line(txn: Transaction) -> list[tuple[str, str, Request]]:
    """``(wait ref, value, request)`` of the waiters in line with a request, first come first,
    as of the transaction's sync."""
    ws = txn.workspace
    present = ws.observer.present(WAIT_PREFIX)
    line = sorted((since, ref, value) for ref, (value, since) in present.items()
                  if ws.remote_refs.get(ref) == value)
    messages = ws.clone.messages([value for _, _, value in line])
    found = []
    for _, ref, value in line:
        request = Request.parse(messages.get(value, ""))
        if request is not None:
            found.append((ref, value, request))
    return found


def serve_waiters(worker: "Worker", txn: Transaction, func: Optional[NextJobFunc]) -> int:
    """Serve what ``worker`` (the holder) can of the requests in line, after its own edit in
    ``txn``; returns how many were served. Each commit made for a waiter records which part of
    which request it answers (:data:`~distribute.protocol.ANSWER_TRAILER`). A claim that finds no
    job is not made for the waiter (it runs its next-job function itself, so that ``None`` always
    comes from its own call). A request whose serving fails is left for its waiter (what was done
    for it is undone) and serving stops there."""
    spec = next_job_spec(func)
    clone = txn.workspace.clone
    beat: Optional[str] = None  # one fresh heartbeat value for every served claim
    for ref, value, request in requests_in_line(txn):
        if (ref in txn.unservable or not request.id or request.next_job not in (None, spec)
                or request.worker == worker.name):  # (ourselves, a twin or our predecessor)
            continue
        if len(txn.served) >= MAX_SERVED:
            break
        head, n_refs, n_optional = txn.head(), len(txn.refs), len(txn.optional)
        try:
            if request.close is not None and not _close_for(worker, txn, request):
                continue
            if request.next_job is not None and func is not None:
                closed = txn.head()
                job, _ = take(worker, txn, func, request.worker, request.session,
                              answers=f"{request.id} claim")
                if job is None:  # nothing for it now: the waiter asks its function itself
                    clone.reset_hard(closed)
                    if request.close is None:
                        continue
                elif request.close is None:  # (else its own beats go on)
                    beat = beat or clone.make_marker(marker_message("heartbeat", worker.name))
                    txn.refs.append(RefUpdate(heartbeat_ref(request.worker, request.session),
                                              beat, expect=None))
        except Exception as exc:  # noqa: BLE001 - the waiter will do it itself and see the error
            log.warning("%s could not serve %s: %s", worker.name, request.worker, redact(exc))
            clone.reset_hard(head)
            del txn.refs[n_refs:], txn.optional[n_optional:]
            break
        txn.refs.append(RefUpdate(ref, None, expect=value))
        txn.served[ref] = value
    if txn.served:
        log.info("%s served %d waiting worker(s)", worker.name, len(txn.served))
    return len(txn.served)


def _close_for(worker: "Worker", txn: Transaction, request: Request) -> bool:
    """Close the waiter's job as it asked, if that is exactly what it would do itself."""
    ws = txn.workspace
    job = request.close or ""
    ledger = ws.ledger()
    entry = ledger.running_entry(job)
    if entry is None or (entry.worker, entry.session) != (request.worker, request.session):
        return False
    branch = job_branch(request.worker, job, entry.attempt)
    if request.branch != branch and not re.fullmatch(re.escape(branch) + r"-[0-9a-f]{6}",
                                                     request.branch):
        return False
    if request.reason is None:
        path = job_path(job, ws.layout)
        if not _SHA.match(request.tip) or ws.clone.object_at("HEAD", path) is not None:
            return False
        take_directory(ws.clone, path, request.tip)
        if _SHA.match(request.pushed):
            txn.optional.append(RefUpdate(f"refs/heads/{request.branch}", None,
                                          expect=request.pushed))
    record_close(txn, ledger, job, request.worker, request.session, request.reason,
                 served_note(worker.name), answers=f"{request.id} close")
    return True


def close_request(ws: Workspace, request: Request, base: Optional[str]) -> Optional[Request]:
    """``request`` (to close its job) with the job branch's tip filled in, or ``None`` when a
    holder could not merge the branch as its worker would: it changed more than the job's
    directory since ``base`` (the commit the job was claimed on), or that directory existed."""
    tip = ws.clone.resolve(f"refs/heads/{request.branch}") or ""
    if request.reason is None:
        path = job_path(request.close or "", ws.layout)
        if not base or not changed_only(ws.clone, base, tip, path) or \
                ws.clone.object_at(base, path) is not None:
            return None
    return dataclasses.replace(request, tip=tip)
