"""A deterministic fault-injection simulation of the protocol (issue 23).

:func:`run_seed` makes a bare ``file://`` remote, queues ``jobs`` jobs, and runs ``workers``
in-process workers (threads) on it to the end under a seeded :class:`~support.faultplan.FaultPlan`
installed behind the fault seam (:mod:`distribute.repo.faults`). Then it checks the invariants
from outside, on the bare remote (:mod:`support.invariants`). ``benchmarks/simulate.py`` runs
thousands of seeds; ``tests/test_simulation.py`` runs a few hundred.

Each worker loops as ``run_worker_loop(idle_exit=True)`` does: take a job, write ``result.txt``
(its name and the job) into ``worker.job_dir``, maybe checkpoint it (``commit_update``), finish
it (on some seeds claiming the next job in the same hold); a few jobs raise on their first run and
are failed. A worker leaves when it is told "no job" and the ledger shows nothing queued or
running; a killed one just ends (no clean-up: as after SIGKILL). On a seed whose plan misreports
pushes (answered applied, never run) the workers read their pushes back
(``DISTRIBUTE_VERIFY_PUSHES=always``), as they do on a host not known to report truthfully.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import distribute
from distribute.claims import combinable
from distribute.exceptions import (
    DistributeError,
    JobStateError,
    LockLostError,
    MergeConflictError,
    RemoteError,
)
from distribute.ledger import Ledger, read_lines
from distribute.next_jobs import queue_jobs_func
from distribute.repo import Clone, faults
from support.faultplan import FaultPlan, Rates, SimulatedKill
from support.invariants import DESIGNED, check_remote, git, master_file

#: The file of a retried-jobs queue (see :func:`retry_failed_jobs_func`).
RETRIED_FILE = "retried.txt"
#: Per thread: whether a next-job function said "no job" in this thread since the flag was reset
#: (a holder's thread runs the function for itself and for the waiters it serves).
_said = threading.local()
#: How many times any thread's next-job function said "no job": a holder that serves a waiter's
#: batch request runs the waiter's (combinable) function and may answer "none" for it.
_nones = [0]


def _saying(job: Optional[str]) -> Optional[str]:
    if job is None:
        _said.none = True
        _nones[0] += 1
    return job


@combinable
def queue_func(worker: Any) -> Optional[str]:
    """``queue_jobs_func``, noting when it says "no job"."""
    return _saying(queue_jobs_func(worker))


@combinable
def retry_failed_jobs_func(worker: Any) -> Optional[str]:
    """The queue first; then, once each, a job that failed by design (noted in ``retried.txt``)."""
    job = queue_jobs_func(worker)
    if job is not None:
        return job
    root = Path(worker.path)
    retried = set(read_lines(root / RETRIED_FILE))
    for entry in Ledger.read(root).failed:
        if entry.reason == DESIGNED and entry.job not in retried:
            with open(root / RETRIED_FILE, "a", encoding="utf-8") as out:
                out.write(entry.job + "\n")
            return entry.job
    return _saying(None)


@dataclass
class Config:
    """What one seed runs (all drawn from the seed but the sizes and the leases)."""

    seed: int
    workers: int = 4
    jobs: int = 12
    lock_lease_s: float = 2.0
    job_lease_s: float = 3.0
    timeout_s: float = 60.0
    faults: bool = True
    kills: bool = True
    chain: bool = False
    retrying: bool = False
    checkpoint: float = 0.0
    batch: int = 1  #: the workers' max_batch (see distribute.batch)
    fail_once: set[str] = field(default_factory=set)
    rates: Rates = field(default_factory=Rates)
    #: Workers with a close hook (a no-op): they close their jobs themselves, never by request.
    unserved: set[str] = field(default_factory=set)
    #: Seconds between the starts of two workers (``w1`` starts that long after ``w0``...): the
    #: first works alone (without the lock) for a while, then others join.
    stagger_s: float = 0.0

    def draw(self) -> "Config":
        """Fill in the seed's choices: chaining, the retrying function, checkpoints, the jobs
        that fail once, the fault rates and kills."""
        rng = random.Random(f"config:{self.seed}")
        self.chain = rng.random() < 0.5
        self.retrying = rng.random() < 0.3
        self.checkpoint = rng.choice([0.0, 0.3, 1.0])
        self.fail_once = {job for job in job_names(self.jobs) if rng.random() < 0.15}
        self.batch = rng.choice([1, 2, 3])
        if self.faults:
            self.rates = Rates.for_seed(self.seed, worker_names(self.workers), self.lock_lease_s,
                                        kills=self.kills)
        return self

    def replay(self) -> str:
        """The one command that replays this seed."""
        return (f"python benchmarks/simulate.py --seed {self.seed} --workers {self.workers} "
                f"--jobs {self.jobs}" + ("" if self.faults else " --no-faults")
                + ("" if self.kills else " --no-kills")
                + (f" --stagger {self.stagger_s:g}" if self.stagger_s else ""))


def job_names(count: int) -> list[str]:
    """The queued jobs: ``j00``, ``j01``..."""
    return [f"j{i:02d}" for i in range(count)]


def worker_names(count: int) -> list[str]:
    """The workers: ``w0``, ``w1``..."""
    return [f"w{i}" for i in range(count)]


@dataclass
class SeedResult:
    """The outcome of one seed: the violated invariants (``[(invariant, detail)]``), the faults
    injected by kind, the git calls made and the run's duration."""

    seed: int
    ok: bool
    violations: list[tuple[str, str]]
    faults: dict[str, int]
    git_calls: int
    duration_s: float
    replay: str
    log: str = ""

    def message(self) -> str:
        """What failed, and the command that replays it."""
        lines = [f"seed {self.seed}: {len(self.violations)} violation(s); replay: {self.replay}"]
        lines += [f"  {name}: {detail}" for name, detail in self.violations]
        return "\n".join(lines)


