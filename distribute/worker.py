"""The worker: claims jobs under the remote lock, commits on a job branch, merges results into master.

Every change to ``master`` is made while holding the lock and pushed with ``--atomic`` together with
the lock's release, so a worker whose lock was broken cannot write (fencing). See the README's
"Remote layout and lock protocol" section for the full protocol.
"""
from __future__ import annotations

import inspect
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Optional, Union


from . import config
from .exceptions import (DistributeError, InvalidJobError, JobStateError, LockLostError,
                         MergeConflictError, NotInitializedError)
from .ledger import LEDGER_FILES, UPDATES_DIR, Ledger, check_job, job_slug
from .localcopy import (check_name_free, check_worker_name, default_worker_name,
                        lock_local_copy, prepare_clone)
from .lock import (COORD_PREFIX, TRACKING_PREFIX, Heartbeat, Observer, RemoteLock,
                   describe_coordination, heartbeat_ref)
from .redact import redact
from .remote import RefUpdate

log = logging.getLogger(__name__)

MASTER = "refs/heads/master"
ORIGIN_MASTER = "refs/remotes/origin/master"
_MAX_SKIPS = 100
NextJobFunc = Callable[..., Optional[str]]


class Worker:
    """One worker process using one local copy of the remote.

    ``lock_lease_s``, ``job_lease_s``, ``max_attempts`` and ``heartbeat_s`` default to the
    ``DISTRIBUTE_LOCK_LEASE_S`` (60), ``DISTRIBUTE_JOB_LEASE_S`` (600), ``DISTRIBUTE_MAX_ATTEMPTS`` (3)
    and ``DISTRIBUTE_HEARTBEAT_S`` (a fifth of the job lease) settings.
    """

    def __init__(self, path: Union[str, os.PathLike[str]], name: Optional[str] = None, *,
                 remote_url: Optional[str] = None, lock_lease_s: Optional[float] = None,
                 job_lease_s: Optional[float] = None, max_attempts: Optional[int] = None,
                 heartbeat_s: Optional[float] = None,
                 poll_max_s: Optional[float] = None) -> None:
        self.name = check_worker_name(name or default_worker_name())
        self.path = str(Path(path).resolve())
        self.lock_lease_s = config.get_float("DISTRIBUTE_LOCK_LEASE_S", 60, lock_lease_s)
        self.job_lease_s = config.get_float("DISTRIBUTE_JOB_LEASE_S", 600, job_lease_s)
        self.max_attempts = int(config.get_float("DISTRIBUTE_MAX_ATTEMPTS", 3, max_attempts))
        self.heartbeat_s = config.get_float("DISTRIBUTE_HEARTBEAT_S", self.job_lease_s / 5,
                                            heartbeat_s)
        poll_max = config.get_float("DISTRIBUTE_POLL_MAX_S", 1.0, poll_max_s)
        self._file_lock = lock_local_copy(Path(self.path))
        try:
            self.clone = prepare_clone(remote_url, Path(self.path), self.name)
        except BaseException:
            self._file_lock.release()
            raise
        self.observer = Observer()
        self._lock = RemoteLock(self.clone, self.name, self.lock_lease_s, self.observer,
                                poll_max_s=poll_max)
        self._heartbeat = Heartbeat(self.clone, self.name, self.heartbeat_s)
        self.running_job: Optional[str] = None
        self.working_branch: Optional[str] = None
        self._branch_sha: Optional[str] = None
        self._remote_refs: dict[str, str] = {}
        self._initialized = False
        self._close_hooks: list[Callable[["Worker", str, Optional[str]], None]] = []
        self._sync()
        check_name_free(self.clone, Ledger.read(Path(self.path)), self.name, self.heartbeat_s)

    # ---- public properties --------------------------------------------------------------------
    @property
    def job_dir(self) -> Optional[str]:
        """``<path>/updates/<job-slug>`` for the running job (created on claim), else ``None``."""
        if self.running_job is None:
            return None
        return os.path.join(self.path, UPDATES_DIR, job_slug(self.running_job))

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

    def add_close_hook(self, hook: Callable[["Worker", str, Optional[str]], None]) -> None:
        """Call ``hook(worker, job, reason)`` under the lock whenever a job is finished
        (``reason`` is ``None``) or failed, in the fresh checkout of ``master`` at ``worker.path``
        (after the merge and the ledger update). Whatever the hook changes there is committed
        with the finish, in the same commit and lock hold. A hook that raises aborts the finish
        (master untouched, the job stays running).
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
        self._lock.acquire()
        try:
            base = self._sync()
        except BaseException:
            self._lock.release()
            raise
        return self._claim_and_push(next_job_func, base, [])

    def _claim_and_push(self, func: Optional[NextJobFunc], base: Optional[str],
                        pending: list[RefUpdate]) -> Optional[str]:
        """With the lock held and master checked out (plus any commits of ours on top), run the
        job function if given, then push everything atomically with the lock's release."""
        job, attempt, branch = None, 0, ""
        try:
            if func is not None:
                checkpoint = self.clone.resolve("HEAD")
                self._lock.start_renewing()
                try:
                    self._requeue_stale(Ledger.read(Path(self.path)))
                    job, attempt = self._run_next_job_func(func)
                except BaseException:
                    if checkpoint != base:  # a finish is waiting: it lands without the claim
                        self.clone.git("reset", "--quiet", "--hard", checkpoint or "HEAD")
                        self._push_under_lock([RefUpdate(MASTER, checkpoint, expect=base),
                                               *pending])
                    raise
                finally:
                    self._lock.stop_renewing()
            head = self.clone.resolve("HEAD")
            updates = [RefUpdate(MASTER, head, expect=base)] if head != base else []
            if job is None:
                self._push_under_lock(updates + pending)
            else:
                branch = f"{self.name}/{job_slug(job)}" + (f"@{attempt}" if attempt > 1 else "")
                branch = self._push_claim(updates + pending, branch, head)
        finally:
            self._lock.release()
        if job is not None:
            self.running_job, self.working_branch, self._branch_sha = job, branch, head
            self.clone.git("checkout", "--quiet", "-B", branch, "HEAD")
            Path(self.job_dir or "").mkdir(parents=True, exist_ok=True)
            self._heartbeat.start()
            log.info("%s took job %r (attempt %d)", self.name, job, attempt)
        return job

    def _check_out_paths(self, more: Optional[list[str]] = None) -> None:
        """In a slim copy, check out the ledger, the paths included so far (plus ``more``) and
        the running job's directory: nothing else."""
        included = self.clone.sparse_paths()
        if included is not None:
            own = [f"{UPDATES_DIR}/{job_slug(self.running_job)}"] if self.running_job else []
            self.clone.set_sparse_paths([*included, *(more or [])], *own)

    def _run_next_job_func(self, func: NextJobFunc) -> tuple[Optional[str], int]:
        """Call the job function until it yields a claimable job or ``None``; commit the claim."""
        for _ in range(_MAX_SKIPS):
            job = _call_next_job_func(func, self)
            ledger = Ledger.read(Path(self.path))
            if job is None:
                self.clone.stage_all()
                self._commit_if_changed(f"{self.name} updated the queue")
                return None, 0
            try:
                entry = ledger.claim(job, self.name)
            except InvalidJobError as exc:
                log.warning("%s skips job: %s", self.name, redact(exc))
                self._skip_invalid(ledger, job, exc)
                continue
            ledger.write(Path(self.path))
            self.clone.stage_all()
            self.clone.git("commit", "--quiet", "-m", f"{self.name} took job {job}")
            return job, entry.attempt
        log.warning("%s: the job function returned %d unusable jobs in a row", self.name, _MAX_SKIPS)
        return None, 0

    def _skip_invalid(self, ledger: Ledger, job: object, exc: InvalidJobError) -> None:
        """Record a job string that cannot be stored (as its repr) in failed.txt; duplicates are dropped."""
        if isinstance(job, str):
            try:
                check_job(job)
                return  # a valid duplicate of a running or done job: nothing to record
            except InvalidJobError:
                pass
        shown = repr(job)
        if not ledger.running_entry(shown) and not ledger.is_done(shown):
            ledger.claim(shown, self.name)
            ledger.fail(shown, self.name, f"invalid job string: {exc}")
            ledger.write(Path(self.path))
        self.clone.stage_all()
        self._commit_if_changed(f"{self.name} rejected invalid job {shown[:200]}")

    def _requeue_stale(self, ledger: Ledger) -> None:
        """Give back running jobs whose worker has been silent for the job lease (one commit each)."""
        for entry in list(ledger.running):
            if entry.worker == self.name:
                if entry.job == self.running_job:
                    continue
                silent, why = True, f"{self.name} restarted without it"
            else:
                ref = heartbeat_ref(entry.worker)
                value = self._remote_refs.get(ref)
                age = self.observer.unchanged_for(ref, value)
                silent, why = age >= self.job_lease_s, f"{entry.worker} silent for {age:.0f}s"
            if not silent:
                continue
            back = ledger.requeue(entry.job, self.max_attempts, why)
            ledger.write(Path(self.path), queue=True)
            self.clone.stage_all()
            verb = "requeued" if back else "gave up"
            self.clone.git("commit", "--quiet", "-m", f"{self.name} {verb} job {entry.job} ({why})")
            log.warning("%s %s job %r (%s)", self.name, verb, entry.job, why)

    # ---- working on a job ---------------------------------------------------------------------
    def commit_update(self, message: Optional[str] = None) -> bool:
        """Commit every change in the work tree on the job branch and push that branch.

        Returns ``False`` when there was nothing to commit.
        """
        job, branch = self._require_job()
        self.clone.stage_all()
        if not self._commit_if_changed(message or f"{self.name} update on job {job}"):
            return False
        if not self.clone.push([self._branch_update(), self._heartbeat.update()]):
            raise DistributeError(f"job branch {branch} was changed by someone else on the remote")
        self._branch_sha = self.clone.resolve("HEAD")
        return True

    def _branch_update(self) -> RefUpdate:
        """Move the remote job branch to the local one (compare-and-swap on its last pushed value)."""
        return RefUpdate(f"refs/heads/{self.working_branch}",
                         self.clone.resolve(f"refs/heads/{self.working_branch}"),
                         expect=self._branch_sha)

    def finish_job(self, next_job_func: Optional[NextJobFunc] = None) -> Optional[str]:
        """Merge the job branch into master (``--no-ff``) and move the job from running to done.

        A merge conflict raises :class:`MergeConflictError` naming the files; master is untouched,
        the branch kept, and the job stays running (``fail_job`` it or fix and retry).
        With ``next_job_func``, the next job is claimed in the same lock hold and returned, as
        ``get_next_job`` would (half the round trips of finishing and claiming separately).
        """
        job, _ = self._require_job()
        return self._close_job(job, f"{self.name} finished job {job}", None, next_job_func)

    def fail_job(self, reason: str, next_job_func: Optional[NextJobFunc] = None) -> Optional[str]:
        """Move the running job to ``failed.txt`` with ``reason``; its branch is kept on the remote.

        ``next_job_func`` works as for :meth:`finish_job`.
        """
        job, _ = self._require_job()
        reason = " ".join(str(reason).split()) or "failed"
        return self._close_job(job, f"{self.name} failed job {job}: {reason[:200]}", reason,
                               next_job_func)

    def _close_job(self, job: str, message: str, reason: Optional[str],
                   next_job_func: Optional[NextJobFunc]) -> Optional[str]:
        self.clone.stage_all()
        self._commit_if_changed(f"{self.name} update on job {job}")
        branch_update = self._branch_update()
        pending = [branch_update] if branch_update.new != branch_update.expect else []
        self._lock.acquire()
        self._heartbeat.stop()  # nobody requeues our job while we hold the lock
        try:
            base = self._sync()
            ledger = Ledger.read(Path(self.path))
            entry = ledger.running_entry(job)
            if (entry is None or entry.worker != self.name) and ledger.is_done(job):
                raise JobStateError(f"job {job!r} was already done by another worker; "
                                    f"this result stays on branch {self.working_branch}")
            if reason is None:
                self._merge(job)
            queue_before = list(ledger.queued)
            ledger.close(job, self.name, reason)
            ledger.write(Path(self.path), queue=ledger.queued != queue_before)
            for hook in self._close_hooks:
                hook(self, job, reason)
            self.clone.stage_all()
            self.clone.git("commit", "--quiet", "-m", message)
        except JobStateError:  # someone else finished it while we were silent: it is not ours
            self._lock.release()
            if pending:
                self.clone.push(pending)  # our result stays on our branch
            self.running_job = self.working_branch = self._branch_sha = None
            raise
        except BaseException:
            self._lock.release()
            self._keep_job_alive(pending)
            raise
        closed = (self.running_job, self.working_branch, self._branch_sha)
        self.running_job = self.working_branch = self._branch_sha = None
        try:
            next_job = self._claim_and_push(next_job_func, base, pending)
        except LockLostError:
            self.running_job, self.working_branch, self._branch_sha = closed
            self._keep_job_alive(pending)
            raise
        log.info("%s %s job %r", self.name, "finished" if reason is None else "failed", job)
        return next_job

    def _push_claim(self, updates: list[RefUpdate], branch: str, head: Optional[str]) -> str:
        """Push a claim that creates ``branch``; if that name is taken (an earlier run of the same
        job by the same worker kept it), use a unique variant. Returns the branch name used."""
        for suffix in ("", f"-{uuid.uuid4().hex[:6]}"):
            new_branch = RefUpdate(f"refs/heads/{branch}{suffix}", head, expect="")
            try:
                self._push_under_lock([*updates, new_branch, self._heartbeat.update(self._lock.value)])
                return branch + suffix
            except LockLostError:
                raise
            except DistributeError:
                if suffix or new_branch.ref not in self.clone.ls_remote(new_branch.ref):
                    raise
        raise AssertionError("unreachable")

    def _keep_job_alive(self, pending: list[RefUpdate]) -> None:
        """After a finish that did not land: back on the job branch, beating, work pushed."""
        self.clone.git("checkout", "--quiet", "--force", self.working_branch or "HEAD", check=False)
        self._check_out_paths()  # (in a slim copy the job's committed files are outside the cone)
        Path(self.job_dir or self.path).mkdir(parents=True, exist_ok=True)
        self._heartbeat.start()
        if pending:
            self.clone.push(pending)
            self._branch_sha = pending[0].new

    def _merge(self, job: str) -> None:
        status, _, err = self.clone.run("merge", "--no-ff", "--no-commit", "--quiet",
                                        f"refs/heads/{self.working_branch}")
        if status != 0:
            conflicts = self.clone.git("diff", "--name-only", "--diff-filter=U").splitlines()
            self.clone.git("merge", "--abort", check=False)
            raise MergeConflictError(job, conflicts or [redact(err.strip())[:200]])

    def give_back_job(self) -> None:
        """Put the running job back at the head of ``jobs.txt`` at once (e.g. on SIGTERM).

        Work already committed stays on the job branch; the attempt is not counted.
        """
        job, _ = self._require_job()
        self.clone.stage_all()
        self._commit_if_changed(f"{self.name} update on job {job}")

        def edit(ledger: Ledger, root: Path) -> str:
            entry = ledger.running_entry(job)
            if entry is not None and entry.worker == self.name:
                ledger.running.remove(entry)
                ledger.queued.insert(0, job)
                if entry.attempt > 1:
                    ledger.attempts[job] = entry.attempt - 1
                ledger.write(root, queue=True)
            return f"{self.name} gave back job {job}"

        self._heartbeat.stop()
        branch_update = self._branch_update()
        extra = [branch_update] if branch_update.new != branch_update.expect else []
        self.update_master(edit, extra, _own_job=True)
        self.running_job = self.working_branch = self._branch_sha = None

    def update_master(self, edit: Callable[[Ledger, Path], Optional[str]],
                      extra: Optional[list[RefUpdate]] = None, *, _own_job: bool = False
                      ) -> Optional[str]:
        """Change master under the lock: ``edit(ledger, root)`` edits files in the fresh checkout
        at ``root`` (use ``ledger.write(root, queue=True)``) and returns the commit message, or
        ``None`` to change nothing. The commit is pushed atomically with the lock's release.
        In a slim copy, call :meth:`include_paths` first to edit files outside the ledger.
        """
        if self.running_job is not None and not _own_job:
            raise JobStateError(f"job {self.running_job!r} is still running: finish or fail it first")
        self._lock.acquire()
        try:
            base = self._sync()
            message = edit(Ledger.read(Path(self.path)), Path(self.path))
            self.clone.stage_all()
            if not (message and self._commit_if_changed(message)):
                message = None
                self.clone.git("reset", "--quiet", "--hard", base or "HEAD")
            head = self.clone.resolve("HEAD")
            updates = [RefUpdate(MASTER, head, expect=base)] if head != base else []
            self._push_under_lock(updates + (extra or []))
        finally:
            self._lock.release()
        return message

    def snapshot(self) -> dict[str, Any]:
        """Fetch and describe the remote without touching the work tree.

        Returns ``{"ledger": Ledger, "lock": None or {"holder", "held_s"}, "heartbeats":
        {worker: age_s}}``. Ages come from the commit times of the lock and heartbeat values
        compared with this machine's clock: good for display, never used for decisions.
        """
        self.clone.fetch()
        master = self.clone.resolve(ORIGIN_MASTER) or ORIGIN_MASTER
        ledger = Ledger.parse(lambda name: self.clone.show(master, name))
        return {"ledger": ledger, **describe_coordination(self.clone)}

    # ---- plumbing helpers ---------------------------------------------------------------------
    def _require_job(self) -> tuple[str, str]:
        if self.running_job is None or self.working_branch is None:
            raise JobStateError("no job is running on this worker")
        return self.running_job, self.working_branch

    def _sync(self) -> Optional[str]:
        """Fetch and check out the newest master (detached, clean); return its sha."""
        self.clone.fetch()
        tracking = self.clone.local_refs("refs/remotes/origin/")
        self._remote_refs = {COORD_PREFIX + r[len(TRACKING_PREFIX):]: sha
                             for r, sha in tracking.items() if r.startswith(TRACKING_PREFIX)}
        self.observer.update(self._remote_refs)
        base = tracking.get(ORIGIN_MASTER)
        if base is None or (not self._initialized and not set(LEDGER_FILES) <= set(
                self.clone.git("ls-tree", "--name-only", base).splitlines())):
            raise NotInitializedError(
                "the remote has no job ledger on master; initialise it with "
                "`distribute init URL` or distribute.init_remote(url)")
        self._initialized = True
        self.clone.abort_interrupted()
        self.clone.git("checkout", "--quiet", "--force", "--detach", base)
        removed = [line for line in self.clone.git("clean", "-fd").splitlines()
                   if not (line.startswith(f"Removing {UPDATES_DIR}/") and line.endswith("/"))]
        if removed:  # (a job directory left empty by the last claim is not worth a warning)
            log.warning("%s discarded untracked files in its copy: %s", self.name,
                        ", ".join(line.removeprefix("Removing ") for line in removed[:10]))
        return base

    def _commit_if_changed(self, message: str) -> bool:
        """Commit what is staged; ``False`` if nothing was."""
        status, out, err = self.clone.run("commit", "--quiet", "-m", message)
        if status != 0 and "nothing" in out + err:
            return False
        if status != 0:
            raise DistributeError(redact(f"git commit failed: {err.strip() or out.strip()}"))
        return True

    def _push_under_lock(self, updates: list[RefUpdate]) -> None:
        """Push ``updates`` atomically with the lock's release; raise if we were fenced."""
        release = self._lock.release_update()
        if self.clone.push([*updates, release]):
            self._lock.forget()
            return
        refs = self.clone.ls_remote(release.ref)
        if refs.get(release.ref) != release.expect:
            self._lock.forget()
            raise LockLostError("the lock was broken while we held it (we were too slow); "
                                "our change was discarded and master is untouched")
        raise DistributeError("the remote rejected our update (a job branch of that name "
                              "already exists, or master was changed outside the lock)")

    def close(self) -> None:
        """Stop background threads and release the local copy (the running job stays running)."""
        self._heartbeat.stop()
        self._file_lock.release()


def _call_next_job_func(func: NextJobFunc, worker: Worker) -> Optional[str]:
    try:
        params = [p for p in inspect.signature(func).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    except (TypeError, ValueError):
        params = []
    return func(worker) if params else func()


