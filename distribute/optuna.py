"""Hyperparameter search with Optuna, the study kept in the remote itself.

The study is an Optuna journal (``optuna.storages.JournalStorage`` over
``optuna.storages.journal.JournalFileBackend``): the append-only file ``optuna/<study>.log`` on
``master``. It is only ever appended to while the remote lock is held, in the same commit as the
claim (``ask``) or the finish (``tell``) of the job that runs the trial, so a plain clone and
``optuna.load_study`` read it, and no database is needed.

Install with ``pip install 'git-distribute[optuna]'``. ``import distribute`` never imports this
module (Optuna is optional). See ``docs/optuna.md``.
"""
from __future__ import annotations

import json
import logging
import math
import re
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from .ledger import Ledger
from .worker import NextJobFunc, Worker

__all__ = ["OptunaSearch", "JOURNAL_DIR", "open_journal"]

log = logging.getLogger(__name__)

JOURNAL_DIR = "optuna"
JOB_PREFIX = "optuna:"
TRIAL_FILE = "trial.json"
_STUDY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
Objective = Callable[[optuna.Trial], Any]
Values = Union[float, Sequence[float]]


class _HeldByGitLock(JournalFileOpenLock):
    """The journal's own file lock, replaced by the remote lock that every writer holds.

    No lock file is ever made beside the journal, so none can be committed or left stale.
    """

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        return None


