"""Keeping a remote lean and a cycle cheap: ``distribute upgrade`` leaves the remote as a fresh one
of its size would be, ``distribute prune`` deletes spent branches in few pushes and nothing else,
and a checkpoint starts no git process it does not need.

Sizes are a few thousand records or refs (built in a second with ``support.bigremote``); speed
is measured in ``benchmarks/prune.py``, never asserted here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from distribute import init_remote, queue_jobs_func, worker_from_url
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