class _Run:
    """The shared state of one seed's run: what the workers saw and did."""

    def __init__(self, config: Config, plan: Optional[FaultPlan]) -> None:
        self.config = config
        self.plan = plan
        self.violations: list[tuple[str, str]] = []
        self.raised: set[str] = set()  # jobs that raised once (fail_once)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.dead: list[distribute.Worker] = []  # killed: their threads must die with them

    def violate(self, invariant: str, detail: str) -> None:
        with self.lock:
            self.violations.append((invariant, detail))

    def first_run(self, job: str) -> bool:
        with self.lock:
            first = job in self.config.fail_once and job not in self.raised
            self.raised.add(job)
            return first


def run_seed(seed: int, workers: int = 4, jobs: int = 12, *, faults_on: bool = True,
             kills: bool = True, timeout_s: float = 60.0, keep: Optional[Path] = None,
             config: Optional[Config] = None, stagger_s: float = 0.0) -> SeedResult:
    """Run one seed to the end and check the invariants (see the module's docstring).
    ``keep``: run in that directory and leave it (else a temporary one, removed);
    ``stagger_s``: see :attr:`Config.stagger_s`."""
    config = config or Config(seed, workers, jobs, timeout_s=timeout_s, faults=faults_on,
                              kills=kills, stagger_s=stagger_s).draw()
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix=f"sim-{seed}-"))
    root.mkdir(parents=True, exist_ok=True)
    records = _LogCapture()
    started = time.monotonic()
    plan = FaultPlan(seed, config.rates) if config.faults else None
    run = _Run(config, plan)
    try:
        bare = root / "remote.git"
        Clone.init_bare(bare)
        url = f"file://{bare}"
        distribute.init_remote(url, job_names(config.jobs))
        with records.attached(), _verifying(config.faults and config.rates.misreport > 0):
            previous = faults.install(plan)
            try:
                _run_workers(run, url, root)
            finally:
                faults.install(previous)
        run.violations += check_remote(bare, config, job_names(config.jobs))
        if run.violations:  # the story of the jobs, for the diagnosis
            records.lines.append("master, first parent:\n" + git(
                bare, "log", "--first-parent", "--format=%h %s%n%(trailers:only)", "master")[1]
                + "\nretried.txt: " + repr(master_file(bare, RETRIED_FILE)))
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return SeedResult(seed, not run.violations, run.violations,
                      dict(plan.counts) if plan else {}, plan.calls if plan else 0,
                      time.monotonic() - started, config.replay(), records.text())


