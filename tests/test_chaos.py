"""Chaos: workers killed at random, the remote going away, lock holders dying at every step."""
from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from support.gitservers import GitDaemon
from support.processes import Pool, kill_tree, spawn_worker, wait_line
from support.remotes import assert_settled, fsck, git_out, person_appends

from distribute import init_remote

pytestmark = pytest.mark.slow

LEASES = ("--lock-lease", "2", "--job-lease", "3")


def test_chaos_drain(daemon: GitDaemon, tmp_path: Path) -> None:
    """Eight workers drain a queue whose head repeats 40 lines, while three are killed and a
    person appends jobs with plain git pushes."""
    url = daemon.url("remote.git")
    jobs = [f"job{i:03d}" for i in range(120)]
    init_remote(url, jobs[:40] + jobs)  # someone pasted the first 40 lines twice
    pool = Pool(url, tmp_path, *LEASES, "--sleep-ms", "100", "400", "--poll-max", "0.5")
    for i in range(8):
        pool.start(f"w{i}")
    rng = random.Random(7)
    added: list[str] = []
    for round_, at in enumerate((30, 60, 90)):
        pool.wait_took(at)
        batch = [f"added{round_}-{i}" for i in range(4)]
        person_appends(url, tmp_path / "person", batch + jobs[:3])  # new ones, and repeats
        added += batch
        victim = rng.choice([n for n, p in pool.procs.items() if p.returncode is None])
        pool.kill(victim)
        pool.start(f"replacement{round_}")
    pool.wait_all()
    assert_settled(url, jobs + added, tmp_path)
    fsck(daemon.base_path / "remote.git")


def test_remote_outage(daemon: GitDaemon, tmp_path: Path) -> None:
    url = daemon.url("remote.git")
    jobs = [f"job{i:02d}" for i in range(28)]
    init_remote(url, jobs)
    pool = Pool(url, tmp_path, *LEASES, "--sleep-ms", "100", "300")
    for i in range(4):
        pool.start(f"w{i}")
    pool.wait_took(10)
    daemon.stop()
    failures_before = pool.log_text().count("retrying in")
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:  # the outage itself: 12 s (4 job leases) without a remote
        time.sleep(0.5)
    failures_during = pool.log_text().count("retrying in") - failures_before
    daemon.start()
    pool.wait_all()
    assert_settled(url, jobs, tmp_path)
    assert failures_during >= 4  # every worker noticed and said so
    assert failures_during <= 4 * 3 * 12  # backing off: a handful of attempts per thread, not a busy loop


def test_lock_holder_dies_at_every_step(tmp_path: Path, file_remote: str) -> None:
    bare = Path(file_remote.removeprefix("file://"))
    jobs = [f"job{i}" for i in range(6)]
    init_remote(file_remote, jobs)
    # (a) right after taking the lock, (b) inside the next-job function
    for mode, line in (("take-lock", "LOCKED"), ("hold-lock", "HOLDING")):
        proc = spawn_worker(file_remote, tmp_path / mode, mode, mode, *LEASES)
        wait_line(proc, line)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert "refs/distribute/lock" in git_out(file_remote, "for-each-ref", tmp=tmp_path)
        waiter = spawn_worker(file_remote, tmp_path / f"after-{mode}", f"after-{mode}",
                              "take-lock", *LEASES)
        wait_line(waiter, "LOCKED")  # took over once the lease ran out
        os.killpg(waiter.pid, signal.SIGKILL)
        waiter.wait()
    # (c) between preparing the atomic update and pushing it: the server holds the push
    hook = bare / "hooks" / "pre-receive"
    flag = tmp_path / "block-next-master-push"
    hook.write_text(f"""#!/bin/sh
if grep -q ' refs/heads/master$' && mv {flag} {flag}.taken 2>/dev/null; then
  touch {tmp_path}/push-held; sleep 60
fi
""")
    hook.chmod(0o755)
    flag.touch()
    victim = spawn_worker(file_remote, tmp_path / "victim", "victim", "drain", *LEASES)
    deadline = time.monotonic() + 60
    while not (tmp_path / "push-held").exists():
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.05)
    kill_tree(victim.pid)  # the worker and its git push die together
    victim.wait()
    workers = [spawn_worker(file_remote, tmp_path / f"w{i}", f"w{i}", "drain", *LEASES)
               for i in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err[-2000:]
    assert_settled(file_remote, jobs, tmp_path)
    log = git_out(file_remote, "log", "--first-parent", "--format=%s", "master", tmp=tmp_path)
    assert "victim" not in log and "take-lock" not in log and "hold-lock" not in log
    assert "HALF-MADE" not in git_out(file_remote, "log", "--all", "--name-only", "--format=",
                                      tmp=tmp_path)
    fsck(bare)
