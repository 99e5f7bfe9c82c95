"""Pipelines: stages, jobs queued after others (``add --after``, ``worker.then``), waiting jobs,
failures that fail the waiting children, ``worker.inputs`` and the per-stage status."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.processes import Run, cli_env, kill_tree, wait_line

from distribute import (
    InvalidJobError,
    JobStateError,
    add_jobs,
    init_remote,
    stage_jobs_func,
    worker_from_url,
)
from distribute.ledger import Ledger
from distribute.protocol import job_path
from distribute.report import build_model, render
from distribute.status import stage_counts, status_json


def git_log(worker: object) -> list[str]:
    """First-parent subjects of the remote's master, oldest first, as ``worker`` last fetched."""
    clone = worker.clone  # type: ignore[attr-defined]
    return clone.first_parent_log("refs/remotes/origin/master", "%s").splitlines()[::-1]


def test_ledger_waits_releases_and_fails_children() -> None:
    """A child waits until every parent is done, then joins the queue; a failed parent fails its
    waiting children and theirs, naming the parent; a waiting job cannot be claimed."""
    ledger = Ledger(queued=["a", "b"])
    assert ledger.add_after("m", ["a", "b"], "me") == "waiting"
    assert ledger.add_after("z", ["m"], "me") == "waiting"
    assert ledger.waiting() == ["m", "z"]
    with pytest.raises(InvalidJobError, match="waiting for its parents"):
        ledger.claim("m", "w")
    with pytest.raises(InvalidJobError, match="not queued, running"):
        ledger.add_after("x", ["nobody"], "me")
    for job in ("a", "b"):
        ledger.queued.remove(job)
        ledger.claim(job, "w")
    ledger.finish("a", "w")
    assert ledger.queued == [] and ledger.waiting() == ["m", "z"]
    ledger.finish("b", "w")
    assert ledger.queued == ["m"] and ledger.waiting() == ["z"]
    ledger.queued.remove("m")
    ledger.claim("m", "w")
    ledger.fail("m", "w", "boom")
    assert [(e.job, e.reason) for e in ledger.failed] == [("m", "boom"), ("z", "parent m failed")]
    assert ledger.parents == {} and ledger.waiting() == []
    assert ledger.add_after("y", ["m"], "me") == "failed"  # a failed parent: never runs
    assert ledger.failed[-1].reason == "parent m failed"


def test_stage_function_takes_only_its_stages(file_remote: str, tmp_path: Path) -> None:
    """``stage_jobs_func`` takes the first queued job of its stages and leaves the others in
    order; its spec names the stages (so that only workers of the same stages serve each
    other); bad stage names are refused; the status counts jobs per stage."""
    init_remote(file_remote, ["split:1", "proc:1", "plain", "proc:2", "merge:1"])
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    try:
        func = stage_jobs_func("proc", "")
        assert func.__qualname__ == "stage_jobs_func[,proc]"
        assert worker.get_next_job(func) == "proc:1"
        worker.finish_job()
        assert worker.get_next_job(func) == "plain"
        worker.fail_job("no")
        assert worker.get_next_job(stage_jobs_func("merge")) == "merge:1"
        snap = worker.snapshot()
        assert snap["ledger"].queued == ["split:1", "proc:2"]
        assert status_json(snap)["stages"] == {
            "proc": {"queued": 1, "waiting": 0, "running": 0, "done": 1, "failed": 0},
            "": {"queued": 0, "waiting": 0, "running": 0, "done": 0, "failed": 1},
            "merge": {"queued": 0, "waiting": 0, "running": 1, "done": 0, "failed": 0},
            "split": {"queued": 1, "waiting": 0, "running": 0, "done": 0, "failed": 0}}
        worker.finish_job()
    finally:
        worker.close()
    for bad in [(), ("a:b",), ("two words",)]:
        with pytest.raises(ValueError):
            stage_jobs_func(*bad)