@contextlib.contextmanager
def _verifying(on: bool) -> Iterator[None]:
    """While on: the workers read back the pushes their host answers "ok" for (the ``file://``
    remote is trusted otherwise: the plan's misreports would pass as applied)."""
    if not on:
        yield
        return
    before = os.environ.get("DISTRIBUTE_VERIFY_PUSHES")
    os.environ["DISTRIBUTE_VERIFY_PUSHES"] = "always"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("DISTRIBUTE_VERIFY_PUSHES", None)
        else:
            os.environ["DISTRIBUTE_VERIFY_PUSHES"] = before


def run_seeds(seeds: Iterable[int], parallel: int = 1, **options: Any) -> Iterator[SeedResult]:
    """Run each seed as :func:`run_seed` does (``options``: its keywords), ``parallel`` at a time,
    each in a process of its own (the fault seam is one per process); yield the results in the
    seeds' order. One seed keeps most of its wall time waiting on git processes and leases, so
    two cores take three or four at once."""
    if parallel <= 1:
        for seed in seeds:
            yield run_seed(seed, **options)
        return
    context = multiprocessing.get_context("spawn")  # a fork would copy the caller's threads' locks
    with concurrent.futures.ProcessPoolExecutor(parallel, mp_context=context) as pool:
        futures = [pool.submit(run_seed, seed, **options) for seed in seeds]
        for future in futures:
            yield future.result()


def _run_workers(run: _Run, url: str, root: Path) -> None:
    names = worker_names(run.config.workers)
    threads = [threading.Thread(target=_worker_main, args=(run, url, root / name, name,
                                                           i * run.config.stagger_s),
                                name=f"sim-{name}", daemon=True) for i, name in enumerate(names)]
    hook = threading.excepthook
    threading.excepthook = _quiet_kills(hook)
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + run.config.timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in threads):
            run.violate("hang", f"workers still running after {run.config.timeout_s:g}s:\n"
                        + _stacks(threads))
            run.stop.set()
            if run.plan is not None:
                for name in names:
                    run.plan.kill(name)
            for thread in threads:
                thread.join(30)
        _bury(run)
    finally:
        threading.excepthook = hook


def _bury(run: _Run) -> None:
    """End the heartbeat threads of the workers that died: a dead process's threads die with it,
    and one left beating would outlive the seed (and its remote) in this process. The plan still
    marks them killed, so ``close`` stops the thread and its clean-up push never runs."""
    for worker in run.dead:
        try:
            worker.close()
        except SimulatedKill:
            pass


def _quiet_kills(hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def excepthook(args: Any) -> None:
        if not isinstance(args.exc_value, SimulatedKill):
            hook(args)
    return excepthook


def _stacks(threads: list[threading.Thread]) -> str:
    frames = sys._current_frames()
    out = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if frame is not None and (thread in threads or thread.name.startswith("distribute")):
            out.append(f"--- {thread.name}\n" + "".join(traceback.format_stack(frame)[-8:]))
    return "\n".join(out)


def _worker_main(run: _Run, url: str, path: Path, name: str, start_s: float = 0.0) -> None:
    config = run.config
    if start_s and run.stop.wait(start_s):  # (a late joiner: the run may end before)
        return
    try:
        worker = distribute.worker_from_url(
            url, path=str(path), name=name, lock_lease_s=config.lock_lease_s,
            job_lease_s=config.job_lease_s, poll_max_s=0.2)
    except SimulatedKill:
        return
    worker.max_batch = config.batch
    if name in config.unserved:
        worker.add_close_hook(lambda *_: None)
    if run.plan is not None:
        run.plan.arm(name)
    try:
        _work(run, worker)
    except SimulatedKill:
        run.dead.append(worker)  # died: no clean-up (its heartbeat thread dies at run's end)
        return
    except BaseException as exc:  # noqa: BLE001 - a worker that crashes is a finding
        run.violate("worker raised", f"{name}: {type(exc).__name__}: {exc}\n"
                    + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:]))
        if run.plan is not None:
            run.plan.kill(name)  # the process ends: its heartbeat stops
        run.dead.append(worker)
        return
    worker.close()


