"""Batches: several jobs claimed in one push and closed in one push, served in line as one
request, released on a clean stop, and requeued when their worker dies (real git, ``file://``
remotes; the last test kills a ``distribute worker`` process holding a batch)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.processes import cli_env, kill_tree, wait_line
from support.remotes import assert_settled, git_out, jobs_in, ledger_file
from support.serving import InLine, hold_lock_as_dead_holder, patient, server, subjects, until, \
    wait_refs

from distribute import Worker, add_jobs, init_remote, queue_jobs_func, worker_from_url
from distribute.protocol import job_path


def count_pushes(bare: Path) -> Path:
    """Make the bare remote log one line per push it applies; returns the log."""
    log = bare / "pushes.log"
    hook = bare / "hooks" / "post-receive"
    hook.write_text(f"#!/bin/sh\necho push >> '{log}'\n")
    hook.chmod(0o755)
    return log


def pushes(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def run(worker: Worker, job: str) -> None:
    Path(worker.job_dir or "", "result.txt").write_text(f"{job} by {worker.name}\n")


def test_a_batch_is_claimed_in_one_hold_and_closed_in_one(ledger_remote: tuple[Path, str],
                                                          tmp_path: Path) -> None:
    """Three jobs claimed in one hold run one after another with no git traffic between them;
    the last one's finish merges all three (one commit each) and claims the next batch."""
    bare, url = ledger_remote
    worker = worker_from_url(url, path=tmp_path / "w", name="w")
    worker.max_batch = 3
    jobs = [f"J{i}" for i in range(1, 7)]
    add_jobs(worker, jobs)
    log = count_pushes(bare)
    assert worker.get_next_job(queue_jobs_func) == "J1"
    assert pushes(log) == 1  # alone, after its first hold (add_jobs): no lock, one push
    assert jobs_in(url, "running.txt", tmp_path) == ["J1", "J2", "J3"]
    done = []
    job = "J1"
    while job is not None:
        run(worker, job)
        done.append(job)
        before = pushes(log)
        job = worker.finish_job(queue_jobs_func)
        if job in ("J2", "J3", "J5", "J6"):  # the next job of the same batch
            assert pushes(log) == before and worker.landed == []
        elif job == "J4":
            assert pushes(log) == before + 1 and worker.landed == ["J1", "J2", "J3"]
    assert done == jobs and worker.landed == ["J4", "J5", "J6"]
    story = subjects(url, tmp_path)
    assert story[-12:] == [*(f"w took job {j}" for j in jobs[:3]),
                           *(f"w finished job {j}" for j in jobs[:3]),
                           *(f"w took job {j}" for j in jobs[3:]),
                           *(f"w finished job {j}" for j in jobs[3:])]
    assert jobs_in(url, "done.txt", tmp_path) == jobs
    for j in jobs:
        assert git_out(url, "show", f"master:{job_path(j)}/result.txt", tmp=tmp_path) == \
            f"{j} by w\n"
    branches = git_out(url, "for-each-ref", "--format=%(refname)", "refs/heads/",
                       tmp=tmp_path).split()
    assert branches == ["refs/heads/master"]  # every job branch deleted by its finish's push
    worker.close()


