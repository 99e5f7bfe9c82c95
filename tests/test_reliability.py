"""Everyday events must not crash a worker, strand a job or lose a result: people pushing to
master with plain git, queues with repeated lines, finishes that fail, servers refusing a ref."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional


import pytest

from support.gitservers import GitDaemon, SmartHttpServer
from support.processes import cli_env, spawn_worker, wait_line
from support.remotes import git_out, jobs_in, person, person_appends

from distribute import init_remote
from distribute.protocol import job_path
from distribute.repo import Clone, RefUpdate

pytestmark = pytest.mark.slow

LEASES = ("--lock-lease", "2", "--job-lease", "3")


def test_person_push_during_a_claim_is_absorbed(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote, ["a", "b"])
    go = tmp_path / "go"
    holder = spawn_worker(file_remote, tmp_path / "w", "w", "hold-claim", *LEASES,
                          "--until", str(go))
    wait_line(holder, "HOLDING")  # the worker holds the lock and has picked "a"
    person_appends(file_remote, tmp_path / "person", ["new-1", "new-2"])
    go.touch()
    out, err = holder.communicate(timeout=60)
    assert holder.returncode == 0, err[-3000:]
    assert "TOOK a" in out
    assert jobs_in(file_remote, "jobs.txt", tmp_path) == ["b", "new-1", "new-2"]
    assert jobs_in(file_remote, "running.txt", tmp_path) == ["a"]
    story = git_out(file_remote, "log", "--first-parent", "--format=%s", "master",
                    tmp=tmp_path).splitlines()
    assert story[:2] == ["w took job a", "person added 2 jobs"]


def test_force_push_is_reported_not_overwritten(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote, ["a", "b"])
    go = tmp_path / "go"
    holder = spawn_worker(file_remote, tmp_path / "w", "w", "hold-claim", *LEASES,
                          "--until", str(go))
    wait_line(holder, "HOLDING")
    work = tmp_path / "person"
    person(file_remote, work, "status")
    old = person(file_remote, work, "rev-parse", "HEAD").strip()
    (work / "jobs.txt").write_text("rewritten\n")
    person(file_remote, work, "commit", "-q", "--amend", "-am", "a rewritten ledger")
    new = person(file_remote, work, "rev-parse", "HEAD").strip()
    person(file_remote, work, "push", "-q", "--force", "origin", "HEAD:master")
    go.touch()
    out, err = holder.communicate(timeout=60)
    assert holder.returncode != 0
    assert "rewritten outside the lock" in err and old[:12] in err and new[:12] in err
    assert git_out(file_remote, "rev-parse", "master", tmp=tmp_path).strip() == new
    refs = git_out(file_remote, "for-each-ref", "--format=%(refname)", tmp=tmp_path).split()
    assert "refs/distribute/lock" not in refs  # it let go of the lock


def _cli_worker(url: str, tmp: Path, name: str, *opts: str,
                env: Optional[dict[str, str]] = None) -> subprocess.Popen[str]:
    run = [] if "--run" in opts else ["--run", "cli_jobs:write"]
    return subprocess.Popen(
        [sys.executable, "-m", "distribute", "worker", url, *run,
         "--name", name, "--path", str(tmp / name), *opts],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(tmp, env))


def test_workers_keep_going_while_a_person_feeds_the_queue(http_server: SmartHttpServer,
                                                           tmp_path: Path) -> None:
    url = http_server.url("remote.git")
    first = [f"job{i:02d}" for i in range(12)]
    init_remote(url, first)
    procs = [_cli_worker(url, tmp_path, f"w{i}", "--idle-exit") for i in range(3)]
    added: list[str] = []
    for batch in range(6):  # the person pushes while the workers claim and finish
        jobs = [f"added{batch}-{i}" for i in range(3)]
        person_appends(url, tmp_path / "person", jobs)
        added += jobs
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    assert sorted(jobs_in(url, "done.txt", tmp_path)) == sorted(first + added)
    assert jobs_in(url, "jobs.txt", tmp_path) == [] and jobs_in(url, "running.txt", tmp_path) == []


def test_repeated_lines_ahead_of_new_jobs_drain(file_remote: str, tmp_path: Path) -> None:
    done = [f"d{i}" for i in range(10)]
    init_remote(file_remote, done)
    first = _cli_worker(file_remote, tmp_path, "w0", "--exit-when-queue-empty")
    assert first.communicate(timeout=120)[0].count("finished job") == 10
    repeats = done * 50  # someone pasted the list again, many times: 500 lines
    person_appends(file_remote, tmp_path / "person", [*repeats, "new-a", "new-b"])
    again = _cli_worker(file_remote, tmp_path, "w1", "--exit-when-queue-empty")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err[-3000:]
    assert "finished job new-a" in out and "finished job new-b" in out
    assert jobs_in(file_remote, "jobs.txt", tmp_path) == []
    assert sorted(jobs_in(file_remote, "done.txt", tmp_path)) == sorted(done + ["new-a", "new-b"])
    story = git_out(file_remote, "log", "--first-parent", "--format=%s", "master",
                    tmp=tmp_path).splitlines()
    # the 500 skipped lines left the queue in the same commit as the claim of new-a
    assert story[3] == "w1 took job new-a" and story[4].startswith("person added")
    took = git_out(file_remote, "log", "--first-parent", "--grep=took job new-a", "--format=%H",
                   "master", tmp=tmp_path).strip()
    numstat = git_out(file_remote, "show", "--numstat", "--format=", took, "--", "jobs.txt",
                      tmp=tmp_path).split()
    assert numstat[:2] == ["0", "501"]


def test_a_finish_that_fails_keeps_the_job(file_remote: str, tmp_path: Path) -> None:
    """The server refuses the first finish push (after the claim of both jobs, a batch); the
    job stays the worker's, the retried finish lands, and the job runs once."""
    bare = Path(file_remote.removeprefix("file://"))
    init_remote(file_remote, ["only", "next"])
    flag = tmp_path / "refuse-once"
    flag.touch()
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(f"""#!/bin/sh
if grep -q ' refs/heads/master$' && [ -n "$(git log -1 --format=%s $(git rev-parse --verify -q \\
    refs/heads/master) 2>/dev/null | grep 'took job')" ] && mv {flag} {flag}.used 2>/dev/null
then echo "refused once by the test" >&2; exit 1; fi
""")
    hook.chmod(0o755)
    proc = _cli_worker(file_remote, tmp_path, "w", "--exit-when-queue-empty")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert (tmp_path / "refuse-once.used").exists()  # the refusal did happen
    assert out.count("took job only") == 1 and "finished job only" in out
    assert jobs_in(file_remote, "done.txt", tmp_path) == ["only", "next"]
    story = git_out(file_remote, "log", "--first-parent", "--format=%s", "master", tmp=tmp_path)
    assert "requeued" not in story and "restarted" not in story
    assert "only by w" in git_out(file_remote, "show", f"master:{job_path('only')}/result.txt",
                                  tmp=tmp_path)