def _work(run: _Run, worker: distribute.Worker) -> None:
    """The worker's loop (the rules of ``run_worker_loop(idle_exit=True)``)."""
    config = run.config
    func = retry_failed_jobs_func if config.retrying else queue_func
    job: Optional[str] = None
    chained, errors = False, 0
    while not run.stop.is_set():
        if not chained:
            _said.none, nones = False, _nones[0]
            try:
                job = worker.get_next_job(func)
                errors = 0
            except (RemoteError, LockLostError) as exc:
                errors += 1
                if errors > 5:
                    raise
                logging.getLogger("simulation").warning("%s: %s; trying again", worker.name, exc)
                time.sleep(0.1 * errors)
                continue
        chained = False
        if job is None:
            if not getattr(_said, "none", False) and _nones[0] == nones:
                run.violate("told no job without its function saying so",
                            f"{worker.name} got None, but no next-job function returned None "
                            "in its thread during that call")
            ledger = worker.workspace.ledger()
            if not ledger.queued and not ledger.running:
                return
            time.sleep(0.2)
            continue
        _said.none, nones = False, _nones[0]
        chained, job = _run_job(run, worker, job, func if config.chain else None)


def _run_job(run: _Run, worker: distribute.Worker, job: str,
             chain: Optional[Callable[..., Optional[str]]]) -> tuple[bool, Optional[str]]:
    """Run ``job`` and close it; return whether a next job was asked for with the close, and
    the job claimed (``None``: none)."""
    reason: Optional[str] = None
    try:
        Path(worker.job_dir or "").joinpath("result.txt").write_text(
            f"{worker.name} {job}\n", encoding="utf-8")
        rng = random.Random(f"job:{run.config.seed}:{worker.name}:{job}")
        if rng.random() < run.config.checkpoint:
            worker.commit_update()
        if run.first_run(job):
            raise RuntimeError("fails on its first run")
    except SimulatedKill:
        raise
    except RuntimeError as exc:
        reason = f"SimulatedFailure: {exc}"
    except Exception as exc:  # noqa: BLE001 - as run_worker_loop: the job failed
        reason = f"{type(exc).__name__}: {exc}"
    action = worker.finish_job if reason is None else \
        (lambda next_job_func=None: worker.fail_job(reason or "", next_job_func))
    try:
        return chain is not None, _close(action, chain)
    except MergeConflictError as exc:
        conflict = str(exc)
        return chain is not None, _close(
            lambda next_job_func=None: worker.fail_job(conflict, next_job_func), chain)
    except JobStateError:  # e.g. done meanwhile by another worker after a requeue
        if worker.running_job is not None:
            worker.give_back_job()
        return False, None


def _close(action: Callable[..., Optional[str]],
           chain: Optional[Callable[..., Optional[str]]]) -> Optional[str]:
    """As ``loop._close``: retry a close whose lock was lost or whose remote was out of reach."""
    for attempt in range(1, 4):
        try:
            return action(next_job_func=chain) if chain else action()
        except DistributeError as exc:
            if isinstance(exc, (MergeConflictError, JobStateError)) or attempt == 3:
                raise
            logging.getLogger("simulation").warning("close failed (%s); trying again", exc)
            time.sleep(0.2 * attempt)
    return None  # pragma: no cover


class _LogCapture(logging.Handler):
    """Keeps the package's log records of one run (for the replay's diagnosis)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: collections.deque[str] = collections.deque(maxlen=20000)
        self.setFormatter(logging.Formatter("%(relativeCreated)8.0f %(threadName)s "
                                            "%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines)

    def attached(self) -> "_Attached":
        return _Attached(self)


class _Attached:
    def __init__(self, handler: logging.Handler) -> None:
        self.handler = handler

        self.levels: dict[str, int] = {}

    def __enter__(self) -> None:
        for name in ("distribute", "simulation"):
            logger = logging.getLogger(name)
            self.levels[name] = logger.level
            logger.setLevel(logging.DEBUG)
            logger.addHandler(self.handler)

    def __exit__(self, *exc: object) -> None:
        for name in ("distribute", "simulation"):
            logger = logging.getLogger(name)
            logger.removeHandler(self.handler)
            logger.setLevel(self.levels[name])
