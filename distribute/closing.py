"""Closing a worker's jobs: finishing or failing the running one (with the jobs of its batch
finished before it), in a hold of the lock or as a request served by the holder, and what the
worker does with the answer. A part of :class:`~distribute.worker.Worker` (its private methods),
kept here so that the state machine of a job reads on one screen per step; see
``docs/protocol.md`` ("Serving the line", "Batches")."""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .answers import Answer, Claimed
from .batch import Finished
from .claims import NextJobFunc, next_job_spec
from .exceptions import FileTooLargeError, JobStateError
from .jobbranch import take_refused
from .protocol import Request, job_path, new_request_id
from .redact import redact
from .repo import RefUpdate
from .serve import close_own_job, close_request
from .transaction import Transaction

if TYPE_CHECKING:  # pragma: no cover
    from .worker import Worker

log = logging.getLogger(__name__)


def defer(w: "Worker") -> str:
    """Finish the running job here (its close comes with the batch's last) and start the
    batch's next job."""
    job, branch = w._require_job()
    w._commit_job(f"{w.name} update on job {job}")
    request = close_request(w.workspace, Request(
        w.name, w.session, None, job, branch, "", "", None, ""), w._claim_head)
    tip = request.tip if request else w.clone.resolve(f"refs/heads/{branch}") or ""
    w._finished.append(Finished(job, branch, w._branch_sha or "", w._claim_head or "", tip,
                                request is not None))
    w._clock.ended()
    w._drop_job_dir()
    w.running_job = w.working_branch = w._branch_sha = None
    log.info("%s finished job %r (it lands with the batch's last)", w.name, job)
    return w._start_held()


def close_jobs(w: "Worker", reason: Optional[str], next_job_func: Optional[NextJobFunc],
               ask: bool = True) -> Optional[str]:
    """Finish (``reason`` is ``None``) or fail the running job, closing the batch's jobs
    finished before it in the same hold or request, then claim with ``next_job_func`` (unless
    jobs of the batch wait); ``ask``: wait in line with a request when a holder may serve it."""
    job, _ = w._require_job()
    w._clock.ended()
    answer = w._asker.settle()  # an earlier request of this close, whose outcome we missed
    if job in answer.get("close", ()):
        return _answered(w, job, reason, next_job_func, answer)
    w._commit_job(f"{w.name} update on job {job}")
    request = _close_request(w, job, reason, next_job_func) if ask else None
    job, branch = w._require_job()  # (a branch pushed for the request may be renamed)
    branch_update = w._branch_update()
    pending = [branch_update] if branch_update.new != branch_update.expect else []
    txns: list[Transaction] = []
    finished, lost = list(w._finished), list[Finished]()

    def edit(txn: Transaction) -> Optional[Claimed]:
        txns.append(txn)  # (it beats on: should the lock be broken, the job is not silent)
        lost[:] = [done for done in finished if not close_finished(w, txn, done)]
        _close_edit(w, txn, job, branch, reason)
        if reason is None and w._branch_sha:  # merged: its commits stay reachable
            txn.optional.append(
                RefUpdate(f"refs/heads/{branch}", None, expect=w._branch_sha))
        txn.checkpoint()  # the close lands even if the next-job function raises
        w.running_job = None  # (the next claim must not treat it as ours)
        try:  # (no claim of our own while jobs of our batch wait)
            claimed = w._claim(txn, next_job_func, own=not w._held)
        finally:
            w.running_job = job
        beat = txn.workspace.remote_refs.get(w._heartbeat.ref)
        if not claimed and not w._held and beat:  # no job left: our heartbeat goes with the push
            txn.optional.append(RefUpdate(w._heartbeat.ref, None, expect=beat))
        return claimed

    tips = [tip for tip in (branch_update.new, *(done.tip for done in finished)) if tip]
    try:  # (the heartbeat goes on while we wait in line, and for a job claimed for us)
        claimed, served = w._asker.ask(edit, request, [], tips)
    except JobStateError:  # done by another worker while we were silent: not ours any more
        if pending:
            w.clone.push(pending)  # our result stays on our branch
        w._job_over()
        raise
    except FileTooLargeError as exc:
        if take_refused(w, str(exc)):  # with a store: files over the host's limit go there
            keep_job_alive(w, [])
            return close_jobs(w, reason, next_job_func, ask=False)
        if not _fail_refused(w, str(exc)):
            keep_job_alive(w, pending)
            raise
        keep_job_alive(w, [])
        return close_jobs(w, reason, next_job_func, ask=False)
    except BaseException:
        if txns and txns[-1].checkpoint_landed:  # closed; only the next claim failed
            w._finished = []
            w._job_over()
        else:
            keep_job_alive(w, pending)
        raise
    if served is not None:  # a holder took our request out of line
        if job not in served.get("close", ()):  # not served after all: do it ourselves
            return close_jobs(w, reason, next_job_func, ask=False)
        return _answered(w, job, reason, next_job_func, served)
    w._drop_job_dir()
    w.running_job = w.working_branch = w._branch_sha = None
    w._finished = []
    w.landed = [done.job for done in finished if done not in lost] + [job]
    keep_results(w, lost)
    if claimed is None and not w._held:
        w._heartbeat.stop()
    log.info("%s %s job %r", w.name, "finished" if reason is None else "failed", job)
    return _next(w, claimed, next_job_func)


