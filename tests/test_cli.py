"""The ``distribute`` command line, driven as a real process against real remotes."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from support.gitservers import SmartHttpServer, make_bare
from support.processes import Run, cli_env, wait_line
from support.remotes import git_out, jobs_in, ledger_file

from distribute.protocol import job_path


def spawn(tmp: Path, *args: str, env: Optional[dict[str, str]] = None) -> subprocess.Popen[str]:
    """Start the installed ``distribute`` console script in the background."""
    return subprocess.Popen(["distribute", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=cli_env(tmp, env))


def status(cli: Run, url: str) -> dict:
    return json.loads(cli("status", url, "--json").stdout)


@pytest.mark.slow
def test_init_add_status_json(cli: Run, file_remote: str, tmp_path: Path) -> None:
    (tmp_path / "seed.txt").write_text("a\nb\n\n")
    out = cli("init", file_remote, "--jobs", "seed.txt").stdout
    assert "initialised the job ledger" in out and "2 jobs" in out
    assert "nothing changed" in cli("init", file_remote).stdout
    assert "distribute add" in cli("init", file_remote, "--jobs", "seed.txt", rc=1).stderr
    out = cli("add", file_remote, "c", "a", "d", "c").stdout
    assert "added 2 jobs" in out
    assert "skipped duplicate job a (queued)" in out and "skipped duplicate job c" in out
    assert "added 1 job " in cli("add", file_remote, "--file", "-", stdin="a\ne\n").stdout
    cli("add", file_remote, "a", "--allow-duplicates")
    assert jobs_in(file_remote, "jobs.txt", tmp_path) == ["a", "b", "c", "d", "e", "a"]
    story = git_out(file_remote, "log", "--format=%s", "master", tmp=tmp_path).splitlines()
    assert story[2].startswith("cli-") and story[2].endswith(" added 2 jobs")
    snap = status(cli, file_remote)
    host = snap.pop("host")  # (no budget on a file remote; what was pushed lately: a bound)
    assert host["budget"]["pushes_per_min"] is None and host["reads"] is None
    assert host["pushes_at_least"] >= 1
    assert snap == {"queued": ["a", "b", "c", "d", "e", "a"], "running": [], "done": [],
                    "failed": [], "lock": None,
                    "counts": {"queued": 6, "running": 0, "done": 0, "failed": 0}, "fleet": None,
                    "waiting": [], "stages": {"": {"queued": 6, "waiting": 0, "running": 0,
                                                   "done": 0, "failed": 0}}}
    text = cli("status", file_remote).stdout
    assert "6 queued · 0 running · 0 done · 0 failed" in text and "lock:    free" in text


@pytest.mark.slow
def test_workers_drain_the_queue(cli: Run, daemon_remote: str, tmp_path: Path) -> None:
    jobs = [f"job{i:02d}" for i in range(12)]
    cli("init", daemon_remote)
    cli("add", daemon_remote, *jobs)
    procs = [spawn(tmp_path, "worker", daemon_remote, "--run", "cli_jobs:write", "--idle-exit",
                   "--name", f"w{i}", "--path", str(tmp_path / f"w{i}")) for i in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert all("stopped (idle)" in out for out, _ in outs)
    snap = status(cli, daemon_remote)
    assert snap["counts"] == {"queued": 0, "running": 0, "done": 12, "failed": 0}
    assert sorted(d["job"] for d in snap["done"]) == jobs
    assert all(set(d) == {"job", "worker", "at"} for d in snap["done"])
    files = git_out(daemon_remote, "ls-tree", "-r", "--name-only", "master", tmp=tmp_path).split()
    assert {f"{job_path(j)}/result.txt" for j in jobs} <= set(files)
    log = cli("log", daemon_remote, "-n", "100").stdout.splitlines()
    assert "initialise the distribute job ledger" in log[0] and "added 12 jobs" in log[1]
    assert sum("took job" in l for l in log) == sum("finished job" in l for l in log) == 12
    assert len(cli("log", daemon_remote, "-n", "3").stdout.splitlines()) == 3
    assert "finished job" in cli("log", daemon_remote, "-n", "1").stdout


@pytest.mark.slow
def test_exception_fails_job_with_traceback_on_branch(cli: Run, file_remote: str,
                                                       tmp_path: Path) -> None:
    cli("init", file_remote)
    cli("add", file_remote, "good", "boom-1")
    out = cli("worker", file_remote, "--run", "cli_jobs:write", "--name", "w",
              "--exit-when-queue-empty").stdout
    assert "w failed job boom-1: ValueError: boom in boom-1" in out
    assert "stopped (queue empty): 1 done, 1 failed" in out
    snap = status(cli, file_remote)
    [failed] = snap["failed"]
    assert set(failed) == {"job", "worker", "at", "reason", "attempt"}
    assert (failed["job"], failed["worker"], failed["reason"], failed["attempt"]) == \
        ("boom-1", "w", "ValueError: boom in boom-1", 1)
    # (on the failed attempt's last commit, which failed.txt names and master's history keeps)
    tip = ledger_file(file_remote, "failed.txt", tmp_path)[0].split("\t")[5]
    assert git_out(file_remote, "rev-parse", "master^2", tmp=tmp_path).strip() == tip
    trace = git_out(file_remote, "show", f"{tip}:{job_path('boom-1')}/traceback.txt", tmp=tmp_path)
    assert "Traceback" in trace and 'raise ValueError(f"boom in {job}")' in trace
    master = git_out(file_remote, "ls-tree", "-r", "--name-only", "master", tmp=tmp_path)
    assert "traceback.txt" not in master and f"{job_path('good')}/result.txt" in master
    assert "boom-1  (w, attempt 1" in cli("status", file_remote).stdout
    # an operator puts it back; a done job cannot go back
    assert "requeued job boom-1" in cli("requeue", file_remote, "boom-1").stdout
    err = cli("requeue", file_remote, "good", "nope", rc=1).stderr
    assert "good is done" in err and "nope is not in the ledger" in err
    assert jobs_in(file_remote, "jobs.txt", tmp_path) == ["boom-1"]
    assert jobs_in(file_remote, "failed.txt", tmp_path) == []
    # --max-jobs: one job, then stop
    cli("add", file_remote, "x", "y")
    out = cli("worker", file_remote, "--run", "cli_jobs:write", "--name", "w",
              "--max-jobs", "1").stdout
    assert "stopped (max jobs): 0 done, 1 failed" in out
    assert jobs_in(file_remote, "jobs.txt", tmp_path) == ["x", "y"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["grace-over", "second-signal"])
def test_sigterm_mid_job_gives_the_job_back(cli: Run, file_remote: str, tmp_path: Path,
                                            how: str) -> None:
    slow = {"DISTRIBUTE_JOB_LEASE_S": "600"}  # a lease cannot explain the job coming back
    cli("init", file_remote)
    cli("add", file_remote, "first", "second")
    grace = ["--grace", "0.5"] if how == "grace-over" else []  # else the default 30s
    proc = spawn(tmp_path, "worker", file_remote, "--run", "cli_jobs:block", "--name", "w",
                 *grace, env=slow)
    assert wait_line(proc, "RUNNING") == "RUNNING first"
    snap = status(cli, file_remote)
    running, *held = snap["running"]  # (the worker loop claims a batch: its share of the queue)
    assert [(job["job"], job["worker"]) for job in held] == [("second", "w")]
    assert set(running) == {"job", "worker", "since", "heartbeat_age_s", "attempt"}
    assert (running["job"], running["worker"], running["attempt"]) == ("first", "w", 1)
    assert isinstance(running["heartbeat_age_s"], float)
    proc.send_signal(signal.SIGTERM)
    if how == "second-signal":
        proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the worker did not stop:\n{out[-2000:]}\n{err[-3000:]}") from None
    assert proc.returncode == 0, err
    assert "w gave back job first (SIGTERM received" in out or "SIGINT received" in out
    assert jobs_in(file_remote, "jobs.txt", tmp_path) == ["first", "second"]
    assert jobs_in(file_remote, "running.txt", tmp_path) == []
    assert git_out(file_remote, "show", f"w/first:{job_path('first')}/partial.txt",
                   tmp=tmp_path) == "first partial\n"
    assert "w gave back job first" in git_out(file_remote, "log", "--format=%s", "master",
                                              tmp=tmp_path)


def test_sigterm_lets_the_job_finish_within_grace(cli: Run, file_remote: str,
                                                  tmp_path: Path) -> None:
    cli("init", file_remote)
    cli("add", file_remote, "one", "two")
    proc = spawn(tmp_path, "worker", file_remote, "--run", "cli_jobs:wait_for_go", "--name", "w")
    assert wait_line(proc, "RUNNING") == "RUNNING one"
    proc.send_signal(signal.SIGTERM)
    (tmp_path / "go").touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "w finished job one" in out and "stopped (SIGTERM): 1 done, 0 failed" in out
    assert jobs_in(file_remote, "done.txt", tmp_path) == ["one"]
    assert jobs_in(file_remote, "jobs.txt", tmp_path) == ["two"]  # no new job was taken


@pytest.mark.slow
def test_requeue_stale_job_of_a_dead_worker(cli: Run, file_remote: str, tmp_path: Path) -> None:
    cli("init", file_remote)
    cli("add", file_remote, "first", "second")
    proc = spawn(tmp_path, "worker", file_remote, "--run", "cli_jobs:block", "--name", "victim",
                 env={"DISTRIBUTE_JOB_LEASE_S": "600"})
    wait_line(proc, "RUNNING")
    proc.kill()
    proc.wait()
    out = cli("requeue", file_remote, "--stale", env={"DISTRIBUTE_JOB_LEASE_S": "600"}).stdout
    assert "no stale jobs" in out and "job first: its worker's heartbeat has been seen" in out
    # the clocks of that run count: with a 1 s lease, the heartbeat is stale once it has been
    # seen unchanged for 1 s; --wait watches until then
    out = cli("requeue", file_remote, "--stale", "--wait",
              env={"DISTRIBUTE_JOB_LEASE_S": "1"}).stdout
    assert "requeued job first (its worker was silent for a job lease)" in out
    assert jobs_in(file_remote, "jobs.txt", tmp_path) == ["first", "second"]
    # (the worker loop had claimed both: a batch, its share of the queue)
    assert "requeued 2 stale jobs (first, second)" in git_out(
        file_remote, "log", "-1", "--format=%s", "master", tmp=tmp_path)
    cli("requeue", file_remote, rc=2)
    cli("requeue", file_remote, "--stale", "first", rc=2)


@pytest.mark.slow
def test_unlock_force(cli: Run, file_remote: str, tmp_path: Path) -> None:
    cli("init", file_remote, "--jobs", "-", stdin="a\n")
    assert "the lock is free" in cli("unlock", file_remote).stdout
    holder = spawn(tmp_path, "worker", file_remote, "--run", "cli_jobs:write",
                   "--next-job", "cli_jobs:hold_lock", "--name", "holder")
    wait_line(holder, "HOLDING")
    holder.kill()
    holder.wait()
    assert status(cli, file_remote)["lock"]["holder"] == "holder"
    assert "held by holder" in cli("status", file_remote).stdout
    err = cli("unlock", file_remote, rc=1).stderr
    assert "held by holder" in err and "--force" in err
    assert "broke the lock held by holder" in cli("unlock", file_remote, "--force").stdout
    assert status(cli, file_remote)["lock"] is None
    assert "lock was free" in cli("unlock", file_remote, "--force").stdout
    out = cli("worker", file_remote, "--run", "cli_jobs:write", "--idle-exit").stdout
    assert "1 done" in out


@pytest.mark.slow
def test_bad_usage_and_plain_errors(cli: Run, file_remote: str, tmp_path: Path) -> None:
    assert cli(rc=2).stderr.startswith("usage:")
    assert "invalid choice" in cli("frobnicate", rc=2).stderr
    assert "no remote given" in cli("status", rc=2).stderr
    assert "no job function" in cli("worker", file_remote, rc=2).stderr
    assert "MODULE:FUNCTION" in cli("worker", file_remote, "--run", "nocolon", rc=2).stderr
    err = cli("worker", file_remote, "--run", "no_such_module:f", rc=1).stderr
    assert err.startswith("error: --run no_such_module:f: cannot import module")
    assert len(err.strip().splitlines()) == 1
    assert "invalid int" in cli("log", file_remote, "-n", "many", rc=2).stderr
    for cmd in ("init", "add", "status", "worker", "requeue", "unlock", "log", "config", "demo"):
        assert "example" in cli(cmd, "--help").stdout
    missing = "file://" + str(tmp_path / "nope.git")
    err = cli("status", missing, rc=1).stderr
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    empty = "file://" + str(make_bare(tmp_path, "empty.git"))
    assert "distribute init" in cli("status", empty, rc=1).stderr
    assert "Traceback" in cli("status", empty, "--debug", rc=1).stderr
    cli("init", file_remote)
    assert "control characters" in cli("add", file_remote, "--file", "-", stdin=" \ta\tb\n",
                                       rc=1).stderr


def test_dotenv_file_is_picked_up(cli: Run, file_remote: str, tmp_path: Path) -> None:
    cli("init", file_remote, "--jobs", "-", stdin="from-env\n")
    (tmp_path / ".env").write_text(f"DISTRIBUTE_REMOTE={file_remote}\nDISTRIBUTE_RUN=cli_jobs:write\n"
                                   "DISTRIBUTE_NAME=envworker\n")
    assert json.loads(cli("status", "--json").stdout)["queued"] == ["from-env"]
    assert "added 1 job" in cli("add", "second").stdout  # REMOTE from .env, all words are jobs
    sub = tmp_path / "sub" / "dir"
    sub.mkdir(parents=True)
    out = subprocess.run([sys.executable, "-m", "distribute", "worker", "--idle-exit"], cwd=sub,
                         capture_output=True, text=True, env=cli_env(tmp_path), timeout=120)
    assert out.returncode == 0, out.stderr  # the .env was found from a subdirectory upward
    assert "envworker finished job from-env" in out.stdout
    conf = cli("config").stdout
    assert "DISTRIBUTE_NAME" in conf and "envworker" in conf and str(tmp_path / ".env") in conf
    other = tmp_path / "other.env"
    other.write_text("DISTRIBUTE_REMOTE=file:///nowhere.git\n")
    assert cli("status", "--env-file", str(other), rc=1).stderr.startswith("error: ")
    assert "does not exist" in cli("status", "--env-file", "missing.env", rc=1).stderr
    assert "envworker" not in cli("config", env={"DISTRIBUTE_NAME": "fromproc"}).stdout


@pytest.mark.slow
def test_password_in_remote_url_is_never_printed(cli: Run, tmp_path: Path) -> None:
    secret = "s3cr3t-Pa55"
    root = tmp_path / "auth"
    root.mkdir()
    make_bare(root)
    with SmartHttpServer(root, "alice", secret) as server:
        url = server.url("remote.git")
        assert secret in url
        results = [cli("init", url), cli("add", url, "j1", "j2"), cli("status", url),
                   cli("status", url, "--json"), cli("log", url), cli("unlock", url),
                   cli("worker", url, "--run", "cli_jobs:write", "--idle-exit"),
                   cli("config", env={"DISTRIBUTE_REMOTE": url}),
                   cli("status", url.replace(secret, "wrong-" + secret), rc=1),
                   cli("status", url.replace("remote.git", "absent.git"), "--debug", rc=1)]
    printed = "".join(r.stdout + r.stderr for r in results)
    assert secret not in printed
    assert "http://***@127.0.0.1" in printed
    assert "2 done" in results[6].stdout


def test_status_watch_until_interrupted(cli: Run, file_remote: str, tmp_path: Path) -> None:
    cli("init", file_remote, "--jobs", "-", stdin="a\nb\n")
    proc = spawn(tmp_path, "status", file_remote, "--watch", "0.2")
    wait_line(proc, "remote:")
    wait_line(proc, "[")  # the progress line with rate and ETA of the second frame
    wait_line(proc, "[")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_idle_worker_polls_until_sigterm(cli: Run, file_remote: str, tmp_path: Path) -> None:
    cli("init", file_remote)
    proc = spawn(tmp_path, "worker", file_remote, "--run", "cli_jobs:write", "--name", "idler")
    assert "idler idle: 0 queued, 0 running" in wait_line(proc, "idler idle:")
    cli("add", file_remote, "late")
    assert wait_line(proc, "idler finished job late")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "idler stopped (SIGTERM): 1 done, 0 failed" in out
