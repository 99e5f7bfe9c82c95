"""Entry points: connect a worker to a remote (from arguments or from settings), initialise a
remote's ledger, and queue (or requeue) jobs.

Every function here takes a remote the way git does — ``file://``, ``ssh://``, ``https://``,
``git://`` URLs and ssh's ``user@host:path`` — and also a path on this machine, relative or not
(``jobs.git``, ``./jobs.git``, ``~/jobs.git``), which stands for the absolute path it names from
the current directory (:func:`distribute.repo.clone.normalize_url`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Iterable, NamedTuple, Optional, Sequence, Union

from .exceptions import DistributeError, LocalCopyError
from .ledger import Ledger
from .protocol import (
    ADDED,
    BRANCH_COORD_PREFIX,
    COORD_PREFIX,
    INIT,
    LAYOUT_FILE,
    LEDGER_FILES,
    MASTER,
    QUEUE_FILE,
    REQUEUED,
    SHARDED,
    TRACKING_PREFIX,
    check_job,
    check_worker_name,
    commit_message,
    default_worker_name,
    heartbeat_ref,
    layout_text,
    parse_layout,
    parse_namespace,
    remote_ref,
)
from .repo import Clone
from .repo.clone import normalize_url, takes_custom_refs
from .repo.localcopy import lock_local_copy
from .settings import get_env
from .transaction import create_master
from .worker import Worker

__all__ = ["Worker", "worker_from_url", "init_remote", "initialise", "Initialised",
           "create_from_config", "add_jobs", "requeue_jobs", "Requeued", "normalize_url"]

log = logging.getLogger(__name__)


def worker_from_url(remote_url: str, path: Union[str, os.PathLike[str], None] = None,
                    name: Optional[str] = None, **tunables: object) -> Worker:
    """Connect a :class:`Worker` to ``remote_url`` using the local copy at ``path``.

    ``path`` is cloned when it does not exist and reused when it is a clone of the same remote
    (default: ``.distribute/<name>`` under the current directory). ``tunables`` are the keyword
    arguments of :class:`Worker` (``lock_lease_s``, ``job_lease_s``, ``max_attempts``, ...).
    A local copy that this call created is removed again when the worker cannot start (the
    remote cannot be reached, has no ledger, the name is taken...).
    """
    url = normalize_url(remote_url)
    random_name = not name
    name = check_worker_name(name or default_worker_name())
    local = Path(path) if path is not None else Path(".distribute") / name
    created = _missing(local)
    try:
        return Worker(local, name, remote_url=url, **tunables)  # type: ignore[arg-type]
    except LocalCopyError:
        raise  # another process's copy, or not a copy at all: not ours to remove
    except BaseException as exc:
        if created:
            # the half-made worker lives on in the traceback's frames with its file lock: let go
            # of it (the traceback keeps its lines), then take the lock to remove the copy
            traceback.clear_frames(exc.__traceback__)
            _remove_new_copy(local, created, owned=random_name and path is None)
        raise


def _missing(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, innermost first."""
    out = []
    for candidate in [path, *path.parents]:
        if candidate.exists() or candidate == candidate.parent:
            break
        out.append(candidate)
    return out


def _remove_new_copy(local: Path, created: list[Path], owned: bool) -> None:
    """Remove the copy a failed start left behind, with the directories made for it.

    ``owned`` (a path made from a random worker name, which no other process can know) is removed
    at once; any other path only when its file lock can be had, so that a process that meanwhile
    started on the same path keeps its copy. The lock file goes last, before the lock is let go:
    a process that opens it later makes a new one and finds no copy.
    """
    lock_file = local.parent / f".{local.name}.distribute-lock"
    held = None
    if not owned:
        try:
            held = lock_local_copy(local)
        except LocalCopyError:
            return
    try:
        shutil.rmtree(local, ignore_errors=True)
        with contextlib.suppress(OSError):
            lock_file.unlink()
        for directory in created[1:]:  # parents made for it, if nothing else is in them now
            with contextlib.suppress(OSError):
                directory.rmdir()
    finally:
        if held is not None:
            held.release()


