"""The worker: one process's state machine of a job — claimed, checkpointed on its branch, then
finished (merged into master), failed or given back — built on the write transaction
(:class:`~distribute.transaction.MasterWriter`); see ``docs/protocol.md``."""
from __future__ import annotations

import functools
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar, Union

from . import protocol, settings
from .answers import Asker
from .claims import NextJobFunc, claim, next_job_spec
from .coordination import Heartbeat, Observer, RemoteLock
from .exceptions import JobStateError, RefRejectedError
from .jobbranch import commit_job_dir, resume_job
from .ledger import Ledger
from .pipeline import FollowUps, require_running
from .protocol import GAVE_BACK, MASTER, Request, job_branch, job_path, new_request_id
from .redact import redact
from .repo import RefUpdate
from .repo.clone import normalize_url
from .repo.localcopy import lock_local_copy, prepare_clone
from .serve import close_own_job, close_request, serve_waiters
from .sessions import check_name_free, take_over_copy
from .status import read_snapshot
from .transaction import MasterWriter, Transaction, Workspace

log = logging.getLogger(__name__)

CloseHook = Callable[["Worker", str, Optional[str]], None]
#: Where the running job works, inside the local copy (git ignores it there).
JOB_WORKDIR = ".distribute-job"
T = TypeVar("T")
__all__ = ["Worker", "NextJobFunc", "CloseHook"]


