"""``distribute fleet`` against the fake Vast API in boot mode: every node runs the image's real
entry script (``docker/entrypoint.sh``) as local processes that drain a real remote with the
checkpointed ``stepjobs:steps``; the test preempts nodes, makes duds, restarts the controller."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import pytest
from support import SUPPORT_DIR
from support.processes import cli_env
from support.remotes import assert_settled, git_out, jobs_in
from support.vastserver import FakeVast, make_offer

from distribute import init_remote, worker_from_url
from distribute.protocol import job_path
from distribute.vast.fleet import Fleet, FleetConfig, Node

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
KEY = "test-vast-key-fleet-3c9d"
NODE_SETTINGS = ["STEP_S=0.25", "STEPS=6", "DISTRIBUTE_JOB_LEASE_S=3", "DISTRIBUTE_LOCK_LEASE_S=2",
                 "DISTRIBUTE_POLL_S=0.2", "DISTRIBUTE_POLL_MAX_S=0.2", "DISTRIBUTE_GRACE_S=0",
                 "VAST_RETRY_BACKOFF=0.05"]


def boot_mode(tmp: Path, offers: list[dict], **kwargs: object) -> FakeVast:
    """The fake API playing the nodes with the image's entry script (``distribute`` and
    ``python`` as the image has them: this checkout's)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool, line in (("distribute", f'exec "{sys.executable}" -m distribute "$@"'),
                       ("python", f'exec "{sys.executable}" "$@"')):
        (bin_dir / tool).write_text(f"#!/bin/sh\n{line}\n")
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "GIT_CONFIG_NOSYSTEM": "1",
           "PYTHONPATH": os.pathsep.join([str(SUPPORT_DIR), str(ROOT)]),
           "GIT_CONFIG_GLOBAL": os.devnull}
    return FakeVast(api_key=KEY, offers=offers, workdir=tmp / "nodes", node_env=env,
                    node_command=["bash", str(ROOT / "docker" / "entrypoint.sh")],
                    kill_delay_s=0.5, **kwargs)  # type: ignore[arg-type]


def start_fleet(fake: FakeVast, tmp: Path, url: str, *opts: str) -> subprocess.Popen[str]:
    """``python -m distribute fleet URL ...`` with the fake's address and key."""
    env = cli_env(tmp, {"VAST_API_URL": fake.url, "VAST_API_KEY": KEY,
                        "VAST_RETRY_BACKOFF": "0.05"})
    env = {k: v for k, v in env.items() if not k.startswith("CONTAINER_")}
    args = [sys.executable, "-m", "distribute", "fleet", url, "--image", "me/worker:1",
            "--run", "stepjobs:steps", "--poll", "0.5", *opts]
    for item in NODE_SETTINGS + [f"VAST_API_URL={fake.url}"]:
        args += ["--env", item]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=tmp)


