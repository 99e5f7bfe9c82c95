"""The worker: one process's state machine of a job — claimed, checkpointed on its branch, then
finished (merged into master), failed or given back — built on the write transaction
(:class:`~distribute.transaction.MasterWriter`); see ``docs/protocol.md``."""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar, Union

from . import protocol, settings
from .answers import Asker, Claimed
from .batch import Finished, Held, JobClock, batch_size
from .bigfiles import LargeFiles
from .claims import NextJobFunc, claim, fair_share, next_job_spec
from .closing import close_finished, close_jobs, defer, keep_job_alive, keep_results
from .coordination import Heartbeat, Observer, RemoteLock
from .exceptions import JobStateError, RefRejectedError
from .jobbranch import commit_job_dir, commit_kept, push_checkpoint, resolve_checked_out, resume_job
from .ledger import Ledger
from .pipeline import FollowUps, require_running
from .protocol import GAVE_BACK, MASTER, job_branch, job_path
from .redact import redact
from .repo import RefUpdate
from .repo.clone import normalize_url
from .repo.localcopy import lock_local_copy, prepare_clone
from .serve import serve_waiters
from .sessions import check_name_free, take_over_copy
from .status import read_snapshot
from .transaction import MasterWriter, Transaction
from .workspace import Workspace

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
            if getattr(self, "clone", None) is not None:
                self.clone.close_readers()
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
        self.workspace.own_refs = {self._heartbeat.ref}
        self.clone.exclude(f"/{JOB_WORKDIR}/")
        #: Files over the size limit: the limit, and ``store``, where they go instead of git (e.g.
        #: :func:`distribute.hub.keep_large_files`; ``None``: such a file fails its job).
        self.large_files = LargeFiles(self.clone.remote_url())
        self._writer = MasterWriter(self.workspace, self._lock)
        self.running_job: Optional[str] = None
        self.working_branch: Optional[str] = None
        self._branch_sha: Optional[str] = None
        self._claim_head: Optional[str] = None  # the master commit the running job was claimed on
        self.attempt = 0  #: the running job's attempt, 1 for the first (see jobbranch.resume_job)
        #: Jobs claimed at once at most (see :mod:`distribute.batch`): 1 unless set; the worker
        #: loop sets ``DISTRIBUTE_MAX_BATCH``. Use ``finish_job(next_job_func)`` with batches.
        self.max_batch = 1
        self.batch_s = settings.seconds_setting("DISTRIBUTE_BATCH_S")
        self._held: list[Held] = []  # claimed for us, not started
        self._finished: list[Finished] = []  # finished here, closed with the batch's last job
        self._clock = JobClock()
        #: The jobs whose finish landed on master during the last claim or close call.
        self.landed: list[str] = []
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
        fetched by this call and stay checked out (a full copy has everything already). A pointer
        to a file kept on the Hub (``<name>.hub.json``) gets its file ``<name>`` beside it, from
        :attr:`large_files`'s store (its SHA-256 checked)."""
        for path in paths:
            if not isinstance(path, str) or not path.strip("/") or path.startswith("-") or any(
                    part in ("..", ".git") for part in path.split("/")):
                raise ValueError(f"not a path inside the repository: {path!r}")
        self._check_out_paths([p.strip("/") for p in paths])
        resolve_checked_out(self, [p.strip("/") for p in paths])

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
        self.landed = []
        if self._held:  # the next job of our batch: nothing to ask the remote
            return self._start_held()
        return self._start(self._asker.claim(lambda txn: self._claim(txn, next_job_func),
                                             next_job_spec(next_job_func), self._batch_size()))

    def holds(self, job: str) -> bool:
        """Whether ``job`` is this worker's: running, waiting in its batch, or finished here and
        not closed on the remote yet."""
        return job == self.running_job or any(job == held.job for held in self._held) or any(
            job == done.job for done in self._finished)

    def _batch_size(self) -> int:
        """Jobs to claim now (:func:`distribute.batch.batch_size`; in a hold: after requeues)."""
        if self.max_batch <= 1:
            return 1
        return batch_size(self.max_batch, self.batch_s, self._clock.mean_s,
                          fair_share(self.workspace, self.name))

    def _claim(self, txn: Transaction, func: Optional[NextJobFunc],
               own: bool = True) -> Optional[Claimed]:
        """The claim edit (none without ``func`` or ``own``), then serving the waiters in line.
        Returns ``[[job, branch], …]`` (a branch may still be renamed during the push, when an
        earlier run of the same job by this worker kept that name)."""
        jobs = claim(self, txn, func, self._batch_size) if func and own else []
        serve_waiters(self, txn, func)
        if not jobs:
            return None
        claimed = [[job, job_branch(self.name, job, attempt)] for job, attempt in jobs]
        first = {f"refs/heads/{branch}" for _, branch in claimed}
        txn.new_branches.extend(f"refs/heads/{branch}" for _, branch in claimed)
        txn.refs.append(self._heartbeat.update(self._lock.value))

        def rename_taken_branches(refused: dict[str, str]) -> bool:
            ours = {f"refs/heads/{c[1]}": c for c in claimed}
            if not refused or not set(refused) <= set(ours) & first:
                return False  # (a name is renamed once at most)
            for ref in refused:
                ours[ref][1] += f"-{uuid.uuid4().hex[:6]}"
            txn.new_branches = [f"refs/heads/{branch}" for _, branch in claimed]
            return True

        txn.fix_refused = rename_taken_branches
        return claimed

    def _start(self, claimed: Optional[Claimed]) -> Optional[str]:
        """After a claim landed: the batch's jobs are held, and the first one starts."""
        if not claimed:
            return None
        head = self.clone.resolve("HEAD") or ""
        self._held = [Held(c[0], c[1], head, len(c) > 2) for c in claimed]
        return self._start_held()

    def _start_held(self) -> str:
        """Start the batch's next job: on its branch, job directory made, heartbeat beating."""
        held = self._held.pop(0)
        self.running_job, self.working_branch = held.job, held.branch
        self._claim_head = held.claim_head
        # (claimed for us by a holder: the first push creates the branch)
        self._branch_sha = "" if held.granted else held.claim_head
        self.clone.checkout_branch_at(held.branch, held.claim_head)
        self._drop_job_dir()
        Path(self.job_dir or "").mkdir(parents=True)
        self._heartbeat.start()
        self._clock.started()
        log.info("%s took job %r", self.name, held.job)
        self.attempt = resume_job(self)
        self._pipeline.check_out_inputs(self, held.job)
        return held.job

    # ---- working on a job ---------------------------------------------------------------------
    def commit_update(self, message: Optional[str] = None) -> bool:
        """Commit every change in the work tree on the job branch and push that branch;
        ``False`` when there was nothing to commit."""
        job, branch = self._require_job()
        message = message or f"{self.name} update on job {job}"
        if not self._commit_job(message):
            return False
        if not push_checkpoint(self, message):
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
        In a batch (:attr:`max_batch`), a finish with ``next_job_func`` while jobs of the batch
        wait commits the result on the job branch only and starts the next job at once; the
        close lands with that of the batch's last job (:attr:`landed` names the jobs whose
        finish landed in a call).
        """
        self._require_job()
        self.landed = []
        if next_job_func is not None and self._held and not self._close_hooks \
                and not self._pipeline.jobs:
            return defer(self)
        return close_jobs(self, None, next_job_func)

    def fail_job(self, reason: str, next_job_func: Optional[NextJobFunc] = None) -> Optional[str]:
        """Move the running job to ``failed.txt`` with ``reason``; its branch is kept on the remote.
        ``next_job_func`` works as for :meth:`finish_job`."""
        self._require_job()
        return close_jobs(self, " ".join(str(reason).split()) or "failed", next_job_func)

    def _commit_job(self, message: str) -> bool:
        """Commit the job's directory on its branch (see :mod:`distribute.jobbranch`)."""
        job, branch = self._require_job()
        return commit_job_dir(self.clone, branch, job_path(job, self.workspace.layout),
                              self.job_dir or "", message, job, self.large_files)

    def _job_over(self) -> None:  # closed, or not ours any more
        self._heartbeat.stop()
        self.running_job = self.working_branch = self._branch_sha = None

    def _drop_job_dir(self) -> None:
        """Remove the running job's working directory (its files are committed, or given up)."""
        if self.job_dir is not None:
            shutil.rmtree(self.job_dir, ignore_errors=True)

    def give_back_job(self) -> None:
        """Put the running job back at the head of ``jobs.txt`` at once (e.g. on SIGTERM). Work
        already committed stays on the job branch; the attempt is not counted. Jobs of its
        batch go back too, behind it (those finished here are closed first)."""
        job, _ = self._require_job()
        commit_kept(self, f"{self.name} update on job {job}")  # (files over the limit left out)
        self.release_batch()

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
            keep_job_alive(self, extra)
            raise
        self._drop_job_dir()
        self._job_over()

    def release_batch(self, give_back: bool = True) -> None:
        """Close the jobs of the batch finished here and give back the ones not started (unless
        ``give_back`` is false), in one hold (the worker loop does this when it stops,
        :meth:`close` too). Work of a job done meanwhile by another worker stays on its
        branch."""
        finished, lost = list(self._finished), list[Finished]()
        held = list(self._held) if give_back else []
        if not finished and not held:
            return

        def edit(txn: Transaction) -> None:
            lost[:] = [done for done in finished if not close_finished(self, txn, done)]
            for job in reversed(held):  # (they go back to the head of the queue in their order)
                ledger = self.workspace.ledger()
                if ledger.give_back(job.job, self.name):
                    ledger.write(self.workspace.root, queue=True)
                    txn.commit(protocol.commit_message(
                        self.name, GAVE_BACK, f"{self.name} gave back job {job.job} (not started)",
                        job.job))
                if not job.granted:  # (created by our claim, never pushed since)
                    txn.optional.append(RefUpdate(f"refs/heads/{job.branch}", None,
                                                  expect=job.claim_head))

        self._writer.transact(edit)
        self._finished = []
        self._held = [job for job in self._held if job not in held]
        self.landed = [done.job for done in finished if done not in lost]
        keep_results(self, lost)
        if self.running_job is None:
            self._heartbeat.stop()
        log.info("%s closed %d finished job(s) of its batch and gave back %d", self.name,
                 len(finished) - len(lost), len(held))

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
        Without a running job, the heartbeat ref is deleted (best effort). Jobs of a batch
        finished here are closed and those not started given back first (:meth:`release_batch`;
        if that fails they come back to the queue once the heartbeat has been silent)."""
        try:
            self.release_batch()
        except Exception as exc:  # noqa: BLE001 - others requeue them after a job lease
            log.warning("%s could not release its batch: %s", self.name, redact(exc))
        self._heartbeat.stop()
        try:
            if self.running_job is None and self._heartbeat.ref in self.workspace.remote_refs:
                self.clone.push([RefUpdate(self._heartbeat.ref, None, expect=None)])
        except Exception as exc:  # noqa: BLE001 - others prune it after a few job leases
            log.debug("could not delete %s: %s", self._heartbeat.ref, redact(exc))
        finally:
            self.clone.close_readers()  # (the copy is free for the next process)
            self._file_lock.release()
