"""The worker: one process's state machine of a job — claimed, checkpointed on its branch, then
finished (merged into master), failed or given back — built on the write transaction.

Every change to ``master`` goes through :class:`~distribute.transaction.MasterWriter`; see the
``docs/protocol.md`` and :mod:`distribute.protocol`.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

from . import settings
from .archive import roll_into_segment
from .claims import NextJobFunc, claim
from .coordination import Heartbeat, Observer, RemoteLock
from .exceptions import JobStateError, RefRejectedError, WorkerNameError
from .jobbranch import commit_job_dir, merge_job, merged_fast
from .ledger import Ledger
from .protocol import (FAILED, FINISHED, GAVE_BACK, MASTER, check_worker_name, commit_message,
                       default_worker_name, finish_subject, heartbeat_ref, job_branch, job_path,
                       job_slug, new_session, tracking_ref)
from .redact import redact
from .repo import RefUpdate
from .repo.clone import normalize_url
from .repo.localcopy import lock_local_copy, prepare_clone
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
    ``next_job_timeout_s`` default to the ``DISTRIBUTE_LOCK_LEASE_S`` (60),
    ``DISTRIBUTE_JOB_LEASE_S`` (600), ``DISTRIBUTE_MAX_ATTEMPTS`` (3), ``DISTRIBUTE_HEARTBEAT_S``
    (a fifth of the job lease), ``DISTRIBUTE_POLL_MAX_S`` (1) and
    ``DISTRIBUTE_NEXT_JOB_TIMEOUT_S`` (300) settings.
    """

    def __init__(self, path: Union[str, os.PathLike[str]], name: Optional[str] = None, *,
                 remote_url: Optional[str] = None, lock_lease_s: Optional[float] = None,
                 job_lease_s: Optional[float] = None, max_attempts: Optional[int] = None,
                 heartbeat_s: Optional[float] = None, poll_max_s: Optional[float] = None,
                 next_job_timeout_s: Optional[float] = None) -> None:
        self.name = check_worker_name(name or default_worker_name())
        self.path = str(Path(path).resolve())
        self.lock_lease_s = settings.seconds("DISTRIBUTE_LOCK_LEASE_S", 60, lock_lease_s)
        self.job_lease_s = settings.seconds("DISTRIBUTE_JOB_LEASE_S", 600, job_lease_s)
        self.max_attempts = settings.count("DISTRIBUTE_MAX_ATTEMPTS", 3, max_attempts, zero_ok=False)
        self.heartbeat_s = settings.seconds("DISTRIBUTE_HEARTBEAT_S", self.job_lease_s / 5,
                                            heartbeat_s)
        poll_max = settings.seconds("DISTRIBUTE_POLL_MAX_S", 1.0, poll_max_s)
        self.next_job_timeout_s = settings.seconds("DISTRIBUTE_NEXT_JOB_TIMEOUT_S", 300,
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
        self.session = new_session()
        #: Sessions that provably ended: the one that used this local copy before us.
        self.dead_sessions = self._take_over_copy()
        self.observer = Observer()
        self._lock = RemoteLock(self.clone, self.name, self.lock_lease_s, self.observer,
                                poll_max_s=poll_max)
        self._heartbeat = Heartbeat(self.clone, self.name, self.heartbeat_s, self.session)
        self.workspace = Workspace(self.clone, self.observer, self.name)
        self.clone.exclude(f"/{JOB_WORKDIR}/")
        self._writer = MasterWriter(self.workspace, self._lock)
        self.running_job: Optional[str] = None
        self.working_branch: Optional[str] = None
        self._branch_sha: Optional[str] = None
        self._claim_head: Optional[str] = None  # the master commit the running job was claimed on
        self._close_hooks: list[CloseHook] = []
        self.workspace.sync()
        self._check_name_free()

    # ---- public properties --------------------------------------------------------------------
    @property
    def job_dir(self) -> Optional[str]:
        """The running job's directory (created empty on claim), else ``None``. What the job
        writes there is committed on its branch and, at the finish, lands on master as
        ``updates/<ab>/<cd>/<slug>/`` (:func:`distribute.protocol.job_path`). It lies beside the
        checkout, in ``<path>/.distribute-job/<slug>``, so that a big master costs nothing."""
        if self.running_job is None:
            return None
        return os.path.join(self.path, JOB_WORKDIR, job_slug(self.running_job))

    def include_paths(self, *paths: str) -> None:
        """Check out ``paths`` of ``master`` (e.g. other jobs' ``updates/<slug>``) in this copy.

        A slim copy holds only the top-level files (the ledger) and the running job's directory;
        other directories are fetched on demand by this call and stay checked out from then on.
        A full copy (``DISTRIBUTE_SLIM_CLONE=0``) has everything already.
        """
        for path in paths:
            if not isinstance(path, str) or not path.strip("/") or path.startswith("-") or any(
                    part in ("..", ".git") for part in path.split("/")):
                raise ValueError(f"not a path inside the repository: {path!r}")
        self._check_out_paths([p.strip("/") for p in paths])

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
        returns ``None``. Raises :class:`LockLostError` if the lock was broken meanwhile (then
        nothing was written and the function's changes are discarded).
        """
        if self.running_job is not None:
            raise JobStateError(f"job {self.running_job!r} is still running: finish or fail it first")
        return self._start(self._writer.transact(lambda txn: self._claim(txn, next_job_func)))

    def _claim(self, txn: Transaction, func: NextJobFunc) -> Optional[list[str]]:
        """The claim edit. Returns ``[job, branch]`` (the branch may still be renamed during the
        push, when an earlier run of the same job by this worker kept that name)."""
        job, attempt = claim(self, txn, func)
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
        job, branch = claimed
        self.running_job, self.working_branch = job, branch
        self._branch_sha = self._claim_head = self.clone.resolve("HEAD")
        self.clone.git("checkout", "--quiet", "-B", branch, "HEAD")
        self._drop_job_dir()
        Path(self.job_dir or "").mkdir(parents=True)
        self._heartbeat.start()
        log.info("%s took job %r", self.name, job)
        return job

    # ---- working on a job ---------------------------------------------------------------------
    def commit_update(self, message: Optional[str] = None) -> bool:
        """Commit every change in the work tree on the job branch and push that branch.

        Returns ``False`` when there was nothing to commit.
        """
        job, branch = self._require_job()
        if not self._commit_job(message or f"{self.name} update on job {job}"):
            return False
        if not self.clone.push([self._branch_update(), self._heartbeat.update()]):
            raise RefRejectedError({f"refs/heads/{branch}": "was changed by someone else"})
        self._branch_sha = self.clone.resolve("HEAD")
        return True

    def _branch_update(self) -> RefUpdate:
        """Move the remote job branch to the local one (compare-and-swap on its last pushed value)."""
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

        ``next_job_func`` works as for :meth:`finish_job`.
        """
        self._require_job()
        return self._close(" ".join(str(reason).split()) or "failed", next_job_func)

    def _close(self, reason: Optional[str], next_job_func: Optional[NextJobFunc]) -> Optional[str]:
        job, branch = self._require_job()
        self._commit_job(f"{self.name} update on job {job}")
        branch_update = self._branch_update()
        pending = [branch_update] if branch_update.new != branch_update.expect else []

        txns: list[Transaction] = []

        def edit(txn: Transaction) -> Optional[list[str]]:
            txns.append(txn)
            self._close_edit(txn, job, branch, reason)
            if reason is None:  # merged: the branch's commits stay reachable from master
                txn.optional.append(RefUpdate(f"refs/heads/{branch}", None, expect=self._branch_sha))
            if next_job_func is None:
                return None
            txn.checkpoint()  # the finish lands even if the next-job function raises
            self.running_job = None  # (the next claim must not treat it as ours)
            try:
                return self._claim(txn, next_job_func)
            finally:
                self.running_job = job

        self._heartbeat.stop()  # nobody requeues our job while we hold the lock
        try:
            claimed = self._writer.transact(edit, pending if reason is not None else [])
        except JobStateError:  # done by another worker while we were silent: not ours any more
            if pending:
                self.clone.push(pending)  # our result stays on our branch
            self.running_job = self.working_branch = self._branch_sha = None
            raise
        except BaseException:
            if txns and txns[-1].checkpoint_landed:  # closed; only the next claim failed
                self.running_job = self.working_branch = self._branch_sha = None
            else:
                self._keep_job_alive(pending)
            raise
        self._drop_job_dir()
        self.running_job = self.working_branch = self._branch_sha = None
        log.info("%s %s job %r", self.name, "finished" if reason is None else "failed", job)
        return self._start(claimed)

    def _close_edit(self, txn: Transaction, job: str, branch: str, reason: Optional[str]) -> None:
        """Merge the job branch (unless failing) and move the job to done or failed."""
        ledger = self.workspace.ledger()
        entry = ledger.running_entry(job)
        if (entry is None or entry.worker != self.name) and ledger.is_done(job):
            raise JobStateError(f"job {job!r} was already done by another worker; "
                                f"this result stays on branch {branch}")
        if reason is None:
            merge_job(self.clone, job, job_path(job, self.workspace.layout), self._claim_head,
                      branch)
        amend = reason is None and merged_fast(self.clone)
        queue_before = list(ledger.queued)
        ledger.close(job, self.name, reason, self.session)
        archived = ledger.roll()
        ledger.write(Path(self.path), queue=ledger.queued != queue_before)
        for hook in self._close_hooks:
            hook(self, job, reason)
        subject = finish_subject(self.name, job) if reason is None else \
            f"{self.name} failed job {job}: {reason[:200]}"
        txn.commit(commit_message(self.name, FINISHED if reason is None else FAILED, subject, job),
                   amend)
        roll_into_segment(self.clone, archived)  # (in the same commit)

    def _commit_job(self, message: str) -> bool:
        """Commit the job's directory on its branch (see :mod:`distribute.jobbranch`)."""
        job, branch = self._require_job()
        return commit_job_dir(self.clone, branch, job_path(job, self.workspace.layout),
                              self.job_dir or "", message)

    def _drop_job_dir(self) -> None:
        """Remove the running job's working directory (its files are committed, or given up)."""
        if self.job_dir is not None:
            shutil.rmtree(self.job_dir, ignore_errors=True)

    def _keep_job_alive(self, pending: list[RefUpdate]) -> None:
        """After a finish that did not land: back on the job branch, beating, work pushed."""
        self.clone.git("checkout", "--quiet", "--force", self.working_branch or "HEAD", check=False)
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
        """Put the running job back at the head of ``jobs.txt`` at once (e.g. on SIGTERM).

        Work already committed stays on the job branch; the attempt is not counted.
        """
        job, _ = self._require_job()
        self._commit_job(f"{self.name} update on job {job}")

        def edit(ledger: Ledger, root: Path) -> str:
            entry = ledger.running_entry(job)
            if entry is not None and entry.worker == self.name:
                ledger.running.remove(entry)
                ledger.queued.insert(0, job)
                if entry.attempt > 1:
                    ledger.attempts[job] = entry.attempt - 1
                ledger.write(root, queue=True)
            return commit_message(self.name, GAVE_BACK, f"{self.name} gave back job {job}", job)

        self._heartbeat.stop()
        branch_update = self._branch_update()
        extra = [branch_update] if branch_update.new != branch_update.expect else []
        try:
            self._update_master(edit, extra)
        except BaseException:
            self._keep_job_alive(extra)
            raise
        self._drop_job_dir()
        self.running_job = self.working_branch = self._branch_sha = None

    def update_master(self, edit: Callable[[Ledger, Path], Optional[str]],
                      extra: Optional[list[RefUpdate]] = None) -> Optional[str]:
        """Change master under the lock: ``edit(ledger, root)`` edits files in the fresh checkout
        at ``root`` (use ``ledger.write(root, queue=True)``) and returns the commit message, or
        ``None`` to change nothing. The commit is pushed atomically with the lock's release.
        ``edit`` may be called again on a newer master if master moved meanwhile.
        In a slim copy, call :meth:`include_paths` first to edit files outside the ledger.
        """
        if self.running_job is not None:
            raise JobStateError(f"job {self.running_job!r} is still running: finish or fail it first")
        return self._update_master(edit, extra or [])

    def _update_master(self, edit: Callable[[Ledger, Path], Optional[str]],
                       extra: list[RefUpdate]) -> Optional[str]:
        def body(txn: Transaction) -> Optional[str]:
            message = edit(self.workspace.ledger(), Path(self.path))
            if not (message and txn.commit(message)):
                self.clone.git("reset", "--quiet", "--hard", txn.base)
                return None
            return message

        return self._writer.transact(body, extra)

    def transact(self, edit: Callable[[Transaction], T]) -> T:
        """Run ``edit`` as one write transaction on master (see
        :meth:`distribute.transaction.MasterWriter.transact`): for maintenance code that builds
        its commits itself; :meth:`update_master` is simpler for ledger edits."""
        if self.running_job is not None:
            raise JobStateError(f"job {self.running_job!r} is still running: finish or fail it first")
        return self._writer.transact(edit)

    def master_moved(self) -> bool:
        """One cheap look at the remote (a single ref listing, no lock): has ``master`` moved
        since this worker last synced?"""
        return self.clone.ls_remote(MASTER, cheap=True).get(MASTER) != self.workspace.master

    def snapshot(self) -> dict[str, Any]:
        """Fetch and describe the remote without touching the work tree.

        Returns ``{"ledger": Ledger, "lock": None or {"holder", "held_s"}, "heartbeats":
        {worker: age_s}}`` (see :func:`distribute.status.read_snapshot`).
        """
        return read_snapshot(self.clone, self.observer)

    # ---- helpers ------------------------------------------------------------------------------
    def _require_job(self) -> tuple[str, str]:
        if self.running_job is None or self.working_branch is None:
            raise JobStateError("no job is running on this worker")
        return self.running_job, self.working_branch

    def _check_out_paths(self, more: Optional[list[str]] = None) -> None:
        """In a slim copy, check out the ledger and the paths included so far (plus ``more``)."""
        included = self.clone.sparse_paths()
        if included is not None:
            self.clone.set_sparse_paths([*included, *(more or [])])

    def _take_over_copy(self) -> set[str]:
        """Record our session in the local copy; return the session that used it before (we hold
        the copy's file lock, so that process has ended)."""
        record = Path(self.path, ".git", "distribute-session")
        before = record.read_text(encoding="utf-8").strip() if record.exists() else ""
        record.write_text(self.session + "\n", encoding="utf-8")
        return {before} if before else set()

    def _check_name_free(self) -> None:
        """Refuse to start if a live process with our name holds running jobs: a running record
        of another session of ours whose heartbeat moved within three heartbeat intervals (by its
        commit time)."""
        for entry in self.workspace.ledger().running:
            if entry.worker != self.name or entry.session in ("", self.session, *self.dead_sessions):
                continue
            tracking = tracking_ref(heartbeat_ref(self.name, entry.session))
            if self.clone.resolve(tracking) is None:
                continue
            age = time.time() - float(self.clone.git("log", "-1", "--format=%ct", tracking) or 0)
            if age < 3 * self.heartbeat_s:
                raise WorkerNameError(
                    f"another worker process named {self.name!r} is alive (heartbeat {age:.0f}s "
                    f"ago) and runs job {entry.job!r}; choose another name, or wait "
                    f"{3 * self.heartbeat_s - age:.0f}s if that worker is dead")

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
