"""The fleet-wide budget, end to end: worker processes against a smart-HTTP server on loopback.

Time-compressed (``DISTRIBUTE_BUDGET_WINDOW_S=3``: pushes counted over 3 s, reads over 0.5 s):
workers join and leave while the queue drains, and the server's own count of git operations
(one ref advertisement per operation, as a host counts them) never exceeds the budget in any
window. Also: a heartbeat rides on the worker's other pushes and is pushed alone only when
nothing carried it.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.gitservers import SmartHttpServer, busiest, make_bare
from support.processes import cli_env
from support.remotes import assert_settled

from distribute import init_remote, queue_jobs_func, worker_from_url
from distribute.protocol import heartbeat_ref

WINDOW_S = 3.0
PUSHES_PER_MIN = 300  # 15 per 3-s window
READS_PER_S = 30  # 15 per 0.5-s window


def done_count(bare: Path) -> int:
    out = subprocess.run(["git", "--git-dir", str(bare), "show", "master:done.txt"],
                         capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def wait_until(what: str, check, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_budget_holds_while_workers_join_and_leave(tmp_path: Path) -> None:
    bare = make_bare(tmp_path / "srv")
    jobs = [f"j{i:02d}-150" for i in range(16)]  # cli_jobs:nap: 150 ms each
    with SmartHttpServer(bare.parent) as server:
        url = server.url(bare.name)
        init_remote(url, jobs)
        env = cli_env(tmp_path, {"DISTRIBUTE_BUDGET_WINDOW_S": str(WINDOW_S),
                                 "DISTRIBUTE_PUSHES_PER_MIN": str(PUSHES_PER_MIN),
                                 "DISTRIBUTE_READS_PER_S": str(READS_PER_S),
                                 "DISTRIBUTE_JOB_LEASE_S": "20", "DISTRIBUTE_GRACE_S": "0"})
        pushes0, reads0 = len(server.operations("push")), len(server.operations("read"))
        procs: dict[str, subprocess.Popen[str]] = {}

        def start(name: str) -> None:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "distribute", "worker", url, "--run", "cli_jobs:nap",
                 "--name", name, "--path", str(tmp_path / name), "--idle-exit"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True)

        try:
            start("w0")
            start("w1")
            wait_until("4 jobs done", lambda: done_count(bare) >= 4)
            start("w2")  # joins mid-run
            wait_until("8 jobs done", lambda: done_count(bare) >= 8)
            procs["w0"].send_signal(signal.SIGTERM)  # leaves mid-run (gives its job back)
            start("w3")
            wait_until("every job done", lambda: done_count(bare) >= len(jobs))
            outputs = {name: proc.communicate(timeout=60)[0] for name, proc in procs.items()}
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
        pushes = server.operations("push")[pushes0:]
        reads = server.operations("read")[reads0:]
        shown = json.loads(subprocess.run(
            [sys.executable, "-m", "distribute", "status", url, "--json"], env=env,
            capture_output=True, text=True, check=True).stdout)["host"]
    assert_settled(str(bare), jobs, tmp_path)
    print(f"pushes {len(pushes)}, busiest {busiest(pushes, WINDOW_S)}; reads {len(reads)}, "
          f"busiest {busiest(reads, WINDOW_S / 6)}")
    for name, out in outputs.items():  # (the workers ran this tree: the line is new with it)
        assert f"{name} paces itself to a budget of 300 pushes/min and 30 reads/s" in out, out
        assert "DISTRIBUTE_PUSHES_PER_MIN from environment" in out
    assert busiest(pushes, WINDOW_S) <= PUSHES_PER_MIN * WINDOW_S / 60
    # status: the budget, and a lower bound of what was pushed in the last minute (all of it)
    assert shown["budget"]["pushes_per_min"] == PUSHES_PER_MIN and shown["reads"] is None
    assert 0 < shown["pushes_at_least"] <= len(pushes)  # (batches: fewer pushes than jobs)
    assert busiest(reads, WINDOW_S / 6) <= READS_PER_S * WINDOW_S / 6
    # the budget was what limited the fleet, not idleness: some window used most of it
    assert busiest(pushes, WINDOW_S) >= 0.5 * PUSHES_PER_MIN * WINDOW_S / 60


def hb_moves(bare: Path, ref: str) -> int:
    """How many times the remote's ``ref`` was moved (its reflog on the bare repository)."""
    out = subprocess.run(["git", "--git-dir", str(bare), "reflog", "show", "--format=%H", ref],
                         capture_output=True, text=True).stdout
    return len(out.split())


def test_a_heartbeat_rides_on_checkpoints_and_beats_alone_only_when_nothing_carried_it(
        tmp_path: Path) -> None:
    """Checkpoints every sixth of the heartbeat interval carry every beat: the thread pushes
    none of its own (before, it pushed one every interval whatever else went out); once the job
    stops pushing, the thread beats alone again."""
    bare = make_bare(tmp_path / "srv")
    subprocess.run(["git", "--git-dir", str(bare), "config", "core.logAllRefUpdates", "always"],
                   check=True)
    url = bare.resolve().as_uri()
    init_remote(url, ["long"])
    worker = worker_from_url(url, tmp_path / "w", "w", job_lease_s=30, heartbeat_s=3.0)
    try:
        assert worker.get_next_job(queue_jobs_func) == "long"
        ref = heartbeat_ref(worker.name, worker.session)
        claimed = hb_moves(bare, ref)
        assert claimed >= 1  # the claim's push moved it
        for i in range(8):  # four seconds: more than an interval
            Path(worker.job_dir, f"step{i}.txt").write_text(str(i))
            assert worker.commit_update(f"step {i}")
            time.sleep(0.5)
        assert hb_moves(bare, ref) == claimed + 8  # one per checkpoint, none alone
        wait_until("a lone beat", lambda: hb_moves(bare, ref) == claimed + 9, timeout=30)
    finally:
        worker.close()
