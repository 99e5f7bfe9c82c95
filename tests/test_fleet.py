"""Combining: the lock holder finishes and claims jobs for the workers waiting in line.

Proven with worker processes (``tests/support/proc_worker.py``, queue_jobs_func, which is
combinable): every job is done exactly once while holders serve others, when a holder dies in
the middle of serving, and when a waiter dies right after a holder claimed a job for it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.processes import Pool, kill_tree, spawn_worker, wait_line
from support.remotes import assert_settled, fsck, git_out, ledger_file

from distribute import init_remote

pytestmark = pytest.mark.slow
LEASES = ("--lock-lease", "2", "--job-lease", "3")


def served_subjects(url: str, tmp: Path) -> list[str]:
    log = git_out(url, "log", "--format=%s", "master", tmp=tmp).splitlines()
    return [s for s in log if "(served by " in s]


def wait_for(what: str, check, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def remote_refs(bare: Path) -> dict[str, str]:
    out = subprocess.run(["git", "--git-dir", str(bare), "for-each-ref",
                          "--format=%(refname) %(objectname)"], capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split() for line in out.splitlines())


def test_holders_serve_the_line_and_every_job_is_done_once(daemon_remote: str,
                                                           tmp_path: Path) -> None:
    jobs = [f"job{i:03d}" for i in range(60)]
    init_remote(daemon_remote, jobs)
    pool = Pool(daemon_remote, tmp_path, "--lock-lease", "2", "--job-lease", "12",
                "--sleep-ms", "50", "150")
    for i in range(6):
        pool.start(f"w{i}")
    pool.wait_all()
    assert_settled(daemon_remote, jobs, tmp_path)
    served = served_subjects(daemon_remote, tmp_path)
    assert any(" finished job " in s for s in served), served[:5]
    assert any(" took job " in s for s in served), served[:5]
    # the story reads as before: each claim and each finish is one commit on the first-parent line
    story = git_out(daemon_remote, "log", "--first-parent", "--format=%s", "master",
                    tmp=tmp_path).splitlines()
    assert len(story) == 1 + 2 * len(jobs)
    # a served commit names the worker it was made for, as its own commits do
    trailers = git_out(daemon_remote, "log", "--format=%s%x1f%(trailers:key=Distribute-Worker,"
                       "valueonly)", "master", tmp=tmp_path).splitlines()
    for line in trailers:
        subject, _, worker = line.partition("\x1f")
        if "(served by " in subject:
            assert subject.startswith(worker.strip() + " ")


def block_the_lock(url: str, tmp: Path) -> subprocess.Popen[str]:
    """A worker process that takes the lock and keeps it (until the test kills it)."""
    blocker = spawn_worker(url, tmp / "blocker", "blocker", "take-lock", *LEASES)
    wait_line(blocker, "LOCKED")
    return blocker


def test_a_holder_killed_while_serving_others(file_remote: str, tmp_path: Path) -> None:
    """Workers line up behind a dead lock holder; the one that breaks the lock serves the others,
    and the server holds that push while the holder is killed with it (nothing of that hold
    lands). The lock is broken again after its lease, the waiters are served by another holder,
    and every job is done exactly once."""
    bare = Path(file_remote.removeprefix("file://"))
    jobs = [f"job{i:02d}" for i in range(24)]
    init_remote(file_remote, jobs)
    armed, seen = tmp_path / "armed", tmp_path / "serving-push"
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(f"""#!{sys.executable}
import os, subprocess, sys, time
updates = [line.split() for line in sys.stdin]
master = [u for u in updates if u[2] == "refs/heads/master"]
if master and os.path.exists({str(armed)!r}):
    old, new, _ = master[0]
    subjects = subprocess.run(["git", "log", "--format=%s", old + ".." + new],
                              capture_output=True, text=True).stdout
    if "(served by " in subjects:
        os.remove({str(armed)!r})
        with open({str(seen)!r} + ".tmp", "w") as f:
            f.write(subjects)
        os.rename({str(seen)!r} + ".tmp", {str(seen)!r})
        time.sleep(120)  # killed with the holder
        sys.exit(1)
""")
    hook.chmod(0o755)
    armed.touch()
    blocker = block_the_lock(file_remote, tmp_path)
    kill_tree(blocker.pid)
    pool = Pool(file_remote, tmp_path, "--lock-lease", "4", "--job-lease", "3",
                "--sleep-ms", "200", "400")
    for i in range(4):
        pool.start(f"w{i}")
    wait_for("a push that serves waiters", seen.exists)
    holder = git_out(file_remote, "log", "-1", "--format=%s", "refs/distribute/lock",
                     tmp=tmp_path).split()[1]
    kill_tree(pool.procs[holder].pid)
    pool.procs[holder].wait()
    pool.wait_all()
    assert_settled(file_remote, jobs, tmp_path)
    assert pool.log_text().count("breaks the lock") >= 2  # the blocker's, then the holder's
    served = served_subjects(file_remote, tmp_path)
    assert served, "the waiters were served by another holder after the kill"
    assert not any(f"(served by {holder})" in s for s in served)
    fsck(bare)


def test_a_waiter_killed_right_after_its_grant(file_remote: str, tmp_path: Path) -> None:
    """A waiter is frozen in line behind a dead lock holder and killed once another worker has
    claimed a job for it: that job is requeued when the waiter's heartbeat stays silent for the
    job lease, and done once by another worker."""
    bare = Path(file_remote.removeprefix("file://"))
    jobs = [f"job{i:02d}" for i in range(20)]
    init_remote(file_remote, jobs)
    blocker = block_the_lock(file_remote, tmp_path)
    wait_ref = "refs/distribute/wait/victim"
    victim = spawn_worker(file_remote, tmp_path / "victim", "victim", "drain",
                          "--lock-lease", "60", "--job-lease", "3")
    wait_for("the victim in line", lambda: wait_ref in remote_refs(bare))
    os.kill(victim.pid, signal.SIGSTOP)
    kill_tree(blocker.pid)
    others = Pool(file_remote, tmp_path, *LEASES, "--sleep-ms", "100", "300")
    others.start("a")
    others.start("b")
    wait_for("the victim's request to be served", lambda: wait_ref not in remote_refs(bare))
    grants = [line.split("\t")[0] for line in ledger_file(file_remote, "running.txt", tmp_path)
              if line.split("\t")[1] == "victim"]
    kill_tree(victim.pid)
    victim.wait()
    assert len(grants) == 1, grants
    granted = grants[0]
    subjects = git_out(file_remote, "log", "--format=%s", "master", tmp=tmp_path).splitlines()
    assert any(s.startswith(f"victim took job {granted} (served by ") for s in subjects)
    others.wait_all()
    assert_settled(file_remote, jobs, tmp_path)
    done_by = dict(line.split("\t")[:2] for line in ledger_file(file_remote, "done.txt",
                                                                   tmp_path))
    assert done_by[granted] in ("a", "b")
    assert any(s.startswith(f"a requeued job {granted} (victim silent")
               or s.startswith(f"b requeued job {granted} (victim silent")
               for s in git_out(file_remote, "log", "--format=%s", "master",
                                tmp=tmp_path).splitlines())