def create_from_config(remote_url: Optional[str] = None, path: Optional[str] = None,
                       name: Optional[str] = None, **tunables: object) -> Worker:
    """A :class:`Worker` built from ``DISTRIBUTE_REMOTE``, ``DISTRIBUTE_PATH`` and
    ``DISTRIBUTE_NAME`` (environment first, then ``.env``); arguments given here win.

    ``tunables`` are passed on (``job_lease_s=...``); unset ones come from their own settings.
    """
    url = remote_url or get_env("DISTRIBUTE_REMOTE")
    if not url:
        raise DistributeError("no remote given: set DISTRIBUTE_REMOTE (environment or .env) "
                              "or pass the remote URL")
    return worker_from_url(url, path or get_env("DISTRIBUTE_PATH"),
                           name or get_env("DISTRIBUTE_NAME"), **tunables)


def init_remote(remote_url: str, jobs: Optional[Iterable[str]] = None) -> bool:
    """Create the ledger files on the remote's ``master`` (an empty bare repo is fine).

    ``jobs`` seed ``jobs.txt`` of a new ledger. Returns ``True`` if the ledger was created,
    ``False`` if it already existed (then nothing is changed: queue jobs with :func:`add_jobs`),
    but for one thing: on a host that takes only branches and tags, a ledger made before the
    remote recorded where its coordination refs live gets that record (see :func:`initialise`).
    """
    return initialise(remote_url, jobs).created


class Initialised(NamedTuple):
    """What :func:`initialise` did."""

    #: Whether the ledger was created (``False``: it existed).
    created: bool
    #: Where the remote keeps its coordination refs (``refs/distribute/``, or
    #: ``refs/heads/_distribute/`` on a host that takes only branches and tags).
    namespace: str
    #: Whether this call recorded a branch namespace on an existing ledger's master.
    recorded: bool = False


def initialise(remote_url: str, jobs: Optional[Iterable[str]] = None) -> Initialised:
    """:func:`init_remote`, saying what it did. The first time, it pushes a ref under
    ``refs/distribute/`` and deletes it: a host that refuses it (a rule allowing only branches
    and tags) gets its coordination refs under ``refs/heads/_distribute/``, recorded on master
    (``.distribute``) for every worker; a ledger that exists without a record is given one."""
    seed = [check_job(j) for j in jobs or []]
    with tempfile.TemporaryDirectory(prefix="distribute-init-") as tmp:
        clone = Clone.clone(normalize_url(remote_url), Path(tmp) / "remote",
                            name="distribute-init")
        master = clone.ls_remote(MASTER).get(MASTER)
        record: Optional[str] = None
        if master is not None:
            clone.fetch_branch(MASTER)
            record = clone.show(master, LAYOUT_FILE)
            recorded = parse_namespace(record)
            if all(clone.show(master, f) is not None for f in LEDGER_FILES):
                if recorded != COORD_PREFIX or takes_custom_refs(clone):
                    return Initialised(False, recorded)
                return Initialised(False, BRANCH_COORD_PREFIX,
                                   _record_namespace(clone, master, record))
            clone.checkout_detached(master, force=True)
        else:
            clone.checkout_orphan("distribute-init")
        namespace = COORD_PREFIX if takes_custom_refs(clone) else BRANCH_COORD_PREFIX
        root = Path(clone.path)
        if master is None or namespace != COORD_PREFIX:  # (a new remote: sharded results)
            layout = SHARDED if master is None else parse_layout(record)
            (root / LAYOUT_FILE).write_text(layout_text(layout, namespace), encoding="utf-8")
            clone.add_paths(LAYOUT_FILE)
        for name in LEDGER_FILES:
            target = root / name
            if not target.exists():
                lines = seed if name == QUEUE_FILE else []
                target.write_text("".join(j + "\n" for j in lines), encoding="utf-8")
        clone.add_paths(*LEDGER_FILES)
        message = commit_message("distribute-init", INIT, "initialise the distribute job ledger")
        return Initialised(create_master(clone, message, master), namespace)


def _record_namespace(clone: Clone, master: str, record: Optional[str]) -> bool:
    """Record on ``master`` (compare-and-swap, no lock: no worker can have run on a host that
    refuses ``refs/distribute/``) that the coordination refs live under
    ``refs/heads/_distribute/``; ``False`` if master moved meanwhile."""
    clone.checkout_detached(master, force=True)
    (Path(clone.path) / LAYOUT_FILE).write_text(
        layout_text(parse_layout(record), BRANCH_COORD_PREFIX), encoding="utf-8")
    clone.add_paths(LAYOUT_FILE)
    message = commit_message("distribute-init", INIT, "record where the coordination refs live: "
                             f"{BRANCH_COORD_PREFIX} (the host takes only branches and tags)")
    return create_master(clone, message, master)


