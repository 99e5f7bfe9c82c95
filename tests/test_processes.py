"""Guarantees under concurrency, shown with real worker processes and SIGKILL."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from support.processes import spawn_worker, wait_line
from support.remotes import assert_settled, git_out, jobs_in, ledger_file

from distribute import LocalCopyError, init_remote, worker_from_url
from distribute.protocol import job_path

pytestmark = pytest.mark.slow

LEASES = ("--lock-lease", "2", "--job-lease", "3")


def wait_all(procs: list[subprocess.Popen[str]], timeout: float = 240) -> None:
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]


def test_six_workers_drain_sixty_jobs(daemon_remote: str, tmp_path: Path) -> None:
    jobs = [f"job{i:03d}" for i in range(60)]
    init_remote(daemon_remote, jobs)
    # nobody dies here: a job lease long enough that a loaded machine never requeues a live job
    procs = [spawn_worker(daemon_remote, tmp_path / f"w{i}", f"w{i}", "drain", "--lock-lease", "2",
                          "--job-lease", "12") for i in range(6)]
    wait_all(procs)
    workers = assert_settled(daemon_remote, jobs, tmp_path)
    assert len(set(workers)) >= 2  # the work was actually shared
    story = git_out(daemon_remote, "log", "--first-parent", "--format=%s", "master",
                    tmp=tmp_path).splitlines()
    assert len(story) == 1 + 2 * len(jobs)


def test_dead_lock_holder_does_not_block(file_remote: str, tmp_path: Path) -> None:
    jobs = [f"job{i}" for i in range(10)]
    init_remote(file_remote, jobs)
    holder = spawn_worker(file_remote, tmp_path / "dead", "dead", "hold-lock", *LEASES)
    wait_line(holder, "HOLDING")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    refs = git_out(file_remote, "for-each-ref", "--format=%(refname)", tmp=tmp_path).split()
    assert "refs/distribute/lock" in refs  # the dead holder's lock is still there
    procs = [spawn_worker(file_remote, tmp_path / f"w{i}", f"w{i}", "drain", *LEASES)
             for i in range(3)]
    wait_all(procs)
    assert_settled(file_remote, jobs, tmp_path)
    assert "HALF-MADE" not in git_out(file_remote, "log", "--all", "--name-only", "--format=",
                                      tmp=tmp_path)
    assert "dead" not in git_out(file_remote, "log", "--format=%s", "master", tmp=tmp_path)


@pytest.mark.parametrize("max_attempts,expect", [(3, "done"), (1, "failed")])
def test_worker_killed_mid_job(file_remote: str, tmp_path: Path, max_attempts: int,
                               expect: str) -> None:
    jobs = ["first", "second", "third"]
    init_remote(file_remote, jobs)
    opts = (*LEASES, "--max-attempts", str(max_attempts))
    victim = spawn_worker(file_remote, tmp_path / "victim", "victim", "block-job", *opts)
    assert wait_line(victim, "RUNNING") == "RUNNING first"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert jobs_in(file_remote, "running.txt", tmp_path) == ["first"]
    procs = [spawn_worker(file_remote, tmp_path / f"w{i}", f"w{i}", "drain", *opts)
             for i in range(2)]
    wait_all(procs)
    assert jobs_in(file_remote, "running.txt", tmp_path) == []
    if expect == "done":
        assert_settled(file_remote, jobs, tmp_path)
        done = {l.split("\t")[0]: l.split("\t") for l in ledger_file(file_remote, "done.txt",
                                                                     tmp_path)}
        assert done["first"][1] != "victim" and done["first"][3] == "2"
        story = git_out(file_remote, "log", "--format=%s", "master", tmp=tmp_path)
        assert "requeued job first (victim silent for" in story
    else:
        failed = ledger_file(file_remote, "failed.txt", tmp_path)
        assert [l.split("\t")[:2] for l in failed] == [["first", "victim"]]
        assert "gave up after 1 attempts" in failed[0]
        assert sorted(jobs_in(file_remote, "done.txt", tmp_path)) == ["second", "third"]
    if expect == "done":  # the attempt resuming from the dead one's branch took it in
        refs = git_out(file_remote, "for-each-ref", "--format=%(refname)", tmp=tmp_path).split()
        assert "refs/heads/victim/first" not in refs
        assert "partial result" in story  # (the dead attempt's checkpoint, in master's history)
    else:  # the dead worker's partial result stays on its branch
        assert git_out(file_remote, "show", f"victim/first:{job_path('first')}/result.txt",
                       tmp=tmp_path) == "first by victim\n"


def test_two_processes_one_local_copy(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote, ["a"])
    holder = spawn_worker(file_remote, tmp_path / "copy", "one", "hold-lock", *LEASES)
    wait_line(holder, "HOLDING")
    try:
        with pytest.raises(LocalCopyError, match="in use"):
            worker_from_url(file_remote, tmp_path / "copy", "two")
    finally:
        holder.kill()
        holder.wait()


def wait_refs(url: str) -> list[str]:
    """The names of the workers with a wait ref on the remote."""
    out = subprocess.run(["git", "ls-remote", url, "refs/distribute/wait/*"], check=True,
                         capture_output=True, text=True).stdout
    return [line.split("\t")[1].rsplit("/", 1)[1] for line in out.splitlines()]


def wait_until_waiting(url: str, name: str, proc: subprocess.Popen[str]) -> None:
    """Block until ``name`` has announced on the remote that it waits for the lock."""
    deadline = time.monotonic() + 120
    while name not in wait_refs(url):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{name} never queued for the lock"
        time.sleep(0.05)


def test_waiters_take_the_lock_in_arrival_order(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote, ["a", "b"])
    go = tmp_path / "go"
    holder = spawn_worker(file_remote, tmp_path / "h", "holder", "hold-lock", "--until", str(go),
                          *LEASES)
    wait_line(holder, "HOLDING")
    # names sort against arrival order, so that a tie broken by name would show
    first = spawn_worker(file_remote, tmp_path / "z", "z-first", "one-job", *LEASES)
    wait_until_waiting(file_remote, "z-first", first)
    second = spawn_worker(file_remote, tmp_path / "a", "a-second", "one-job", *LEASES)
    wait_until_waiting(file_remote, "a-second", second)
    go.touch()
    assert wait_line(first, "TOOK") == "TOOK a"
    assert wait_line(second, "TOOK") == "TOOK b"
    wait_all([holder, first, second])
    assert wait_refs(file_remote) == []


def test_a_dead_waiter_does_not_block(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote, ["a"])
    go = tmp_path / "go"
    holder = spawn_worker(file_remote, tmp_path / "h", "holder", "hold-lock", "--until", str(go),
                          *LEASES)
    wait_line(holder, "HOLDING")
    ghost = spawn_worker(file_remote, tmp_path / "g", "ghost", "one-job", *LEASES)
    wait_until_waiting(file_remote, "ghost", ghost)
    ghost.send_signal(signal.SIGKILL)
    ghost.wait()
    go.touch()
    wait_all([holder])
    assert wait_refs(file_remote) == ["ghost"]  # first in line, and dead
    alive = spawn_worker(file_remote, tmp_path / "w", "alive", "one-job", *LEASES)
    assert wait_line(alive, "TOOK") == "TOOK a"
    wait_all([alive])
    assert wait_refs(file_remote) == []  # the taker deleted the dead waiter's ref
    assert jobs_in(file_remote, "done.txt", tmp_path) == ["a"]