def open_journal(path: Union[str, Path]) -> JournalStorage:
    """A fresh :class:`JournalStorage` over the journal file ``path`` (created if missing).

    For use while holding the remote lock (as the search does): it makes no lock file. To read a
    study from a plain clone, plain ``JournalStorage(JournalFileBackend(path))`` is just as good.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=_HeldByGitLock(str(path))))


def _directions(direction: Union[str, StudyDirection, None],
                directions: Optional[Sequence[Union[str, StudyDirection]]]) -> list[StudyDirection]:
    if direction is not None and directions is not None:
        raise ValueError("give either direction or directions, not both")
    raw = list(directions) if directions is not None else [direction or "minimize"]
    names = {"minimize": StudyDirection.MINIMIZE, "maximize": StudyDirection.MAXIMIZE}
    out = [d if isinstance(d, StudyDirection) else names.get(str(d).lower()) for d in raw]
    if not out or any(d in (None, StudyDirection.NOT_SET) for d in out):
        raise ValueError(f"directions are 'minimize' or 'maximize', not {raw!r}")
    return out  # type: ignore[return-value]


def _trial_id(storage: JournalStorage, study_name: str, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study_name), number)


def _fail(storage: JournalStorage, study: optuna.Study, number: int, why: str) -> None:
    """Tell ``number`` FAIL, with ``why`` as its ``fail_reason`` system attribute."""
    storage.set_trial_system_attr(_trial_id(storage, study.study_name, number), "fail_reason",
                                  why[:500])
    study.tell(number, state=TrialState.FAIL)


class OptunaSearch:
    """An Optuna study on the remote, run as jobs ``optuna:<study_name>:<trial number>``.

    ``search.next_job`` is a next-job function: under the lock it first takes this study's jobs
    that came back to ``jobs.txt`` (their worker died: the same trial, retried), then, while fewer
    than ``n_trials`` trials were asked (``None``: no limit), asks the study for a new trial with
    ``study.ask(search_space)``; the journal lines are committed with the claim. It returns
    ``None`` when ``n_trials`` were asked and none of this study's jobs is queued (trials may still
    run on other workers: :meth:`optimize` and ``distribute worker --idle-exit`` wait for those).
    It also marks failed any running trial whose job no longer runs (e.g. it used up its
    attempts), so that no trial stays RUNNING.

    ``worker`` may be ``None``: the search then binds to the worker that first calls
    :meth:`next_job` (for ``distribute worker --next-job module:search.next_job``).
    ``sampler`` and ``pruner`` are used by every ask and tell made by this process.
    """

    def __init__(self, worker: Optional[Worker], study_name: str,
                 search_space: Mapping[str, BaseDistribution], *,
                 direction: Union[str, StudyDirection, None] = None,
                 directions: Optional[Sequence[Union[str, StudyDirection]]] = None,
                 sampler: Optional[optuna.samplers.BaseSampler] = None,
                 pruner: Optional[optuna.pruners.BasePruner] = None,
                 n_trials: Optional[int] = None) -> None:
        if not isinstance(study_name, str) or not _STUDY_NAME.match(study_name) \
                or study_name.endswith((".", ".lock")):
            raise ValueError(f"study name {study_name!r} must be 1-100 letters, digits, '_', '.' "
                             "or '-' (it names the file optuna/<study_name>.log)")
        if not search_space or not all(isinstance(d, BaseDistribution)
                                       for d in search_space.values()):
            raise ValueError("search_space maps parameter names to optuna distributions")
        if n_trials is not None and (not isinstance(n_trials, int) or n_trials < 0):
            raise ValueError(f"n_trials must be a non-negative int or None, not {n_trials!r}")
        self.study_name = study_name
        self.search_space = dict(search_space)
        self.directions = _directions(direction, directions)
        self.sampler = sampler
        self.pruner = pruner
        self.n_trials = n_trials
        self.worker: Optional[Worker] = None
        self._job: Optional[str] = None  # the job whose trial() is cached below
        self._trial: Optional[optuna.Trial] = None
        self._private: Optional[tuple[JournalStorage, int]] = None  # its storage and trial id
        self._tmp: Optional[tempfile.TemporaryDirectory[str]] = None  # holds that journal copy
        self._outcome: Optional[tuple[str, Optional[TrialState], Optional[list[float]]]] = None
        if worker is not None:
            self._bind(worker)

    # ---- names ------------------------------------------------------------------------------
    @property
    def journal(self) -> str:
        """The journal's path in the repository: ``optuna/<study_name>.log``."""
        return f"{JOURNAL_DIR}/{self.study_name}.log"

    def job(self, number: int) -> str:
        """The job string of trial ``number``: ``optuna:<study_name>:<number>``."""
        return f"{JOB_PREFIX}{self.study_name}:{number}"

    def trial_number(self, job: Optional[str]) -> Optional[int]:
        """The trial number of one of this study's jobs; ``None`` for any other job."""
        head = f"{JOB_PREFIX}{self.study_name}:"
        if job is None or not job.startswith(head) or not job[len(head):].isdigit():
            return None
        return int(job[len(head):])

    # ---- the next-job function --------------------------------------------------------------
    def next_job(self, worker: Worker) -> Optional[str]:
        """The next-job function (runs under the lock; see the class docstring)."""
        self._bind(worker)
        root = Path(worker.path)
        storage = open_journal(root / self.journal)
        study = self._study(storage, create=True)
        ledger = Ledger.read(root)
        trials = study.get_trials(deepcopy=False)
        self._settle_orphans(storage, study, trials, ledger)
        for job in list(ledger.queued):  # requeued trials first: the same trial, retried
            number = self.trial_number(job)
            if number is None:
                continue
            ledger.queued.remove(job)
            ledger.write(root, queue=True)
            if number < len(trials) and trials[number].state == TrialState.RUNNING:
                log.info("%s retries trial %d of study %s", worker.name, number, self.study_name)
                return job
            state = trials[number].state.name if number < len(trials) else "missing"
            log.warning("dropped queued job %r: its trial is %s, it cannot run again", job, state)
        if self.n_trials is not None and len(trials) >= self.n_trials:
            return None
        trial = study.ask(dict(self.search_space))
        log.info("%s asked trial %d of study %s: %s", worker.name, trial.number,
                 self.study_name, trial.params)
        return self.job(trial.number)

    def _bind(self, worker: Worker) -> None:
        if self.worker is worker or (self.worker is not None and self.worker.path == worker.path):
            return  # (the job function of the worker loop gets a stand-in of the same worker)
        if self.worker is not None:
            raise ValueError(f"this search is bound to worker {self.worker.name}, "
                             f"not {worker.name}; make one search per worker")
        worker.include_paths(JOURNAL_DIR)
        worker.add_close_hook(self._on_close)
        self.worker = worker

    def _study(self, storage: JournalStorage, create: bool = False) -> optuna.Study:
        if create and self.study_name not in {s.study_name for s in storage.get_all_studies()}:
            study = optuna.create_study(storage=storage, study_name=self.study_name,
                                        directions=self.directions, sampler=self.sampler,
                                        pruner=self.pruner)
        else:
            study = optuna.load_study(study_name=self.study_name, storage=storage,
                                      sampler=self.sampler, pruner=self.pruner)
        if create:
            if list(study.directions) != self.directions:
                raise ValueError(f"study {self.study_name} on the remote has directions "
                                 f"{[d.name for d in study.directions]}, not "
                                 f"{[d.name for d in self.directions]}")
            self.sampler, self.pruner = study.sampler, study.pruner  # keep the defaults' state
        return study

    def _settle_orphans(self, storage: JournalStorage, study: optuna.Study,
                        trials: list[FrozenTrial], ledger: Ledger) -> None:
        """Fail running trials whose job is neither queued nor running (nobody will tell them)."""
        alive = set(ledger.queued) | {e.job for e in ledger.running}
        failed = {e.job: e.reason for e in ledger.failed}
        for trial in trials:
            job = self.job(trial.number)
            if trial.state != TrialState.RUNNING or job in alive:
                continue
            why = failed.get(job) or ("its job was finished without a value" if ledger.is_done(job)
                                      else "its job is not in the ledger")
            log.warning("trial %d of study %s failed: %s", trial.number, self.study_name, why)
            _fail(storage, study, trial.number, why)

    # ---- the running trial ------------------------------------------------------------------
    def trial(self) -> optuna.Trial:
        """The running job's trial (``trial.params`` holds its sampled parameters).

        It works on a private copy of the study as it was at the claim: ``trial.report``,
        ``trial.should_prune``, ``trial.set_user_attr`` and extra ``trial.suggest_*`` calls work
        and are written to the journal on ``master`` when the job is finished or failed.
        """
        worker = self._require_worker()
        job = worker.running_job
        number = self.trial_number(job)
        if job is None or number is None:
            raise ValueError(f"the running job {job!r} is not a trial of study {self.study_name}")
        if self._job == job and self._trial is not None:
            return self._trial
        self.close()
        self._tmp = tempfile.TemporaryDirectory(prefix="distribute-optuna-")
        private = Path(self._tmp.name) / "journal.log"
        shutil.copyfile(Path(worker.path) / self.journal, private)
        storage = open_journal(private)
        trial_id = _trial_id(storage, self.study_name, number)
        self._trial = optuna.Trial(self._study(storage), trial_id)
        self._private, self._job, self._outcome = (storage, trial_id), job, None
        return self._trial

    def finish(self, values: Values, next_job_func: Optional[NextJobFunc] = None
               ) -> Optional[str]:
        """Tell the study ``values`` (one per direction) and finish the job, in one lock hold.

        With ``next_job_func`` (e.g. ``search.next_job``) the next job is claimed in the same
        lock hold and returned, as ``worker.finish_job(next_job_func)`` does.
        """
        self.set_result(values)
        return self._require_worker().finish_job(next_job_func)

    def prune(self, next_job_func: Optional[NextJobFunc] = None) -> Optional[str]:
        """Mark the trial pruned (its value is its last reported one) and finish the job."""
        self._record(TrialState.PRUNED, None)
        return self._require_worker().finish_job(next_job_func)

    def fail(self, reason: str, next_job_func: Optional[NextJobFunc] = None) -> Optional[str]:
        """Mark the trial failed and fail the job with ``reason`` (to ``failed.txt``)."""
        self._record(TrialState.FAIL, None)
        return self._require_worker().fail_job(reason, next_job_func)

    def set_result(self, values: Values) -> None:
        """Record the running trial's ``values`` for the finish (``worker.finish_job()`` then
        tells them). ``finish`` calls this; so does the function made by :meth:`runner`."""
        try:
            seq = list(values) if isinstance(values, Iterable) else [values]
            if any(isinstance(v, (str, bytes)) for v in seq):
                raise TypeError("text is not a value")
            floats = [float(v) for v in seq]
        except (TypeError, ValueError):
            floats = []
        if len(floats) != len(self.directions):
            raise ValueError(f"study {self.study_name} wants {len(self.directions)} number(s), "
                             f"not {values!r}")
        self._record(None, floats)

    def _record(self, state: Optional[TrialState], values: Optional[list[float]]) -> None:
        trial = self.trial()
        job = self._job or ""
        self._outcome = (job, state, values)
        shown = "COMPLETE" if state is None else state.name
        record = {"study": self.study_name, "number": trial.number, "params": trial.params,
                  "state": shown, "values": None if values is None else
                  [v if math.isfinite(v) else str(v) for v in values]}
        worker = self._require_worker()
        Path(worker.job_dir or worker.path, TRIAL_FILE).write_text(
            json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")

    # ---- telling, under the lock of the finish ----------------------------------------------
    def _on_close(self, worker: Worker, job: str, reason: Optional[str]) -> None:
        """Close hook: tell the study, in the master checkout, in the finish's commit."""
        number = self.trial_number(job)
        if number is None:
            return
        storage = open_journal(Path(worker.path) / self.journal)
        study = self._study(storage)
        frozen = study.get_trials(deepcopy=False)[number]
        if frozen.state.is_finished():
            log.warning("trial %d of study %s is already %s; not told again", number,
                        self.study_name, frozen.state.name)
            return
        if self._job == job and self._private is not None:
            self._carry_over(storage, frozen, _trial_id(storage, self.study_name, number))
        outcome = self._outcome if self._outcome and self._outcome[0] == job else None
        if reason is not None or outcome is None or outcome[1] == TrialState.FAIL:
            why = reason or "the job was finished without a value (use search.finish(value))"
            if reason is None:
                log.warning("trial %d of study %s failed: %s", number, self.study_name, why)
            _fail(storage, study, number, why)
        elif outcome[1] == TrialState.PRUNED:
            study.tell(number, state=TrialState.PRUNED)
        else:  # Optuna's own rule: a NaN value makes the trial FAIL (with a warning)
            study.tell(number, outcome[2])

    def _carry_over(self, storage: JournalStorage, frozen: FrozenTrial, tid: int) -> None:
        """Copy what the job added to its private trial (new params, reported intermediate
        values, user attributes) into the journal on master."""
        assert self._private is not None
        mine = self._private[0].get_trial(self._private[1])
        writes = [partial(storage.set_trial_param, tid, name, dist.to_internal_repr(value), dist)
                  for name, value in mine.params.items() if name not in frozen.params
                  for dist in [mine.distributions[name]]]
        writes += [partial(storage.set_trial_intermediate_value, tid, step, value)
                   for step, value in mine.intermediate_values.items()
                   if step not in frozen.intermediate_values]
        writes += [partial(storage.set_trial_user_attr, tid, key, value)
                   for key, value in mine.user_attrs.items()
                   if frozen.user_attrs.get(key, object()) != value]
        for write in writes:
            try:
                write()
            except Exception as exc:  # noqa: BLE001 - keep the tell even if one detail is refused
                log.warning("trial %d of study %s: not recorded on master: %s", frozen.number,
                            self.study_name, exc)

    # ---- running objectives -----------------------------------------------------------------
    def runner(self, objective: Objective) -> Callable[[str, Worker], None]:
        """A ``run(job, worker)`` function for ``distribute worker --run`` and
        ``run_worker_loop``: it calls ``objective(trial)`` on the job's trial and records the
        value it returns for the finish. ``optuna.TrialPruned`` marks the trial pruned; any other
        exception fails the job (and the trial) as usual.
        """
        def run(job: str, worker: Worker) -> None:
            self._bind(worker)
            trial = self.trial()
            try:
                value = objective(trial)
            except optuna.TrialPruned:
                self._record(TrialState.PRUNED, None)
                return
            self.set_result(value)

        run.__name__ = run.__qualname__ = getattr(objective, "__name__", "run")
        return run

    def optimize(self, objective: Objective, poll_s: float = 5.0) -> int:
        """Run trials on this search's worker until the study is settled: ``n_trials`` asked,
        none of its jobs queued and none running anywhere (a dead worker's trial comes back to
        the queue after the job lease, and is then taken here). Returns the number of trials
        this worker finished or failed. Without ``n_trials`` it runs forever.
        """
        worker = self._require_worker()
        run, count = self.runner(objective), 0
        job = worker.get_next_job(self.next_job)
        while True:
            if job is None:
                ledger = Ledger.read(Path(worker.path))  # the master just read under the lock
                if not any(self.trial_number(j) is not None
                           for j in [*ledger.queued, *(e.job for e in ledger.running)]):
                    return count
                time.sleep(poll_s)
                job = worker.get_next_job(self.next_job)
                continue
            count += 1
            try:
                run(job, worker)
            except Exception as exc:  # noqa: BLE001 - the objective failed: fail the trial
                job = worker.fail_job(f"{type(exc).__name__}: {exc}", self.next_job)
                continue
            job = worker.finish_job(self.next_job)

    def close(self) -> None:
        """Drop the private copy of the journal made by :meth:`trial` (done on each new trial)."""
        if self._tmp is not None:
            self._tmp.cleanup()
        self._tmp = self._job = self._trial = self._private = None

    def _require_worker(self) -> Worker:
        if self.worker is None:
            raise ValueError("this search has no worker yet: pass one, or claim a job with "
                             "worker.get_next_job(search.next_job) first")
        return self.worker