def add_jobs(worker: Worker, jobs: Iterable[str], allow_duplicates: bool = False,
             after: Sequence[str] = ()) -> tuple[list[str], list[tuple[str, str]]]:
    """Append ``jobs`` to the end of ``jobs.txt`` under the lock, in one commit
    (``<worker> added 3 jobs``); return ``(added, [(skipped job, why), ...])``.

    Jobs that are queued, waiting, running or done, or given twice, are skipped (and reported)
    unless ``allow_duplicates``. A job that failed before may be added again; its attempt count
    goes on. With ``after`` (parent jobs, each queued, waiting, running, done or failed), the
    jobs wait until every parent is done (they go to ``failed.txt`` at once, without running, if
    one has failed); an unknown parent raises :class:`InvalidJobError` and nothing is added.
    """
    wanted = [check_job(j) for j in jobs]
    parents = [check_job(p) for p in after]
    added: list[str] = []
    skipped: list[tuple[str, str]] = []

    def edit(ledger: Ledger, root: Path) -> Optional[str]:
        added.clear()
        skipped.clear()
        where = {j: "queued" for j in ledger.queued}
        where.update({j: "waiting" for j in ledger.waiting()})
        where.update({e.job: f"running on {e.worker}" for e in ledger.running})
        where.update({j: "done" for j in wanted if j not in where and ledger.is_done(j)})
        for job in wanted:
            if job in where and not allow_duplicates:
                skipped.append((job, where[job]))
                continue
            carry_attempts(ledger, job)
            if parents:
                ledger.add_after(job, parents, worker.name)
            else:
                ledger.queued.append(job)
            added.append(job)
            where.setdefault(job, "given twice")
        if not added:
            return None
        ledger.write(root, queue=True)
        count = f"{len(added)} job{'' if len(added) == 1 else 's'}"
        return commit_message(worker.name, ADDED, f"{worker.name} added {count}"
                              + (f" after {', '.join(parents)[:200]}" if parents else ""))

    worker.update_master(edit)
    return added, skipped


def carry_attempts(ledger: Ledger, job: str) -> None:
    """A failed ``job`` that runs again continues its attempt count: its next run gets a new
    branch name (``worker/job@N``) instead of colliding with the failed run's branch."""
    failed = [e.attempt for e in ledger.failed if e.job == job]
    if failed:
        ledger.attempts[job] = max(ledger.attempts.get(job, 0), *failed)


class Requeued(NamedTuple):
    """What :func:`requeue_jobs` did."""

    #: Jobs put back at the head of the queue, in that order.
    requeued: list[str]
    #: Stale jobs that had used their attempts and went to ``failed.txt`` instead.
    failed: list[str]
    #: Named jobs left as they were, with why: ``already queued``, ``done; a done job cannot run
    #: again`` or ``not in the ledger``.
    refused: list[tuple[str, str]]
    #: Running jobs whose worker's heartbeat has been seen unchanged for these seconds, less than
    #: a job lease (``stale`` only): not stale yet.
    not_stale_yet: dict[str, float]


def requeue_jobs(worker: Worker, jobs: Iterable[str] = (), *, stale: bool = False,
                 wait: bool = False, resume: bool = False) -> Requeued:
    """Put running or failed jobs back at the head of the queue, under the lock, in one commit.

    ``jobs`` are requeued in the order given (a failed job keeps counting its attempts); one that
    is queued, done or unknown is refused and left as it is. With ``stale`` (and no ``jobs``),
    the running jobs are those whose worker's heartbeat this machine has seen unchanged for a job
    lease (the rule workers use: monotonic clocks, never commit times; observations of earlier
    calls on the same copy count); a stale job that used its ``max_attempts`` goes to
    ``failed.txt``. ``wait`` (with ``stale``) watches until each running job is stale or alive.
    A stale job's next attempt starts from its last checkpoint (as when a worker requeues it);
    a named job's starts fresh unless ``resume``.
    """
    names = list(jobs)
    if stale and names:
        raise ValueError("requeue_jobs: give job names or stale=True, not both")
    if wait and not stale:
        raise ValueError("requeue_jobs: wait=True goes with stale=True")
    if stale:
        return _requeue_stale(worker, wait)
    back, refused = _requeue_named(worker, names, resume)
    return Requeued(back, [], refused, {})