class Worker:
    """One worker process using one local copy of the remote.

    ``lock_lease_s``, ``job_lease_s``, ``max_attempts``, ``heartbeat_s``, ``poll_max_s`` and
    ``next_job_timeout_s`` default to the settings named ``DISTRIBUTE_`` + their name in capitals
    (defaults: :data:`distribute.settings.SETTINGS`; the heartbeat's: a fifth of the job lease);
    ``DISTRIBUTE_POLL_BUDGET`` paces the looks of the workers waiting in line.
    """

    def __init__(self, path: Union[str, os.PathLike[str]], name: Optional[str] = None, *,
                 remote_url: Optional[str] = None, lock_lease_s: Optional[float] = None,
                 job_lease_s: Optional[float] = None, max_attempts: Optional[int] = None,
                 heartbeat_s: Optional[float] = None, poll_max_s: Optional[float] = None,
                 next_job_timeout_s: Optional[float] = None) -> None:
        self.name = protocol.check_worker_name(name or protocol.default_worker_name())
        self.path = str(Path(path).resolve())
        self.lock_lease_s = settings.seconds_setting("DISTRIBUTE_LOCK_LEASE_S", lock_lease_s)
        self.job_lease_s = settings.seconds_setting("DISTRIBUTE_JOB_LEASE_S", job_lease_s)
        self.max_attempts = settings.count_setting("DISTRIBUTE_MAX_ATTEMPTS", max_attempts)
        self.heartbeat_s = settings.heartbeat_seconds(self.job_lease_s, heartbeat_s)
        poll_max = settings.seconds_setting("DISTRIBUTE_POLL_MAX_S", poll_max_s)
        self.poll_budget = settings.number_setting("DISTRIBUTE_POLL_BUDGET")
        self.next_job_timeout_s = settings.seconds_setting("DISTRIBUTE_NEXT_JOB_TIMEOUT_S",
                                                           next_job_timeout_s)
        self._file_lock = lock_local_copy(Path(self.path))
        try:
            self.clone = prepare_clone(normalize_url(remote_url) if remote_url else None,
                                       Path(self.path), self.name)
            self._set_up(poll_max)
        except BaseException:
            self._file_lock.release()
            raise

    def _set_up(self, poll_max: float) -> None:
        """The rest of the start: identity, coordination, the first sync, the twin check."""
        #: This process's identity, recorded with its claims and heartbeat.
        self.session = protocol.new_session()
        #: Sessions that provably ended: the one that used this local copy before us.
        self.dead_sessions = take_over_copy(self.path, self.session)
        self.observer = Observer()
        self._lock = RemoteLock(self.clone, self.name, self.lock_lease_s, self.observer,
                                poll_max_s=poll_max, poll_budget=self.poll_budget)
        self._heartbeat = Heartbeat(self.clone, self.name, self.heartbeat_s, self.session)
        self.workspace = Workspace(self.clone, self.observer, self.name)
        self.clone.exclude(f"/{JOB_WORKDIR}/")
        self._writer = MasterWriter(self.workspace, self._lock)
        self.running_job: Optional[str] = None
        self.working_branch: Optional[str] = None
        self._branch_sha: Optional[str] = None
        self._claim_head: Optional[str] = None  # the master commit the running job was claimed on
        self.attempt = 0  #: the running job's attempt, 1 for the first (see jobbranch.resume_job)
        self._close_hooks: list[CloseHook] = []
        self._pipeline = FollowUps()
        self._asker = Asker(self._writer, self.workspace, self.name, self.session)
        self.workspace.sync()
        check_name_free(self.workspace, self.name, {self.session, *self.dead_sessions},
                        self.heartbeat_s)

    # ---- public properties --------------------------------------------------------------------
    @property
    def job_dir(self) -> Optional[str]:
        """The running job's directory (created empty on claim), else ``None``. What the job
        writes there is committed on its branch and, at the finish, lands on master as
        ``updates/<ab>/<cd>/<slug>/`` (:func:`distribute.protocol.job_path`). It lies beside the
        checkout, in ``<path>/.distribute-job/<slug>``, so that a big master costs nothing."""
        if self.running_job is None:
            return None
        return os.path.join(self.path, JOB_WORKDIR, protocol.job_slug(self.running_job))

    def include_paths(self, *paths: str) -> None:
        """Check out ``paths`` of ``master`` (e.g. other jobs' ``updates/<slug>``) in this copy:
        a slim copy holds only the ledger and the running job's directory; other directories are
        fetched by this call and stay checked out (a full copy has everything already)."""
        for path in paths:
            if not isinstance(path, str) or not path.strip("/") or path.startswith("-") or any(
                    part in ("..", ".git") for part in path.split("/")):
                raise ValueError(f"not a path inside the repository: {path!r}")
        self._check_out_paths([p.strip("/") for p in paths])

    @property
    def inputs(self) -> dict[str, str]:
        """``{parent job: local path of its result directory}`` for the running job: every job
        it was queued after (``then``, ``add --after``), checked out at its claim."""
        return dict(self._pipeline.inputs)

    def then(self, job: str, after: Sequence[str] = ()) -> None:
        """Record follow-up ``job`` of the running job: it is queued in the same commit as this
        job's finish (nothing if it fails or is given back), waiting until this job and the jobs
        ``after`` (other follow-ups of this finish, or jobs on the remote) are done."""
        self._pipeline.then(require_running(self), job, after)

    def add_close_hook(self, hook: CloseHook) -> None:
        """Call ``hook(worker, job, reason)`` under the lock whenever a job is finished
        (``reason`` is ``None``) or failed, in the fresh checkout of ``master`` at ``worker.path``
        (after the merge and the ledger update). Whatever the hook changes there is committed
        with the finish, in the same commit and lock hold. A hook that raises aborts the finish
        (master untouched, the job stays running). It may run more than once for one finish
        when master moved meanwhile (each time on a fresh checkout).
        """
        self._close_hooks.append(hook)

    # ---- claiming -----------------------------------------------------------------------------
    def get_next_job(self, next_job_func: NextJobFunc) -> Optional[str]:
        """Run ``next_job_func`` under the remote lock and claim the job it returns.

        The function sees ``self.path`` checked out at the newest ``master``; whatever it changes
        there is committed together with the claim. Returns the job, or ``None`` when the function
        returns ``None``. Raises :class:`LockLostError` if the lock was broken meanwhile (nothing
        written). With a :func:`~distribute.claims.combinable` function, whoever holds the lock
        may claim for it while it waits in line, and it serves the others when it holds the lock.
        """
        self._require_no_job()
        return self._start(self._asker.claim(lambda txn: self._claim(txn, next_job_func),
                                             next_job_spec(next_job_func)))

    def _claim(self, txn: Transaction, func: Optional[NextJobFunc]) -> Optional[list[str]]:
        """The claim edit (none without ``func``), then serving the waiters in line. Returns
        ``[job, branch]`` (the branch may still be renamed during the push, when an earlier run
        of the same job by this worker kept that name)."""
        job, attempt = claim(self, txn, func) if func else (None, 0)
        serve_waiters(self, txn, func)
        if job is None:
            return None
        claimed = [job, job_branch(self.name, job, attempt)]
        txn.new_branches.append(f"refs/heads/{claimed[1]}")
        txn.refs.append(self._heartbeat.update(self._lock.value))

        def rename_taken_branch(refused: dict[str, str]) -> bool:
            taken = f"refs/heads/{claimed[1]}"
            if set(refused) != {taken} or claimed[1] != job_branch(self.name, job, attempt):
                return False
            claimed[1] += f"-{uuid.uuid4().hex[:6]}"
            txn.new_branches = [f"refs/heads/{claimed[1]}"]
            return True

        txn.fix_refused = rename_taken_branch
        return claimed

    def _start(self, claimed: Optional[list[str]]) -> Optional[str]:
        """After a claim landed: on the job branch, job directory made, heartbeat beating."""
        if claimed is None:
            return None
        job, branch = claimed[:2]
        self.running_job, self.working_branch = job, branch
        self._branch_sha = self._claim_head = self.clone.resolve("HEAD")
        if len(claimed) > 2:
            self._branch_sha = ""  # claimed for us by a holder: the first push creates the branch
        self.clone.checkout_branch_at(branch, "HEAD")
        self._drop_job_dir()
        Path(self.job_dir or "").mkdir(parents=True)
        self._heartbeat.start()
        log.info("%s took job %r", self.name, job)
        self.attempt = resume_job(self)
        self._pipeline.check_out_inputs(self, job)
        return job

    # ---- working on a job ---------------------------------------------------------------------
    def commit_update(self, message: Optional[str] = None) -> bool:
        """Commit every change in the work tree on the job branch and push that branch;
        ``False`` when there was nothing to commit."""
        job, branch = self._require_job()
        if not self._commit_job(message or f"{self.name} update on job {job}"):
            return False
        if not self._push_branch(self._heartbeat.update()):
            raise RefRejectedError({f"refs/heads/{branch}": "was changed by someone else"})
        return True

    def _push_branch(self, *extra: RefUpdate) -> bool:
        """Push the job branch (and ``extra``); a branch not created yet whose name is taken on
        the remote (an earlier attempt kept it) gets a fresh suffix."""
        for _ in range(2):
            if self.clone.push([self._branch_update(), *extra]):
                self._branch_sha = self.clone.resolve(f"refs/heads/{self.working_branch}")
                return True
            if self._branch_sha != "":
                return False
            renamed = f"{self.working_branch}-{uuid.uuid4().hex[:6]}"
            self.clone.rename_branch(renamed)
            self.working_branch = renamed
        return False

    def _branch_update(self) -> RefUpdate:
        """Move the remote job branch to the local one (compare-and-swap on its last push)."""
        return RefUpdate(f"refs/heads/{self.working_branch}",
                         self.clone.resolve(f"refs/heads/{self.working_branch}"),
                         expect=self._branch_sha)

    def finish_job(self, next_job_func: Optional[NextJobFunc] = None) -> Optional[str]:
        """Merge the job branch into master (``--no-ff``) and move the job from running to done;
        the job branch is deleted on the remote in the same push (the merge keeps its commits).

        A merge conflict raises :class:`MergeConflictError` naming the files; master is untouched,
        the branch kept, and the job stays running (``fail_job`` it or fix and retry).
        With ``next_job_func``, the next job is claimed in the same lock hold and returned, as
        ``get_next_job`` would (half the round trips of finishing and claiming separately).
        On any failure the job stays running on this worker, so the call can simply be repeated.
        """
        self._require_job()
        return self._close(None, next_job_func)

    def fail_job(self, reason: str, next_job_func: Optional[NextJobFunc] = None) -> Optional[str]:
        """Move the running job to ``failed.txt`` with ``reason``; its branch is kept on the remote.
        ``next_job_func`` works as for :meth:`finish_job`."""
        self._require_job()
        return self._close(" ".join(str(reason).split()) or "failed", next_job_func)

    def _close(self, reason: Optional[str], next_job_func: Optional[NextJobFunc],
               ask: bool = True) -> Optional[str]:
        job, _ = self._require_job()
        answer = self._asker.settle()  # an earlier request of this close, whose outcome we missed
        if "close" in answer:
            return self._answered(job, reason, next_job_func, answer)
        self._commit_job(f"{self.name} update on job {job}")
        request = self._close_request(job, reason, next_job_func) if ask else None
        job, branch = self._require_job()  # (a branch pushed for the request may be renamed)
        branch_update = self._branch_update()
        pending = [branch_update] if branch_update.new != branch_update.expect else []
        txns: list[Transaction] = []

        def edit(txn: Transaction) -> Optional[list[str]]:
            txns.append(txn)  # (it beats on: should the lock be broken, the job is not silent)
            self._close_edit(txn, job, branch, reason)
            if reason is None and self._branch_sha:  # merged: its commits stay reachable
                txn.optional.append(
                    RefUpdate(f"refs/heads/{branch}", None, expect=self._branch_sha))
            txn.checkpoint()  # the close lands even if the next-job function raises
            self.running_job = None  # (the next claim must not treat it as ours)
            try:
                return self._claim(txn, next_job_func)
            finally:
                self.running_job = job

        try:  # (the heartbeat goes on while we wait in line, and for a job claimed for us)
            claimed, served = self._asker.ask(edit, request, pending if reason is not None else [],
                                              branch_update.new)
        except JobStateError:  # done by another worker while we were silent: not ours any more
            if pending:
                self.clone.push(pending)  # our result stays on our branch
            self._job_over()
            raise
        except BaseException:
            if txns and txns[-1].checkpoint_landed:  # closed; only the next claim failed
                self._job_over()
            else:
                self._keep_job_alive(pending)
            raise
        if served is not None:  # a holder took our request out of line
            if "close" not in served:  # not served after all: do it ourselves
                return self._close(reason, next_job_func, ask=False)
            return self._answered(job, reason, next_job_func, served)
        self._drop_job_dir()
        self.running_job = self.working_branch = self._branch_sha = None
        if claimed is None:
            self._heartbeat.stop()
        log.info("%s %s job %r", self.name, "finished" if reason is None else "failed", job)
        return self._start(claimed)

    def _answered(self, job: str, reason: Optional[str], next_job_func: Optional[NextJobFunc],
                  answer: dict[str, str]) -> Optional[str]:
        """Our job was closed for us as asked; take the job claimed with it, or claim one."""
        self._drop_job_dir()
        self.running_job = self.working_branch = self._branch_sha = None
        log.info("%s closed job %r (served: %s)", self.name, job, reason or "finished")
        claimed = self._asker.granted(answer.get("claim"))  # (its heartbeat thread goes on)
        if claimed is None:
            self._heartbeat.stop()
            if next_job_func is not None:  # our function says, under the lock
                claimed = self._writer.transact(lambda txn: self._claim(txn, next_job_func))
        return self._start(claimed)

    def _close_edit(self, txn: Transaction, job: str, branch: str, reason: Optional[str]) -> None:
        """Merge the job branch (unless failing) and move the job to done or failed."""
        close_own_job(txn, job, self.name, self.session, branch, reason, self._claim_head,
                      [functools.partial(hook, self, job, reason) for hook in self._close_hooks],
                      self._pipeline.jobs)

    def _close_request(self, job: str, reason: Optional[str],
                       next_job_func: Optional[NextJobFunc]) -> Optional[Request]:
        """The request a holder may serve for this close, or ``None`` when only we can do it
        (a close hook must run, follow-ups must be queued, the next-job function is not
        combinable; see :func:`~distribute.serve.close_request`)."""
        spec = next_job_spec(next_job_func)
        if self._close_hooks or (next_job_func is not None and spec is None) or (
                reason is None and self._pipeline.jobs):
            return None
        if reason is not None and self._branch_update().new != self._branch_sha and \
                not self._push_branch():  # a failed job's branch is kept: on the remote first
            return None
        return close_request(self.workspace, Request(
            self.name, self.session, spec, job, self.working_branch or "", "",
            self._branch_sha or "", reason, new_request_id()), self._claim_head)

    def _commit_job(self, message: str) -> bool:
        """Commit the job's directory on its branch (see :mod:`distribute.jobbranch`)."""
        job, branch = self._require_job()
        return commit_job_dir(self.clone, branch, job_path(job, self.workspace.layout),
                              self.job_dir or "", message)

    def _job_over(self) -> None:  # closed, or not ours any more
        self._heartbeat.stop()
        self.running_job = self.working_branch = self._branch_sha = None

    def _drop_job_dir(self) -> None:
        """Remove the running job's working directory (its files are committed, or given up)."""
        if self.job_dir is not None:
            shutil.rmtree(self.job_dir, ignore_errors=True)

    def _keep_job_alive(self, pending: list[RefUpdate]) -> None:
        """After a finish that did not land: back on the job branch, beating, work pushed."""
        self.clone.force_checkout(self.working_branch or "HEAD")
        Path(self.job_dir or self.path).mkdir(parents=True, exist_ok=True)
        self._heartbeat.start()
        if pending:
            try:
                if self.clone.push(pending):
                    self._branch_sha = pending[0].new
            except Exception as exc:  # noqa: BLE001 - the next finish pushes it again
                log.warning("%s could not push job branch %s: %s", self.name,
                            self.working_branch, redact(exc))

    def give_back_job(self) -> None:
        """Put the running job back at the head of ``jobs.txt`` at once (e.g. on SIGTERM). Work
        already committed stays on the job branch; the attempt is not counted."""
        job, _ = self._require_job()
        self._commit_job(f"{self.name} update on job {job}")

        def edit(ledger: Ledger, root: Path) -> str:
            if ledger.give_back(job, self.name, self._require_job()[1]):
                ledger.write(root, queue=True)
            return protocol.commit_message(self.name, GAVE_BACK, f"{self.name} gave back job {job}",
                                           job)

        self._heartbeat.stop()
        branch_update = self._branch_update()
        extra = [branch_update] if branch_update.new != branch_update.expect else []
        try:
            self._update_master(edit, extra)
        except BaseException:
            self._keep_job_alive(extra)
            raise
        self._drop_job_dir()
        self._job_over()

    def update_master(self, edit: Callable[[Ledger, Path], Optional[str]],
                      extra: Optional[list[RefUpdate]] = None) -> Optional[str]:
        """Change master under the lock: ``edit(ledger, root)`` edits files in the fresh checkout
        at ``root`` (use ``ledger.write(root, queue=True)``) and returns the commit message, or
        ``None`` to change nothing. The commit is pushed atomically with the lock's release.
        ``edit`` may be called again on a newer master if master moved meanwhile.
        In a slim copy, call :meth:`include_paths` first to edit files outside the ledger.
        """
        self._require_no_job()
        return self._update_master(edit, extra or [])

    def _update_master(self, edit: Callable[[Ledger, Path], Optional[str]],
                       extra: list[RefUpdate]) -> Optional[str]:
        def body(txn: Transaction) -> Optional[str]:
            message = edit(self.workspace.ledger(), Path(self.path))
            if not (message and txn.commit(message)):
                self.clone.reset_hard(txn.base)
                return None
            return message

        return self._writer.transact(body, extra)

    def transact(self, edit: Callable[[Transaction], T]) -> T:
        """Run ``edit`` as one write transaction on master (:meth:`MasterWriter.transact`), for
        code that builds its commits itself; :meth:`update_master` is simpler for ledger edits."""
        self._require_no_job()
        return self._writer.transact(edit)

    def master_moved(self) -> bool:
        """One cheap look at the remote (a single ref listing, no lock): has ``master`` moved
        since this worker last synced?"""
        return self.clone.ls_remote(MASTER, cheap=True).get(MASTER) != self.workspace.master

    def snapshot(self) -> dict[str, Any]:
        """Fetch and describe the remote without touching the work tree: returns ``{"ledger":
        Ledger, "lock": None or {"holder", "held_s"}, "heartbeats": {worker: age_s}}`` (see
        :func:`distribute.status.read_snapshot`)."""
        return read_snapshot(self.clone, self.observer)

    # ---- helpers ------------------------------------------------------------------------------
    def _require_no_job(self) -> None:
        if self.running_job is not None:
            raise JobStateError(f"job {self.running_job!r} is still running: finish or fail it")

    def _require_job(self) -> tuple[str, str]:
        if self.running_job is None or self.working_branch is None:
            raise JobStateError("no job is running on this worker")
        return self.running_job, self.working_branch

    def _check_out_paths(self, more: Optional[list[str]] = None) -> None:
        """In a slim copy, check out the ledger and the paths included so far (plus ``more``)."""
        included = self.clone.sparse_paths()
        if included is not None:
            self.clone.set_sparse_paths([*included, *(more or [])])

    def close(self) -> None:
        """Stop background threads and release the local copy (the running job stays running).
        Without a running job, the heartbeat ref is deleted (best effort)."""
        self._heartbeat.stop()
        try:
            if self.running_job is None and self._heartbeat.ref in self.workspace.remote_refs:
                self.clone.push([RefUpdate(self._heartbeat.ref, None, expect=None)])
        except Exception as exc:  # noqa: BLE001 - others prune it after a few job leases
            log.debug("could not delete %s: %s", self._heartbeat.ref, redact(exc))
        finally:
            self._file_lock.release()