def finish(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str]:
    """The exit code and output of a fleet process."""
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def until(condition: Callable[[], bool], timeout: float = 120) -> None:
    """Poll ``condition`` until it holds (fail after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.1)


def mid_job(fake: FakeVast) -> Optional[int]:
    """A running node whose worker has checkpointed step 2 of a job, not preempted yet."""
    for iid, state in fake.states().items():
        if state == "running" and iid not in fake.preempted and "STEP" in fake.node_log(iid) \
                and any(line.endswith(" 2") for line in fake.node_log(iid).splitlines()
                        if line.startswith("STEP")):
            return iid
    return None


def starts(url: str, job: str, tmp: Path) -> list[list[str]]:
    """``attempt step worker`` of each start of ``job`` (its ``starts.txt`` on master)."""
    text = git_out(url, "show", f"master:{job_path(job)}/starts.txt", tmp=tmp)
    return [line.split() for line in text.splitlines()]


def test_preempted_nodes_are_replaced_and_their_jobs_resume(file_remote: str,
                                                            tmp_path: Path) -> None:
    """Two interruptible nodes preempted mid-job: the fleet replaces them, each preempted job's
    next attempt starts at a step > 0, every job is done once, nothing is left, spend ≤ budget."""
    jobs = [f"job-{i:02d}" for i in range(8)]
    init_remote(file_remote, jobs)
    offers = [make_offer(i, 3.6 + i / 10, machine_id=100 + i) for i in range(1, 9)]
    with boot_mode(tmp_path, offers) as fake:
        proc = start_fleet(fake, tmp_path, file_remote, "--nodes", "3", "--max-price", "5",
                           "--interruptible", "--budget", "2")
        for _ in range(2):
            until(lambda: mid_job(fake) is not None)
            fake.preempt(mid_job(fake) or 0, grace_s=1.0)
        code, out = finish(proc)
        assert code == 0, out
        assert fake.instances == {}, out
        assert len(fake.meters) >= 4
        assert fake.spent() <= 2
    assert_settled(file_remote, jobs, tmp_path)
    resumed = [s for j in jobs for s in starts(file_remote, j, tmp_path)[1:]]
    assert len(resumed) >= 2 and all(int(step) > 0 for _, step, _ in resumed), resumed
    assert "spent $" in out and "projected" in out


def test_the_budget_stops_the_fleet(file_remote: str, tmp_path: Path) -> None:
    """A budget for about a third of the work: the fleet destroys its nodes and exits 3 naming
    the budget and what was spent, soon after reaching it; no instance is left."""
    jobs = [f"job-{i:02d}" for i in range(12)]
    init_remote(file_remote, jobs)
    offers = [make_offer(i, 36.0, machine_id=200 + i) for i in range(1, 5)]
    with boot_mode(tmp_path, offers) as fake:
        code, out = finish(start_fleet(fake, tmp_path, file_remote, "--nodes", "3",
                                       "--max-price", "40", "--budget", "0.08"))
        assert code == 3, out
        assert "budget of $0.0800" in out and "spent $" in out
        until(lambda: fake.instances == {}, timeout=5)
        assert fake.spent() <= 0.08
    assert len(jobs_in(file_remote, "done.txt", tmp_path)) < len(jobs)  # work left
    status = subprocess.run([sys.executable, "-m", "distribute", "status", file_remote],
                            env=cli_env(tmp_path), capture_output=True, text=True, check=True)
    assert "cost:    $" in status.stdout and "(of $0.0800 budget)" in status.stdout
    page = tmp_path / "report.html"
    subprocess.run([sys.executable, "-m", "distribute", "report", file_remote, "-o", str(page)],
                   env=cli_env(tmp_path), capture_output=True, text=True, check=True)
    assert 'id="cost"' in page.read_text() and "of $0.0800 budget" in page.read_text()


def test_a_node_that_never_boots_is_replaced(file_remote: str, tmp_path: Path) -> None:
    """The cheapest offer sits on a dud machine: after the boot timeout its node is destroyed,
    the machine avoided, and another offer drains the queue."""
    init_remote(file_remote, ["a", "b"])
    offers = [make_offer(1, 1.0, machine_id=4242), make_offer(2, 2.0, machine_id=7)]
    with boot_mode(tmp_path, offers, duds={4242}) as fake:
        code, out = finish(start_fleet(fake, tmp_path, file_remote, "--nodes", "1",
                                       "--max-price", "3", "--boot-timeout", "3"))
        assert code == 0, out
        dud = min(fake.meters)
        assert "no worker after 3s (machine 4242 avoided" in out
        assert [i for i, _ in fake.destroyed][0] == dud and fake.instances == {}
    assert_settled(file_remote, ["a", "b"], tmp_path)


def test_a_restarted_fleet_adopts_the_nodes(file_remote: str, tmp_path: Path) -> None:
    """Ctrl-C with ``--on-interrupt leave`` leaves the nodes; a second ``fleet`` on the same
    remote adopts them instead of renting more: never more than N instances."""
    jobs = [f"job-{i:02d}" for i in range(6)]
    init_remote(file_remote, jobs)
    offers = [make_offer(i, 1.0 + i / 10, machine_id=300 + i) for i in range(1, 7)]
    with boot_mode(tmp_path, offers) as fake:
        most = [0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.05):
                most[0] = max(most[0], len(fake.instances))

        threading.Thread(target=watch, daemon=True).start()
        first = start_fleet(fake, tmp_path, file_remote, "--nodes", "2", "--max-price", "2",
                            "--on-interrupt", "leave")
        until(lambda: len(fake.states()) == 2 and "job" in "".join(
            fake.node_log(i) for i in fake.states()))
        first.send_signal(signal.SIGINT)
        code, out = finish(first)
        assert code == 130 and "left 2 node(s) running" in out, out
        second = start_fleet(fake, tmp_path, file_remote, "--nodes", "2", "--max-price", "2")
        code, out = finish(second)
        stop.set()
        assert code == 0, out
        assert out.count("adopted node") >= 1
        assert most[0] <= 2 and fake.instances == {}
    assert_settled(file_remote, jobs, tmp_path)


def test_the_budget_arithmetic(file_remote: str, tmp_path: Path) -> None:
    """What the controller counts: a running (or booting) node costs its price, a stopped one its
    disk; what the nodes commit is two polls at the current rate; the budget is over before
    spent plus committed (plus a node about to be rented) would pass it; the projection adds the
    cost per done job for each job left."""
    init_remote(file_remote, ["a", "b", "c"])
    worker = worker_from_url(file_remote, path=tmp_path / "controller", name="controller")
    config = FleetConfig(file_remote, "me/worker:1", "stepjobs:steps", nodes=2, max_price=1.0,
                         budget=1.0, poll_s=360.0)
    fleet = Fleet(config, worker)
    assert fleet.spent == 0.0 and fleet.burn() == 0.0
    fleet.nodes = {1: Node(1, 0.5, 0.02, "m1", 0.0, state="running"),
                   2: Node(2, 0.4, 0.01, "m2", 0.0, state="stopped"),
                   3: Node(3, 0.3, 0.03, "m3", 0.0, state="loading")}
    assert fleet.burn() == pytest.approx(0.5 + 0.01 + 0.3)
    assert fleet.committed() == pytest.approx(0.81 * 2 * 360 / 3600)  # 0.162
    fleet.spent = 0.8
    assert not fleet._over_budget(0.0)  # 0.8 + 0.162 <= 1.0
    assert fleet._over_budget(0.2)  # one more node at 0.2 $/h: 0.8 + 0.202 > 1.0
    fleet.counts = {"done": 4, "queued": 2, "running": 2}
    assert fleet.projection() == pytest.approx(0.8 + 0.8 / 4 * 4)
    fleet.counts = {"done": 0, "queued": 3, "running": 0}
    assert fleet.projection() is None
    worker.close()