def _requeue_stale(worker: Worker, wait: bool) -> Requeued:
    lease, started = worker.job_lease_s, time.monotonic()
    while True:
        ledger = worker.snapshot()["ledger"]  # fetch, and update the lease clocks
        ages = _heartbeat_silences(worker, ledger)
        pending = {job: age for job, age in ages.items()
                   if time.monotonic() - started <= age < lease}
        if not pending or not wait:
            break
        time.sleep(min(5.0, max(0.2, lease - max(pending.values()))))
    back: list[str] = []
    gave_up: list[str] = []

    def edit(ledger: Ledger, root: Path) -> Optional[str]:
        back.clear()
        gave_up.clear()
        silences = _heartbeat_silences(worker, ledger)
        for entry in reversed(ledger.running):  # (back at the queue's head in their order)
            if silences.get(entry.job, 0.0) < lease:
                continue
            why = f"{entry.worker} silent for {silences[entry.job]:.0f}s"
            (back if ledger.requeue(entry.job, worker.max_attempts, why) else gave_up).insert(
                0, entry.job)
        if not back and not gave_up:
            return None
        ledger.write(root, queue=True)
        count = len(back) + len(gave_up)
        return commit_message(worker.name, REQUEUED,
                              f"{worker.name} requeued {count} stale job{'' if count == 1 else 's'}"
                              f" ({', '.join(back + gave_up)[:200]})")

    worker.update_master(edit)
    if back or gave_up:
        log.info("requeued %d stale jobs, %d went to failed.txt", len(back), len(gave_up))
    return Requeued(back, gave_up, [], pending)


def _heartbeat_silences(worker: Worker, ledger: Ledger) -> dict[str, float]:
    """``{job: seconds its worker's heartbeat has been seen unchanged}`` for the running jobs."""
    refs = {remote_ref(r): sha for r, sha in worker.clone.local_refs(TRACKING_PREFIX).items()}
    out = {}
    for entry in ledger.running:
        ref = heartbeat_ref(entry.worker, entry.session)
        out[entry.job] = worker.observer.unchanged_for(ref, refs.get(ref))
    return out


def _requeue_named(worker: Worker, jobs: list[str], resume: bool
                   ) -> tuple[list[str], list[tuple[str, str]]]:
    """Put ``jobs`` (running or failed) at the head of the queue, in the order given; with
    ``resume``, each next attempt starts from the checkpoint of the attempt that ran."""
    back: list[str] = []
    refused: list[tuple[str, str]] = []

    def edit(ledger: Ledger, root: Path) -> Optional[str]:
        back.clear()
        refused.clear()
        for job in jobs:
            failed = [e for e in ledger.failed if e.job == job]
            if ledger.running_entry(job) is not None:
                ledger.requeue(job, sys.maxsize, "requeued by hand", resume)  # (at the head)
            elif failed:
                carry_attempts(ledger, job)
                if resume:
                    ledger.resume_from(job, failed[-1])
                ledger.failed = [e for e in ledger.failed if e.job != job]
                ledger.queued.insert(0, job)
            elif job in ledger.queued:
                refused.append((job, "already queued"))
                continue
            elif ledger.is_done(job):
                refused.append((job, "done; a done job cannot run again"))
                continue
            else:
                refused.append((job, "not in the ledger"))
                continue
            back.append(job)
        if not back:
            return None
        # each went to the head on its own, so the last one is first: restore the given order
        ledger.queued[:len(back)] = back
        ledger.write(root, queue=True)
        if len(back) == 1:
            return commit_message(worker.name, REQUEUED, f"{worker.name} requeued job {back[0]}",
                                  back[0])
        return commit_message(worker.name, REQUEUED,
                              f"{worker.name} requeued {len(back)} jobs ({', '.join(back)[:200]})")

    worker.update_master(edit)
    if back:
        log.info("requeued %s", ", ".join(back)[:200])
    return back, refused
