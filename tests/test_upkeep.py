"""Keeping a remote lean and a cycle cheap: ``distribute upgrade`` leaves the remote as a fresh one
of its size would be, ``distribute prune`` deletes spent branches in few pushes and nothing else,
and a checkpoint starts no git process it does not need.

Sizes are a few thousand records or refs (built in a second with ``support.bigremote``); speed
is measured in ``benchmarks/prune.py``, never asserted here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from support import bigremote
from support.remotes import person_appends

from distribute import init_remote, queue_jobs_func, worker_from_url
from distribute.protocol import DONE_RECENT, FLAT, LAYOUT_FILE, job_path
from distribute.repo.faults import command_of


class Recorder:
    """A fault injector that changes nothing and records the git command lines of ``runner``
    (the worker's copy; its heartbeat thread runs git through a runner of its own)."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.commands: list[list[str]] = []

    def around(self, process: Any, args: list[str], run: Callable[[], Any]) -> Any:
        if process is self.runner:
            self.commands.append(list(args))
        return run()


def test_a_checkpoint_and_a_finish_do_not_ask_git_for_the_remote_url(
        file_remote: str, tmp_path: Path, seam: Callable[[Any], Any]) -> None:
    init_remote(file_remote, ["a"])
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    assert worker.get_next_job(queue_jobs_func) == "a"
    recorder = seam(Recorder(worker.clone))
    for step in range(3):
        Path(worker.job_dir or "", "result.txt").write_text(f"step {step}\n")
        worker.commit_update()
    worker.finish_job()
    commands = [command_of(c) for c in recorder.commands]
    assert commands.count("push") >= 3  # (the checkpoints and the finish ran)
    assert "config" not in commands, [c for c in recorder.commands if command_of(c) == "config"]
    assert worker.clone.remote_url() == file_remote  # still right, from memory
    worker.clone.git("remote", "set-url", "origin", file_remote + "-moved")
    assert worker.clone.remote_url() == file_remote + "-moved"  # (read again once changed)
    worker.close()


# ---- upgrade ----------------------------------------------------------------------------------
def cli(url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISTRIBUTE_CACHE_DIR": str(tmp / "cache")}
    return subprocess.run([sys.executable, "-m", "distribute", *args, url], capture_output=True,
                          text=True, env=env)


def bare_git(bare: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(bare), *args], capture_output=True, text=True,
                          check=True).stdout


def test_upgrade_rolls_done_into_segments_in_the_layout_commit(tmp_path: Path) -> None:
    """A first-layout remote with 3 500 done records in one ``done.txt``, upgraded: one commit
    moves the results and leaves 1 500 records in ``done.txt``, 2 000 in two segments, as
    finishes would have; readers still see 3 500 done; later finishes roll on from there."""
    bare = tmp_path / "old.git"
    bigremote.build(bare, 3500, queued=4, layout=FLAT, segmented=False)
    url = f"file://{bare}"
    lines = bare_git(bare, "show", "master:done.txt").splitlines()
    before = bare_git(bare, "rev-parse", "master").strip()
    out = cli(url, tmp_path, "upgrade")
    assert out.returncode == 0, out.stderr
    assert ("moved 3500 job directories to the sharded layout and put 2000 done records into "
            "2 done segments") in out.stdout
    assert bare_git(bare, "rev-list", "--count", f"{before}..master").strip() == "1"
    assert bare_git(bare, "rev-parse", "master^").strip() == before
    files = bare_git(bare, "ls-tree", "-r", "--name-only", "master").split()
    assert [f for f in files if f.startswith("done/")] == ["done/000001.txt", "done/000002.txt"]
    assert LAYOUT_FILE in files and f"{job_path('job0000001')}/result.txt" in files
    segments = [bare_git(bare, "show", f"master:done/00000{n}.txt").splitlines() for n in (1, 2)]
    recent = bare_git(bare, "show", "master:done.txt").splitlines()
    assert [len(s) for s in segments] == [DONE_RECENT, DONE_RECENT]
    assert segments[0] + segments[1] + recent == lines  # every record, in order, unchanged
    status = json.loads(cli(url, tmp_path, "status", "--json").stdout)
    assert status["counts"]["done"] == 3500 and status["counts"]["queued"] == 4
    assert "nothing changed" in cli(url, tmp_path, "upgrade").stdout

    worker = worker_from_url(url, tmp_path / "w", "w")
    person_appends(url, tmp_path / "person", ["job0000001"])  # an archived job, queued again
    for _ in range(4):
        job = worker.get_next_job(queue_jobs_func)
        assert job is not None and job.startswith("q")
        Path(worker.job_dir or "", "result.txt").write_text("r\n")
        worker.commit_update()
        worker.finish_job()
    assert worker.get_next_job(queue_jobs_func) is None  # (job0000001 was dropped: done)
    assert len(bare_git(bare, "show", "master:done.txt").splitlines()) == len(recent) + 4
    assert f"{job_path('q0004')}/result.txt" in bare_git(bare, "ls-tree", "-r", "--name-only",
                                                       "master").split()
    worker.close()


def test_upgrade_of_a_sharded_remote_with_a_long_done_file_only_rolls_it(tmp_path: Path) -> None:
    bare = tmp_path / "r.git"
    bigremote.build(bare, 2 * DONE_RECENT + 10, queued=2, segmented=False)
    url = f"file://{bare}"
    out = cli(url, tmp_path, "upgrade")
    assert out.returncode == 0 and "moved" not in out.stdout, out.stdout + out.stderr
    assert "put 1000 done records into 1 done segment" in out.stdout
    assert len(bare_git(bare, "show", "master:done.txt").splitlines()) == DONE_RECENT + 10