def _next(w: "Worker", claimed: Optional[Claimed], next_job_func: Optional[NextJobFunc],
          ) -> Optional[str]:
    """After a close: start the jobs just claimed, else the batch's next one if asked to."""
    if claimed:
        return w._start(claimed)
    return w._start_held() if w._held and next_job_func is not None else None


def _answered(w: "Worker", job: str, reason: Optional[str],
              next_job_func: Optional[NextJobFunc],
              answer: Answer) -> Optional[str]:
    """Our jobs were closed for us as asked; take the jobs claimed with them, or claim."""
    w._drop_job_dir()
    w.running_job = w.working_branch = w._branch_sha = None
    closed = answer.get("close", [])
    w.landed = closed
    w._finished = [done for done in w._finished if done.job not in closed]
    log.info("%s closed job %r (served: %s)", w.name, job, reason or "finished")
    if w._finished:  # (a request closes all or none: only if it was not ours)
        w.release_batch(give_back=False)
    claimed = w._asker.granted(answer.get("claim"))  # (its heartbeat thread goes on)
    if claimed is None and not w._held:
        w._heartbeat.stop()
        if next_job_func is not None and "none" not in answer:  # our function says
            claimed = w._writer.transact(lambda txn: w._claim(txn, next_job_func))
    return _next(w, claimed, next_job_func)


def close_finished(w: "Worker", txn: Transaction, done: Finished) -> bool:
    """In our close's hold: close a job of the batch finished earlier; ``False`` when another
    worker did it meanwhile (our result then stays on its branch)."""
    try:
        close_own_job(txn, done.job, w.name, w.session, done.branch, done.reason,
                      done.claim_head, tip=w.clone.resolve(f"refs/heads/{done.branch}") or "",
                      pushed=done.pushed)
    except JobStateError as exc:
        log.warning("%s: %s", w.name, exc)
        return False
    if done.pushed and done.reason is None:  # merged: its commits stay reachable
        txn.optional.append(RefUpdate(f"refs/heads/{done.branch}", None, expect=done.pushed))
    return True


def _fail_refused(w: "Worker", message: str) -> bool:
    """The host refused a file of a job of the batch finished earlier (its size): that job fails
    with the host's message instead, its branch back where the remote has it (the files are
    lost; the host would never take them). ``False`` when no such job is named."""
    named = False
    for done in w._finished:
        if done.reason is None and f"{job_path(done.job, w.workspace.layout)}/" in message:
            done.reason, done.servable, named = " ".join(message.split()), False, True
            w.clone.update_ref(f"refs/heads/{done.branch}", done.pushed or done.claim_head)
    return named



def keep_results(w: "Worker", lost: list[Finished]) -> None:
    """Push the branches of batch jobs another worker did meanwhile (best effort)."""
    for done in lost:
        try:
            w.clone.push([RefUpdate(f"refs/heads/{done.branch}", done.tip,
                                       expect=done.pushed or None)])
        except Exception as exc:  # noqa: BLE001 - the result stays in the local copy
            log.warning("%s could not push branch %s: %s", w.name, done.branch,
                        redact(exc))


def _close_edit(w: "Worker", txn: Transaction, job: str, branch: str,
                reason: Optional[str]) -> None:
    """Merge the job branch (unless failing: then its commits are kept in master's history and
    the branch deleted) and move the job to done or failed."""
    close_own_job(txn, job, w.name, w.session, branch, reason, w._claim_head,
                  [functools.partial(hook, w, job, reason) for hook in w._close_hooks],
                  w._pipeline.jobs, tip=w.clone.resolve(f"refs/heads/{branch}") or "",
                  pushed=w._branch_sha or "")


def _close_request(w: "Worker", job: str, reason: Optional[str],
                   next_job_func: Optional[NextJobFunc]) -> Optional[Request]:
    """The request a holder may serve for this close, or ``None`` when only we can do it
    (a close hook must run, follow-ups must be queued, the next-job function is not
    combinable; see :func:`~distribute.serve.close_request`)."""
    spec = next_job_spec(next_job_func)
    if w._close_hooks or (next_job_func is not None and spec is None) or (
            reason is None and w._pipeline.jobs) or not all(
            done.servable for done in w._finished):
        return None
    # (pushed first, for holders of older versions, which keep a failed job's branch)
    if reason is not None and w._branch_update().new != w._branch_sha and \
            not w._push_branch():
        return None
    spec = spec if not w._held else None  # (no claim while jobs of our batch wait)
    return close_request(w.workspace, Request(
        w.name, w.session, spec, job, w.working_branch or "", "",
        w._branch_sha or "", reason, new_request_id(),
        tuple(done.close() for done in w._finished),
        w._batch_size() if spec else 1), w._claim_head)


def keep_job_alive(w: "Worker", pending: list[RefUpdate]) -> None:
    """After a finish that did not land: back on the job branch, beating, work pushed."""
    w.clone.force_checkout(w.working_branch or "HEAD")
    Path(w.job_dir or w.path).mkdir(parents=True, exist_ok=True)
    w._heartbeat.start()
    if pending:
        try:
            if w.clone.push(pending):
                w._branch_sha = pending[0].new
        except Exception as exc:  # noqa: BLE001 - the next finish pushes it again
            log.warning("%s could not push job branch %s: %s", w.name,
                        w.working_branch, redact(exc))