def test_atomic_push_is_all_or_nothing_over_http(tmp_path: Path) -> None:
    root = tmp_path / "http"
    root.mkdir()
    bare = root / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    hook = bare / "hooks" / "update"
    hook.write_text('#!/bin/sh\n[ "$1" = refs/heads/refuse-me ] && { echo no >&2; exit 1; }\n'
                    'exit 0\n')
    hook.chmod(0o755)
    with SmartHttpServer(root) as server:
        url = server.url("remote.git")
        init_remote(url, ["a"])
        clone = Clone.clone(url, tmp_path / "c")
        clone.fetch()
        master = clone.resolve("refs/remotes/origin/master")
        marker = clone.make_marker("x")
        result = clone.push_result([RefUpdate("refs/heads/master", marker, expect=master),
                                    RefUpdate("refs/heads/refuse-me", marker, expect="")])
        assert not result.applied and "refs/heads/refuse-me" in result.rejected
        assert clone.ls_remote("refs/heads/*") == {"refs/heads/master": master}


def test_too_old_git_is_refused(file_remote: str, tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    real = subprocess.run(["sh", "-c", "command -v git"], capture_output=True,
                          text=True).stdout.strip()
    (fake / "git").write_text(f'#!/bin/sh\n[ "$1" = --version ] && {{ echo "git version 2.19.1";'
                              f' exit 0; }}\nexec {real} "$@"\n')
    (fake / "git").chmod(0o755)
    env = dict(cli_env(tmp_path), PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "-m", "distribute", "status", file_remote],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert "git version 2.19.1 is too old" in proc.stderr and "2.24" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_outage_longer_than_the_job_lease_requeues_nothing(daemon: GitDaemon,
                                                          tmp_path: Path) -> None:
    """The remote goes away for longer than the job lease: nobody could push a heartbeat, so
    lease clocks start again when it is back, and no live worker's job is requeued."""
    url = daemon.url("remote.git")
    init_remote(url, ["long"])
    lease = {"DISTRIBUTE_JOB_LEASE_S": "6"}
    runner = _cli_worker(url, tmp_path, "runner", "--run", "cli_jobs:wait_for_go",
                         "--exit-when-queue-empty", env={**lease, "DISTRIBUTE_HEARTBEAT_S": "3"})
    wait_line(runner, "RUNNING long")
    idle = _cli_worker(url, tmp_path, "idle", "--idle-exit", env=lease)
    wait_line(idle, "idle idle: 0 queued, 1 running")  # it has seen the runner's heartbeat
    daemon.stop()
    time.sleep(8)  # the outage itself: longer than the 6 s job lease
    daemon.start()
    (tmp_path / "go").touch()
    for proc in (runner, idle):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    story = git_out(url, "log", "--first-parent", "--format=%s", "master", tmp=tmp_path)
    assert "requeued" not in story and "runner finished job long" in story
    assert jobs_in(url, "done.txt", tmp_path) == ["long"]


def test_a_hung_next_job_function_loses_the_lock(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote, ["a", "b", "c"])
    hung = _cli_worker(file_remote, tmp_path, "hung", "--next-job", "cli_jobs:hold_lock",
                       env={"DISTRIBUTE_NEXT_JOB_TIMEOUT_S": "1"})
    try:
        wait_line(hung, "HOLDING")  # it holds the lock and will never return
        other = _cli_worker(file_remote, tmp_path, "other", "--exit-when-queue-empty")
        out, err = other.communicate(timeout=120)
        assert other.returncode == 0, err[-3000:]
        assert out.count("finished job") == 3
    finally:
        hung.kill()
        _, hung_err = hung.communicate()
    assert "is still running after its time limit; the lock is no longer renewed" in hung_err
    assert sorted(jobs_in(file_remote, "done.txt", tmp_path)) == ["a", "b", "c"]


def test_a_live_twin_is_refused_and_a_restart_takes_its_job_back(file_remote: str,
                                                                 tmp_path: Path) -> None:
    init_remote(file_remote, ["first", "second"])
    block = ("--run", "cli_jobs:block", "--exit-when-queue-empty")
    first = _cli_worker(file_remote, tmp_path, "gpu", *block)
    wait_line(first, "RUNNING first")
    twin = subprocess.run(
        [sys.executable, "-m", "distribute", "worker", file_remote, "--run", "cli_jobs:write",
         "--name", "gpu", "--path", str(tmp_path / "elsewhere"), "--exit-when-queue-empty"],
        capture_output=True, text=True, env=cli_env(tmp_path), timeout=60)
    assert twin.returncode == 1
    assert "another worker process named 'gpu' is alive" in twin.stderr
    assert "Traceback" not in twin.stderr
    first.kill()
    first.wait()
    # the same worker restarted on the same local copy: its old process provably ended
    again = _cli_worker(file_remote, tmp_path, "gpu", "--exit-when-queue-empty")
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err[-3000:]
    assert "finished job first" in out and "finished job second" in out
    story = git_out(file_remote, "log", "--first-parent", "--format=%s", "master", tmp=tmp_path)
    assert "gpu requeued job first (gpu restarted without it)" in story


def test_twins_with_one_name_never_requeue_each_other(file_remote: str, tmp_path: Path) -> None:
    """Two live processes named alike (started while the other was idle) each keep their jobs."""
    jobs = [f"job{i:02d}" for i in range(16)]
    init_remote(file_remote, jobs)
    opts = ("--lock-lease", "5", "--job-lease", "60", "--sleep-ms", "100", "300")
    procs = [spawn_worker(file_remote, tmp_path / f"copy{i}", "twin", "drain", *opts)
             for i in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    assert sorted(jobs_in(file_remote, "done.txt", tmp_path)) == jobs
    story = git_out(file_remote, "log", "--first-parent", "--format=%s", "master", tmp=tmp_path)
    assert "requeued" not in story and "taking it back" not in story