def test_then_queues_follow_ups_with_the_finish(file_remote: str, tmp_path: Path) -> None:
    """Follow-ups recorded with ``then`` land in the finish's own commit (the implicit parent
    and ``after=`` parents among them), waiting ones only once their parents are done; a job
    that fails queues nothing and fails its waiting children; ``inputs`` gives the parents'
    result directories in order, checked out in the slim copy."""
    init_remote(file_remote, ["split:v1"])
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    try:
        with pytest.raises(JobStateError):
            worker.then("proc:x")
        assert worker.get_next_job(stage_jobs_func("split")) == "split:v1"
        procs = [f"proc:v1-{i}" for i in range(3)]
        for job in procs:
            worker.then(job)
        worker.then("merge:v1", after=procs)
        with pytest.raises(InvalidJobError):
            worker.then("merge:v1")
        worker.finish_job()
        assert git_log(worker)[-1] == "w finished job split:v1 and queued 4 jobs"
        snap = worker.snapshot()
        assert snap["ledger"].queued == procs and snap["ledger"].waiting() == ["merge:v1"]
        proc = stage_jobs_func("proc")
        for i in range(3):
            job = worker.get_next_job(proc)
            assert job == procs[i] and list(worker.inputs) == ["split:v1"]
            assert worker.inputs["split:v1"].startswith(str(Path(worker.path, "updates")))
            Path(worker.job_dir or "", "out.txt").write_text(f"out {i}\n")
            if i == 2:
                worker.then("never:queued")
                worker.fail_job("ValueError: boom")
                break
            worker.finish_job()
        snap = worker.snapshot()
        failed = {e.job: e.reason for e in snap["ledger"].failed}
        assert failed == {"proc:v1-2": "ValueError: boom", "merge:v1": "parent proc:v1-2 failed"}
        assert "never:queued" not in snap["ledger"].queued and not snap["ledger"].parents
        assert status_json(snap)["stages"]["merge"]["failed"] == 1
    finally:
        worker.close()


def test_inputs_and_add_after(file_remote: str, tmp_path: Path) -> None:
    """``add_jobs(after=)`` queues a job that waits for its parents; once they are done its
    ``inputs`` hold their result files, read in the slim copy."""
    init_remote(file_remote, ["a", "b"])
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    try:
        assert add_jobs(worker, ["m"], after=["a", "b"]) == (["m"], [])
        with pytest.raises(InvalidJobError, match="add it first"):
            add_jobs(worker, ["n"], after=["nobody"])
        assert add_jobs(worker, ["m"], after=["a"])[1] == [("m", "waiting")]
        for job in ("a", "b"):
            assert worker.get_next_job(stage_jobs_func("")) == job
            Path(worker.job_dir or "", "result.txt").write_text(f"from {job}\n")
            worker.finish_job()
        assert worker.get_next_job(stage_jobs_func("")) == "m"
        assert list(worker.inputs) == ["a", "b"]
        assert [Path(p, "result.txt").read_text() for p in worker.inputs.values()] == [
            "from a\n", "from b\n"]
        worker.finish_job()
        assert worker.snapshot()["ledger"].parents == {}
    finally:
        worker.close()


def test_cli_add_after_and_stage_counts(cli: Run, file_remote: str) -> None:
    """``distribute add --after`` queues waiting jobs; ``status --json`` counts them per stage
    and the text status shows a line per stage; a bad stage is a usage error."""
    cli("init", file_remote)
    cli("add", file_remote, "proc:1", "proc:2")
    out = cli("add", file_remote, "merge:all", "--after", "proc:1", "--after", "proc:2").stdout
    assert "added 1 job" in out and "after proc:1, proc:2" in out
    assert "is not queued" in cli("add", file_remote, "x", "--after", "nope", rc=1).stderr
    snap = json.loads(cli("status", file_remote, "--json").stdout)
    assert snap["waiting"] == [{"job": "merge:all", "parents": ["proc:1", "proc:2"]}]
    assert snap["stages"]["merge"] == {"queued": 0, "waiting": 1, "running": 0, "done": 0,
                                       "failed": 0}
    text = cli("status", file_remote).stdout
    assert "stages:  proc" in text and "1 waiting" in text
    assert "--stage" in cli("worker", file_remote, "--run", "cli_jobs:write", "--stage", "a:b",
                            rc=2).stderr


def test_stage_counts_empty() -> None:
    """An empty ledger has no stages."""
    assert stage_counts(Ledger()) == {}