def test_a_batch_request_is_served_whole(ledger_remote: tuple[Path, str],
                                         tmp_path: Path) -> None:
    """A waiter that finished one job of its batch and closes the second waits in line with one
    request: the holder merges both (each with its own result) and claims its fair share."""
    bare, url = ledger_remote
    waiter = patient(url, tmp_path, "waiter")
    waiter.max_batch = 2
    add_jobs(waiter, ["J1", "J2", "J3", "J4"])
    assert waiter.get_next_job(queue_jobs_func) == "J1"
    run(waiter, "J1")
    assert waiter.finish_job(queue_jobs_func) == "J2"  # (J1 closes with J2)
    run(waiter, "J2")
    hold_lock_as_dead_holder(bare)
    in_line = InLine(lambda: waiter.finish_job(queue_jobs_func))
    until(lambda: bool(wait_refs(bare)), "the waiter's request in line")
    holder = server(url, tmp_path)
    assert holder.get_next_job(queue_jobs_func) == "J3"
    assert in_line.join() == "J4"  # its share of what was left: one job
    assert waiter.landed == ["J1", "J2"]
    assert subjects(url, tmp_path)[-4:] == [
        "holder took job J3", "waiter finished job J1 (served by holder)",
        "waiter finished job J2 (served by holder)", "waiter took job J4 (served by holder)"]
    for j in ("J1", "J2"):
        assert git_out(url, "show", f"master:{job_path(j)}/result.txt", tmp=tmp_path) == \
            f"{j} by waiter\n"
    run(waiter, "J4")
    run(holder, "J3")
    assert waiter.finish_job(queue_jobs_func) is None
    assert holder.finish_job(queue_jobs_func) is None
    assert jobs_in(url, "done.txt", tmp_path) == ["J1", "J2", "J4", "J3"]
    assert jobs_in(url, "running.txt", tmp_path) == []
    waiter.close()
    holder.close()


def test_a_stopping_worker_closes_its_finished_jobs_and_gives_back_the_rest(
        ledger_remote: tuple[Path, str], tmp_path: Path) -> None:
    """``close()`` with a batch half done: the job finished here lands, the running one stays
    running (as without batches), the one not started goes back to the head of the queue and
    its unused branch is deleted."""
    _, url = ledger_remote
    worker = worker_from_url(url, path=tmp_path / "w", name="w")
    worker.max_batch = 3
    add_jobs(worker, ["J1", "J2", "J3", "J4"])
    assert worker.get_next_job(queue_jobs_func) == "J1"
    run(worker, "J1")
    assert worker.finish_job(queue_jobs_func) == "J2"
    worker.close()
    assert jobs_in(url, "done.txt", tmp_path) == ["J1"]
    assert jobs_in(url, "running.txt", tmp_path) == ["J2"]
    assert jobs_in(url, "jobs.txt", tmp_path) == ["J3", "J4"]
    assert subjects(url, tmp_path)[-1] == "w gave back job J3 (not started)"
    branches = git_out(url, "for-each-ref", "--format=%(refname)", "refs/heads/",
                       tmp=tmp_path).split()
    assert sorted(branches) == ["refs/heads/master", "refs/heads/w/J2"]


@pytest.mark.slow
def test_a_worker_killed_with_a_batch_loses_no_job(file_remote: str, tmp_path: Path) -> None:
    """SIGKILL of a ``distribute worker`` holding a batch of three (one running, two waiting):
    after its heartbeat has been silent for the job lease, two other workers requeue the three
    and drain everything; each job is done exactly once."""
    jobs = [f"job{i}" for i in range(9)]
    env = cli_env(tmp_path, {"DISTRIBUTE_MAX_BATCH": "3", "DISTRIBUTE_JOB_LEASE_S": "3",
                             "DISTRIBUTE_LOCK_LEASE_S": "2"})

    def worker(name: str, run_func: str, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "distribute", "worker", file_remote,
                                 "--name", name, "--path", str(tmp_path / name), "--run",
                                 run_func, *extra], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)

    init_remote(file_remote, jobs)
    victim = worker("victim", "cli_jobs:block")
    assert wait_line(victim, "RUNNING") == "RUNNING job0"
    kill_tree(victim.pid)
    victim.wait()
    held = [line.split("\t")[:2] for line in ledger_file(file_remote, "running.txt", tmp_path)]
    assert held == [["job0", "victim"], ["job1", "victim"], ["job2", "victim"]]
    survivors = [worker(f"w{i}", "cli_jobs:write", "--idle-exit") for i in range(2)]
    for proc in survivors:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    assert set(assert_settled(file_remote, jobs, tmp_path)) <= {"w0", "w1"}
    story = git_out(file_remote, "log", "--first-parent", "--format=%s", "master",
                    tmp=tmp_path)
    assert sum(f"requeued job job{i} (victim silent" in story for i in range(3)) == 3
