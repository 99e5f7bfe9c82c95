"""Optuna sweeps with the study kept on the remote (``distribute.optuna``), read back with plain Optuna."""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")
from optuna.storages import JournalStorage  # noqa: E402
from optuna.storages.journal import JournalFileBackend  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from support import SUPPORT_DIR  # noqa: E402
from support.optuna_jobs import value_at  # noqa: E402
from support.processes import wait_line  # noqa: E402
from support.remotes import git_out, jobs_in, ledger_file  # noqa: E402

from distribute import JobStateError, init_remote, worker_from_url  # noqa: E402
from distribute.ledger import Ledger  # noqa: E402
from distribute.loop import run_worker_loop  # noqa: E402
from distribute.optuna import OptunaSearch  # noqa: E402
from distribute.protocol import job_path  # noqa: E402

pytestmark = pytest.mark.slow

optuna.logging.set_verbosity(optuna.logging.WARNING)
X = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
ROOT = Path(__file__).resolve().parent.parent


def plain_study(url: str, tmp: Path, name: str = "sweep", rev: str = "master") -> Any:
    """The study as anyone reads it: a plain clone and ``optuna.load_study`` on the journal."""
    clone = tmp / f"plain-{rev.replace('/', '_')}"
    if not clone.exists():
        subprocess.run(["git", "clone", "-q", url, str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", rev], check=True)
    storage = JournalStorage(JournalFileBackend(str(clone / "optuna" / f"{name}.log")))
    return optuna.load_study(study_name=name, storage=storage)


def tells(url: str, tmp: Path, name: str = "sweep") -> collections.Counter:
    """How often each trial id was given a state other than RUNNING in the journal."""
    lines = git_out(url, "show", f"master:optuna/{name}.log", tmp=tmp).splitlines()
    ops = [json.loads(line) for line in lines]
    return collections.Counter(op["trial_id"] for op in ops
                               if op["op_code"] == 6 and op["state"] != TrialState.RUNNING)


def committed_files(url: str, tmp: Path) -> set[str]:
    return set(git_out(url, "log", "--all", "--name-only", "--format=", tmp=tmp).split())


def test_the_contract_loop(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote)
    worker = worker_from_url(file_remote, path="copy", name="gpu-1")
    search = OptunaSearch(worker, "sweep", X, direction="minimize",
                          sampler=optuna.samplers.TPESampler(seed=7), n_trials=6)
    while True:
        job = worker.get_next_job(search.next_job)
        if job is None:
            break
        trial = search.trial()
        assert job == f"optuna:sweep:{trial.number}"
        search.finish((trial.params["x"] - 0.3) ** 2)
    worker.close()

    study = plain_study(file_remote, tmp_path)
    assert [t.number for t in study.trials] == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert all(t.value == (t.params["x"] - 0.3) ** 2 for t in study.trials)
    assert sorted(tells(file_remote, tmp_path).values()) == [1] * 6
    assert jobs_in(file_remote, "done.txt", tmp_path) == [f"optuna:sweep:{i}" for i in range(6)]
    record = json.loads(git_out(file_remote, "show", f"master:{job_path('optuna:sweep:2')}"
                                f"/trial.json", tmp=tmp_path))
    assert record["params"] == study.trials[2].params and record["values"] == [study.trials[2].value]
    assert not any(f.endswith((".lock", ".rename")) for f in committed_files(file_remote, tmp_path))
    # the params were sampled at ask time and committed with the claim, before any finish
    claim = git_out(file_remote, "log", "--format=%H", "--grep=took job optuna:sweep:3$",
                    "master", tmp=tmp_path).split()[0]
    at_claim = plain_study(file_remote, tmp_path, rev=claim)
    assert at_claim.trials[3].state == TrialState.RUNNING
    assert at_claim.trials[3].params == study.trials[3].params


def test_report_prune_fail_and_attributes(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote)
    worker = worker_from_url(file_remote, path="copy", name="w")
    search = OptunaSearch(worker, "prunes", X, n_trials=3)
    assert worker.get_next_job(search.next_job) == "optuna:prunes:0"
    trial = search.trial()
    trial.report(0.9, 1)
    trial.set_user_attr("epochs", 1)
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)  # define-by-run, beside the space
    assert trial.suggest_float("x", 0.0, 1.0) == trial.params["x"]
    search.finish(0.5)
    assert worker.get_next_job(search.next_job) == "optuna:prunes:1"
    search.trial().report(0.7, 3)
    search.prune()
    assert worker.get_next_job(search.next_job) == "optuna:prunes:2"
    search.fail("out of memory")
    assert worker.get_next_job(search.next_job) is None
    worker.close()

    t0, t1, t2 = plain_study(file_remote, tmp_path, "prunes").trials
    assert (t0.state, t0.value, t0.intermediate_values, t0.user_attrs) == \
        (TrialState.COMPLETE, 0.5, {1: 0.9}, {"epochs": 1})
    assert t0.params["lr"] == lr
    assert (t1.state, t1.value, t1.intermediate_values) == (TrialState.PRUNED, 0.7, {3: 0.7})
    assert (t2.state, t2.system_attrs["fail_reason"]) == (TrialState.FAIL, "out of memory")
    assert [l.split("\t")[0] for l in ledger_file(file_remote, "failed.txt", tmp_path)] == \
        ["optuna:prunes:2"]
    assert "out of memory" in ledger_file(file_remote, "failed.txt", tmp_path)[0]
    assert sorted(tells(file_remote, tmp_path, "prunes").values()) == [1, 1, 1]


def test_multi_objective(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote)
    worker = worker_from_url(file_remote, path="copy", name="w")
    search = OptunaSearch(worker, "pareto", X, directions=["minimize", "maximize"], n_trials=3)
    while (job := worker.get_next_job(search.next_job)) is not None:
        x = search.trial().params["x"]
        with pytest.raises(ValueError, match="2 number"):
            search.finish(x)
        search.finish((x, x))  # minimise x and maximise x: every trial is Pareto-optimal
    worker.close()
    study = plain_study(file_remote, tmp_path, "pareto")
    assert [t.values for t in study.trials] == [[t.params["x"], t.params["x"]]
                                                for t in study.trials]
    assert len(study.best_trials) == 3
    other = worker_from_url(file_remote, path="copy2", name="v")
    with pytest.raises(ValueError, match="directions"):  # the remote's study is multi-objective
        other.get_next_job(OptunaSearch(other, "pareto", X).next_job)
    other.close()


def _requeue(url: str, job: str, max_attempts: int) -> None:
    """What a waiting worker does to a job whose worker went silent (``ledger.requeue``)."""
    admin = worker_from_url(url, path="admin", name="admin")

    def edit(ledger: Ledger, root: Path) -> str:
        ledger.requeue(job, max_attempts, "its worker went silent")
        ledger.write(root, queue=True)
        return f"admin requeued {job}"

    admin.update_master(edit)
    admin.close()


def test_a_requeued_trial_is_retried_and_told_once(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote)
    slow = worker_from_url(file_remote, path="a", name="slow")
    first = OptunaSearch(slow, "sweep", X, n_trials=2)
    assert slow.get_next_job(first.next_job) == "optuna:sweep:0"
    x = first.trial().params["x"]
    _requeue(file_remote, "optuna:sweep:0", max_attempts=3)

    fast = worker_from_url(file_remote, path="b", name="fast")
    second = OptunaSearch(fast, "sweep", X, n_trials=2)
    assert fast.get_next_job(second.next_job) == "optuna:sweep:0"  # the same trial, no new ask
    assert second.trial().params == {"x": x}
    assert second.finish(1.0, second.next_job) == "optuna:sweep:1"
    second.finish(2.0)
    with pytest.raises(JobStateError, match="already done"):
        first.finish(9.0)  # the slow worker came back too late: not told again
    slow.close(), fast.close()

    study = plain_study(file_remote, tmp_path)
    assert [(t.state, t.value) for t in study.trials] == [(TrialState.COMPLETE, 1.0),
                                                           (TrialState.COMPLETE, 2.0)]
    assert tells(file_remote, tmp_path) == {0: 1, 1: 1}
    done = {l.split("\t")[0]: l.split("\t") for l in ledger_file(file_remote, "done.txt", tmp_path)}
    assert done["optuna:sweep:0"][1:2] == ["fast"] and done["optuna:sweep:0"][3] == "2"


def test_a_trial_that_used_its_attempts_is_failed(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote)
    dead = worker_from_url(file_remote, path="a", name="dead")
    assert dead.get_next_job(OptunaSearch(dead, "sweep", X, n_trials=2).next_job) == \
        "optuna:sweep:0"
    _requeue(file_remote, "optuna:sweep:0", max_attempts=1)  # gave up: to failed.txt
    live = worker_from_url(file_remote, path="b", name="live")
    search = OptunaSearch(live, "sweep", X, n_trials=2)
    assert live.get_next_job(search.next_job) == "optuna:sweep:1"
    search.finish(0.25)
    assert live.get_next_job(search.next_job) is None

    def back(ledger: Ledger, root: Path) -> str:  # what `distribute requeue` does to a failure
        ledger.failed = [e for e in ledger.failed if e.job != "optuna:sweep:0"]
        ledger.queued.insert(0, "optuna:sweep:0")
        ledger.write(root, queue=True)
        return "requeued by hand"

    live.update_master(back)
    assert live.get_next_job(search.next_job) is None  # a told trial cannot run again: dropped
    assert jobs_in(file_remote, "jobs.txt", tmp_path) == []
    dead.close(), live.close()
    t0, t1 = plain_study(file_remote, tmp_path).trials
    assert t0.state == TrialState.FAIL and "gave up after 1 attempts" in t0.system_attrs[
        "fail_reason"]
    assert (t1.state, t1.value) == (TrialState.COMPLETE, 0.25)


def test_run_worker_loop_with_a_runner(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote)
    search = OptunaSearch(None, "loop", X, n_trials=4)  # bound by its first next_job call

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 1:
            raise ValueError("diverged")
        if trial.number == 2:
            trial.report(0.125, 0)
            raise optuna.TrialPruned()
        return trial.params["x"]

    worker = worker_from_url(file_remote, path="copy", name="w")
    result = run_worker_loop(worker, search.runner(objective), search.next_job, idle_exit=True,
                             poll_s=0.1, grace_s=5)
    worker.close()
    assert (result.done, result.failed, result.ended_by) == (3, 1, "idle")
    t0, t1, t2, t3 = plain_study(file_remote, tmp_path, "loop").trials
    assert [t.state for t in (t0, t1, t2, t3)] == [TrialState.COMPLETE, TrialState.FAIL,
                                                   TrialState.PRUNED, TrialState.COMPLETE]
    assert (t0.value, t2.value, t3.value) == (t0.params["x"], 0.125, t3.params["x"])
    assert t1.system_attrs["fail_reason"] == "ValueError: diverged"


def test_distribute_worker_command(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SUPPORT_DIR), str(ROOT)]),
           "SWEEP_TRIALS": "3"}
    proc = subprocess.run([sys.executable, "-m", "distribute", "worker", file_remote, "--run",
                           "optuna_jobs:run", "--next-job", "optuna_jobs:search.next_job",
                           "--exit-when-queue-empty", "--name", "cli"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cli finished job optuna:sweep:2" in proc.stdout
    study = plain_study(file_remote, tmp_path)
    assert [(t.number, t.state, t.value) for t in study.trials] == [
        (i, TrialState.COMPLETE, value_at(study.trials[i].params)) for i in range(3)]
    result = git_out(file_remote, "show", f"master:{job_path('optuna:sweep:1')}"
                     "/result.txt", tmp=tmp_path)
    assert result.split()[0] == "1" and result.split()[2] == "cli"


def test_other_copies_follow_a_growing_journal(daemon_remote: str, tmp_path: Path) -> None:
    """A slim copy without ``optuna/`` (another job's worker) is sent the new journal as a
    delta against a version it never had; over git:// that base must still be fetchable."""
    init_remote(daemon_remote, ["plain-job"])
    sweeper = worker_from_url(daemon_remote, path="a", name="sweeper")
    search = OptunaSearch(sweeper, "sweep", X, n_trials=6)
    for _ in range(3):
        sweeper.get_next_job(search.next_job)
        search.finish(1.0)
    other = worker_from_url(daemon_remote, path="b", name="other")
    for _ in range(3):
        sweeper.get_next_job(search.next_job)
        search.finish(1.0)
        assert other.get_next_job(lambda: None) is None  # (a fetch of the newest master)
    assert other.get_next_job(OptunaSearch(other, "sweep", X, n_trials=6).next_job) is None
    sweeper.close(), other.close()
    assert len(plain_study(daemon_remote, tmp_path).trials) == 6


def test_bad_arguments_and_optional_import(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="study name"):
        OptunaSearch(None, "../up", X)
    with pytest.raises(ValueError, match="search_space"):
        OptunaSearch(None, "s", {})
    with pytest.raises(ValueError, match="not both"):
        OptunaSearch(None, "s", X, direction="minimize", directions=["maximize"])
    with pytest.raises(ValueError, match="no worker"):
        OptunaSearch(None, "s", X).trial()
    code = "import sys, distribute; assert 'optuna' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_processes_and_a_sigkill_mid_trial(daemon_remote: str, tmp_path: Path) -> None:
    """Three workers (two Python loops and one ``distribute worker --run``) finish a sweep of
    ten trials on one remote while a fourth, SIGKILLed mid-trial, never comes back."""
    url, trials = daemon_remote, 10
    init_remote(url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SUPPORT_DIR), str(ROOT)]),
           "SWEEP_TRIALS": str(trials), "DISTRIBUTE_LOCK_LEASE_S": "2",
           "DISTRIBUTE_JOB_LEASE_S": "3", "DISTRIBUTE_POLL_MAX_S": "0.2"}

    def spawn(name: str, *cmd: str, seed: int) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, *cmd], env={**env, "SWEEP_SEED": str(seed)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    worker_py = str(SUPPORT_DIR / "optuna_worker.py")
    victim = spawn("victim", worker_py, url, str(tmp_path / "v"), "victim", "victim", seed=1)
    _, job, x = wait_line(victim, "RUNNING").split()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert job == "optuna:sweep:0"
    procs = [spawn(f"w{i}", worker_py, url, str(tmp_path / f"w{i}"), f"w{i}", "optimize",
                   seed=10 + i) for i in range(2)]
    procs.append(spawn("cli", "-m", "distribute", "worker", url, "--run", "optuna_jobs:run",
                       "--next-job", "optuna_jobs:search.next_job", "--idle-exit", "--poll",
                       "0.2", "--name", "cli", "--path", str(tmp_path / "cli"), seed=20))
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]

    study = plain_study(url, tmp_path)
    assert [t.number for t in study.trials] == list(range(trials))
    assert all(t.state == TrialState.COMPLETE for t in study.trials), \
        [(t.number, t.state) for t in study.trials]
    assert all(t.value == value_at(t.params) for t in study.trials)
    assert study.trials[0].params["x"] == float(x)  # the victim's trial, retried elsewhere
    assert tells(url, tmp_path) == {i: 1 for i in range(trials)}
    assert sorted(jobs_in(url, "done.txt", tmp_path)) == sorted(f"optuna:sweep:{i}"
                                                                for i in range(trials))
    assert jobs_in(url, "running.txt", tmp_path) == [] and jobs_in(url, "jobs.txt", tmp_path) == []
    done = {l.split("\t")[0]: l.split("\t") for l in ledger_file(url, "done.txt", tmp_path)}
    assert done[job][1] != "victim" and done[job][3] == "2"
    result = git_out(url, "show", f"master:{job_path(job)}/result.txt", tmp=tmp_path)
    assert result.split()[:2] == ["0", repr(value_at(study.trials[0].params))]
    assert not any(f.endswith((".lock", ".rename")) for f in committed_files(url, tmp_path))


def test_the_example(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    example = str(ROOT / "examples" / "optuna_sweep.py")
    proc = subprocess.run([sys.executable, example, "--trials", "6"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("6 trials (COMPLETE) in optuna/sweep.log on master\nbest: trial ")
    helped = subprocess.run([sys.executable, example, "--help"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert helped.returncode == 0 and "usage:" in helped.stdout and not helped.stderr