@pytest.mark.slow
def test_fleet_runs_a_pipeline_despite_a_killed_worker(daemon_remote: str,
                                                       tmp_path: Path) -> None:
    """Five worker processes over git daemon, one SIGKILLed mid-job: two take split and merge
    jobs, three proc jobs. Every job is done exactly once except the proc job that raises and
    the merge waiting for it (failed, naming it, never claimed); the follow-up recorded before
    the raise is never queued; merge:v1 reads its parents' outputs in order, after they all
    finished; no worker takes a stage it was not given; the stage counts match."""
    init_remote(daemon_remote, ["split:v1", "split:v2"])
    env = cli_env(tmp_path, {"PIPE_VICTIM": "p0"})

    def start(name: str, *stages: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "distribute", "worker", daemon_remote, "--run",
             "pipeline_jobs:run", "--idle-exit", "--name", name, "--path", str(tmp_path / name),
             *[arg for stage in stages for arg in ("--stage", stage)]],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=True)

    workers = {name: start(name, "split", "merge") for name in ("s0", "s1")}
    victim = start("p0", "proc")
    try:
        wait_line(victim, "RUNNING proc:")  # mid-job: its claim landed, its result never will
        kill_tree(victim.pid)
        victim.wait()
        workers.update({name: start(name, "proc") for name in ("p1", "p2")})
        outs = {name: proc.communicate(timeout=240)[0] for name, proc in workers.items()}
    finally:
        for proc in [victim, *workers.values()]:
            if proc.poll() is None:
                kill_tree(proc.pid)
    assert {name: proc.returncode for name, proc in workers.items()} == dict.fromkeys(workers, 0), \
        outs
    reader = worker_from_url(daemon_remote, tmp_path / "reader", "reader")
    try:
        ledger = reader.snapshot()["ledger"]
        merge = job_path("merge:v1", reader.workspace.layout)
        reader.include_paths(merge)
        merged = Path(reader.path, merge, "merged.txt").read_text()
        stages = status_json(reader.snapshot())["stages"]
    finally:
        reader.close()
    done = sorted(e.job for e in ledger.done)
    assert done == sorted(["split:v1", "split:v2", "proc:v1-0", "proc:v1-1", "proc:v1-2",
                           "proc:v2-0", "proc:v2-2", "merge:v1"])
    assert {e.job: e.reason for e in ledger.failed} == {
        "proc:v2-1": "ValueError: proc:v2-1 always fails", "merge:v2": "parent proc:v2-1 failed"}
    assert not ledger.queued and not ledger.running and not ledger.waiting()
    assert merged == "proc:v1-0\nproc:v1-1\nproc:v1-2\n"
    story = subprocess.run(["git", "--git-dir", str(tmp_path / "daemon" / "remote.git"), "log",
                            "--first-parent", "--reverse", "--format=%s", "master"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    took = [s.split(" took job ", 1) for s in story if " took job " in s]
    stage_of = {"s0": {"split", "merge"}, "s1": {"split", "merge"}, "p0": {"proc"},
                "p1": {"proc"}, "p2": {"proc"}}
    assert all(job.partition(":")[0] in stage_of[who] for who, job in
               ((w, j.split(" (served by")[0]) for w, j in took))
    assert not any("never:queued" in s or "took job merge:v2" in s for s in story)
    merge_at = next(i for i, s in enumerate(story) if " took job merge:v1" in s)
    assert all(any(f"finished job proc:v1-{i}" in s for s in story[:merge_at]) for i in range(3))
    assert sum(" finished job split:" in s and s.endswith("and queued 4 jobs") for s in story) == 2
    assert stages == {
        "split": {"queued": 0, "waiting": 0, "running": 0, "done": 2, "failed": 0},
        "proc": {"queued": 0, "waiting": 0, "running": 0, "done": 5, "failed": 1},
        "merge": {"queued": 0, "waiting": 0, "running": 0, "done": 1, "failed": 1}}


def test_report_page_shows_progress_per_stage() -> None:
    """The report's model carries the stage counts and the waiting jobs, and the page a row
    per stage; a ledger without stages shows no such section."""
    ledger = Ledger(queued=["proc:1", "proc:2"], parents={"merge:1": ["proc:1", "proc:2"]})
    model = build_model({"ledger": ledger, "lock": None, "heartbeats": {}})
    assert model["stages"]["merge"]["waiting"] == 1 and model["stages"]["proc"]["queued"] == 2
    assert model["waiting"] == [{"job": "merge:1", "parents": ["proc:1", "proc:2"]}]
    page = render(model)
    assert '<table id="stages">' in page and ">merge</td>" in page and ">proc</td>" in page
    plain = build_model({"ledger": Ledger(queued=["a"]), "lock": None, "heartbeats": {}})
    assert 'id="stages"' not in render(plain)
