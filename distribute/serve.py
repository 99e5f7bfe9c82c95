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
from .claims import NextJobFunc, fair_share, next_job_spec, take
from .exceptions import JobStateError
from .jobbranch import changed_only, keep_failed, merge_job, merged_fast, take_directory
from .ledger import Ledger
from .pipeline import FollowUp, queue_follow_ups
from .protocol import (
    FAILED,
    FINISHED,
    WAIT_PREFIX,
    Close,
    Request,
    commit_message,
    finish_subject,
    heartbeat_ref,
    job_branch,
    job_path,
    marker_message,
    served_note,
    with_answer,
)
from .redact import redact
from .repo import RefUpdate
from .transaction import Transaction
from .workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover
    from .worker import Worker

log = logging.getLogger(__name__)

#: Requests one hold serves at most (the rest wait for the next hold).
MAX_SERVED = 64
_SHA = re.compile(r"^[0-9a-f]{40}$")


def record_close(txn: Transaction, ledger: Ledger, job: str, name: str, session: str,
                 reason: Optional[str], note: str = "",
                 hooks: Optional[Callable[[], None]] = None,
                 answers: Optional[str] = None, follow_ups: Sequence[FollowUp] = (),
                 kept: str = "") -> None:
    """Move worker ``name``'s (process ``session``) ``job`` to done (``reason`` is ``None``; a merge
    made just before is amended with the ledger edit) or failed (``kept``: the failed branch's tip
    that :func:`~distribute.jobbranch.keep_failed` just made a parent, amended the same way, and
    recorded in ``failed.txt``), in one commit of ``txn``; older
    done records roll into a segment in that commit, waiting jobs whose last parent it was are
    queued (a failure fails them), and a finish queues ``follow_ups``
    (:func:`~distribute.pipeline.queue_follow_ups`). ``hooks`` run before the commit;
    ``answers`` is the request part the commit answers (when it is made for a waiter)."""
    ws = txn.workspace
    amend = (reason is None or bool(kept)) and merged_fast(ws.clone)
    queue_before = list(ledger.queued)
    ledger.close(job, name, reason, session, kept)
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
                  follow_ups: Sequence[FollowUp] = (), tip: str = "", pushed: str = "") -> None:
    """The holder's own close in ``txn``: merge ``job``'s ``branch`` (claimed on ``claim_head``)
    unless failing, and move the job to done (queueing ``follow_ups``) or failed
    (:func:`record_close`), running ``hooks`` before its commit; a failure keeps the branch's
    ``tip`` in master's history and deletes the branch (``pushed``: its value on the remote;
    :func:`~distribute.jobbranch.keep_failed`). Raises :class:`JobStateError` when another
    worker did the job meanwhile."""
    ledger = txn.workspace.ledger()
    entry = ledger.running_entry(job)
    if (entry is None or entry.worker != name) and ledger.is_done(job):
        raise JobStateError(f"job {job!r} was already done by another worker; "
                            f"this result stays on branch {branch}")
    kept = ""
    if reason is None:
        merge_job(txn.workspace.clone, job, job_path(job, txn.workspace.layout), claim_head,
                  branch)
    else:
        kept = keep_failed(txn, branch, tip, pushed)

    def run_hooks() -> None:
        for hook in hooks:
            hook()

    record_close(txn, ledger, job, name, session, reason, hooks=run_hooks,
                 follow_ups=follow_ups, kept=kept)


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
    job is not made for the waiter: when the request closed jobs, the last close commit answers
    ``none`` (the holder ran the waiter's own combinable function on the same master) and the
    waiter's heartbeat goes; a request that only claims is left in line. A request whose serving
    fails is left for its waiter (what was done for it is undone) and serving stops there."""
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
            closes = request.closes()
            if closes and not _close_for(worker, txn, request, closes):
                continue
            if request.next_job is not None and func is not None:
                closed = txn.head()
                if not _claim_for(worker, txn, func, request):
                    clone.reset_hard(closed)
                    if not closes:  # nothing for it now: the waiter asks its function itself
                        continue
                    _answer_none(txn, request)
                elif not closes:  # (else its own beats go on)
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


def _claim_for(worker: "Worker", txn: Transaction, func: NextJobFunc, request: Request) -> int:
    """Claim the jobs ``request`` asks for (at most its fair share of the queue, see
    :func:`~distribute.claims.fair_share`), one commit each; returns how many."""
    count = min(request.claims, fair_share(txn.workspace, worker.name))
    for taken in range(count):
        job, _ = take(worker, txn, func, request.worker, request.session,
                      answers=f"{request.id} claim")
        if job is None:
            return taken
    return count


def _answer_none(txn: Transaction, request: Request) -> None:
    """Record on the request's last close commit that its next-job function found no job, and
    delete the waiter's heartbeat (it has no job left; lease: the value seen)."""
    ws = txn.workspace
    head = txn.head()
    txn.commit(with_answer(ws.clone.messages([head])[head], f"{request.id} none"), amend=True)
    ref = heartbeat_ref(request.worker, request.session)
    if ref in ws.remote_refs:
        txn.optional.append(RefUpdate(ref, None, expect=ws.remote_refs[ref]))


def _close_for(worker: "Worker", txn: Transaction, request: Request,
               closes: list[Close]) -> bool:
    """Close the waiter's jobs as it asked, if that is exactly what it would do itself (all of
    them, or none)."""
    ws = txn.workspace
    ledger = ws.ledger()
    for close in closes:
        entry = ledger.running_entry(close.job)
        if entry is None or (entry.worker, entry.session) != (request.worker, request.session):
            return False
        branch = job_branch(request.worker, close.job, entry.attempt)
        if close.branch != branch and not re.fullmatch(re.escape(branch) + r"-[0-9a-f]{6}",
                                                       close.branch):
            return False
        if close.reason is None and (not _SHA.match(close.tip) or ws.clone.object_at(
                "HEAD", job_path(close.job, ws.layout)) is not None):
            return False
    for close in closes:
        kept, pushed = "", close.pushed if _SHA.match(close.pushed) else ""
        if close.reason is None:
            take_directory(ws.clone, job_path(close.job, ws.layout), close.tip)
            if pushed:
                txn.optional.append(RefUpdate(f"refs/heads/{close.branch}", None, expect=pushed))
        else:  # (the marker's parent is the tip: our fetch brought it)
            kept = keep_failed(txn, close.branch, close.tip if _SHA.match(close.tip) else "",
                               pushed)
        record_close(txn, ledger, close.job, request.worker, request.session, close.reason,
                     served_note(worker.name), answers=f"{request.id} close", kept=kept)
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
