"""Resuming from the last checkpoint: a job claimed again after its worker died (SIGKILL, the job
lease) or gave it back on a stop signal starts with its directory as the last ``commit_update``
left it; one that never checkpointed starts empty; a failed job requeued by hand starts fresh
unless ``--resume``."""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

from support.processes import cli_env, kill_tree
from support.remotes import assert_settled, git_out, ledger_file

from distribute import init_remote, requeue_jobs, worker_from_url
from distribute.protocol import job_path

HANG_S = 90


class Worker:
    """``python -m distribute worker URL --run stepjobs:steps`` with its stdout read as it
    comes."""

    def __init__(self, tmp: Path, url: str, name: str, *opts: str) -> None:
        env = cli_env(tmp, {"STEP_S": "0.3", "DISTRIBUTE_JOB_LEASE_S": "3"})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "distribute", "worker", url, "--run", "stepjobs:steps",
             "--name", name, "--path", str(tmp / name), *opts],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=True)
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        self.out: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.append(line)
            self.lines.put(line.strip())
        self.lines.put(None)

    def wait_for(self, text: str) -> None:
        """Block until the worker prints ``text`` (a whole line)."""
        end = time.monotonic() + HANG_S
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line {text!r}:\n{''.join(self.out)}") from None
            if line is None:
                raise AssertionError(f"exited without {text!r}:\n{''.join(self.out)}")
            if line == text:
                return

    def finish(self) -> None:
        """Wait for a clean exit."""
        assert self.proc.wait(timeout=HANG_S) == 0, "".join(self.out)


def starts(url: str, job: str, tmp: Path) -> list[list[str]]:
    """The ``attempt step worker`` lines of the job's ``starts.txt`` on master."""
    text = git_out(url, "show", f"master:{job_path(job)}/starts.txt", tmp=tmp)
    return [line.split() for line in text.splitlines()]


@pytest.mark.slow
def test_a_killed_workers_job_resumes_at_its_last_checkpoint(file_remote: str,
                                                             tmp_path: Path) -> None:
    """SIGKILL mid-job: after the job lease another worker runs attempt 2 from the step the
    dead one last pushed, and every job is done exactly once."""
    jobs = ["alpha", "beta"]
    init_remote(file_remote, jobs)
    victim = Worker(tmp_path, file_remote, "victim", "--max-jobs", "1")
    victim.wait_for("STEP alpha 3")
    kill_tree(victim.proc.pid)
    victim.proc.wait()
    heir = Worker(tmp_path, file_remote, "heir", "--idle-exit")
    heir.finish()
    assert_settled(file_remote, jobs, tmp_path)
    first, second = starts(file_remote, "alpha", tmp_path)
    assert first == ["1", "0", "victim"]
    assert second[0] == "2" and int(second[1]) >= 3 and second[2] == "heir"
    assert starts(file_remote, "beta", tmp_path) == [["1", "0", "heir"]]
    assert git_out(file_remote, "show", f"master:{job_path('alpha')}/progress.txt",
                   tmp=tmp_path) == "8\n"
    # the dead attempt's branch went with the first checkpoint of the one resuming from it
    assert git_out(file_remote, "for-each-ref", "--format=%(refname)", "refs/heads/",
                   tmp=tmp_path).split() == ["refs/heads/master"]


@pytest.mark.slow
def test_a_job_given_back_on_sigterm_resumes(file_remote: str, tmp_path: Path) -> None:
    """A stop signal with no grace gives the job back with its work on its branch; the next
    worker takes it (the attempt not counted) and continues from that work."""
    init_remote(file_remote, ["gamma"])
    leaver = Worker(tmp_path, file_remote, "leaver", "--grace", "0")
    leaver.wait_for("STEP gamma 2")
    os.kill(leaver.proc.pid, 15)
    leaver.finish()
    assert ledger_file(file_remote, "jobs.txt", tmp_path) == ["gamma"]
    Worker(tmp_path, file_remote, "next", "--idle-exit").finish()
    assert_settled(file_remote, ["gamma"], tmp_path)
    first, second = starts(file_remote, "gamma", tmp_path)
    assert first == ["1", "0", "leaver"]
    assert second[0] == "1" and int(second[1]) >= 2 and second[2] == "next"


def test_failed_job_requeued_by_hand_starts_fresh_unless_resume(file_remote: str,
                                                                 tmp_path: Path) -> None:
    """A failed job requeued by hand starts empty; with ``resume=True`` (``requeue --resume``)
    its next attempt starts from the failed attempt's checkpoint."""
    init_remote(file_remote, ["job"])
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    try:
        assert worker.get_next_job(lambda: "job") == "job"
        assert worker.attempt == 1
        Path(worker.job_dir or "", "notes.txt").write_text("first try\n")
        worker.commit_update()
        worker.fail_job("boom")
        requeue_jobs(worker, ["job"])
        assert worker.get_next_job(lambda: "job") == "job"
        assert worker.attempt == 2 and os.listdir(worker.job_dir or "") == []
        Path(worker.job_dir or "", "notes.txt").write_text("second try\n")
        worker.commit_update()
        worker.fail_job("boom again")
        requeue_jobs(worker, ["job"], resume=True)
        assert worker.get_next_job(lambda: "job") == "job"
        assert worker.attempt == 3
        assert Path(worker.job_dir or "", "notes.txt").read_text() == "second try\n"
        worker.finish_job()
    finally:
        worker.close()
    assert git_out(file_remote, "show", f"master:{job_path('job')}/notes.txt",
                   tmp=tmp_path) == "second try\n"
    assert git_out(file_remote, "ls-tree", "--name-only", "master", tmp=tmp_path).split() == [
        ".distribute", "done.txt", "failed.txt", "jobs.txt", "running.txt", "updates"]


def test_an_attempt_that_never_checkpointed_leaves_nothing(file_remote: str,
                                                          tmp_path: Path) -> None:
    """Given back before any checkpoint, the job's next attempt starts with an empty directory;
    given back after one, with that checkpoint (a later local change that was never committed is
    committed by the give-back)."""
    init_remote(file_remote, ["job"])
    one = worker_from_url(file_remote, tmp_path / "one", "one")
    two = worker_from_url(file_remote, tmp_path / "two", "two")
    try:
        assert one.get_next_job(lambda: "job") == "job"
        one.give_back_job()
        assert two.get_next_job(lambda: "job") == "job"
        assert os.listdir(two.job_dir or "") == []
        Path(two.job_dir or "", "sub").mkdir()
        Path(two.job_dir or "", "sub", "state.bin").write_bytes(b"\x00\x01")
        two.give_back_job()
        assert one.get_next_job(lambda: "job") == "job"
        assert Path(one.job_dir or "", "sub", "state.bin").read_bytes() == b"\x00\x01"
        assert one.attempt == 1
        one.finish_job()
    finally:
        one.close()
        two.close()


def test_requeue_resume_on_the_command_line(file_remote: str, tmp_path: Path, cli) -> None:
    """``distribute requeue --resume JOB`` records the failed attempt's branch in ``resume.txt``;
    plain ``requeue`` records nothing."""
    init_remote(file_remote, ["job"])
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    try:
        assert worker.get_next_job(lambda: "job") == "job"
        worker.fail_job("boom")
    finally:
        worker.close()
    assert "requeued job job (resumes)" in cli("requeue", file_remote, "job", "--resume").stdout
    assert ledger_file(file_remote, "resume.txt", tmp_path) == ["job\tw/job"]
    assert "--resume" in cli("requeue", "--help").stdout
