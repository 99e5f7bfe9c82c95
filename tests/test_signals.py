"""Stop signals sent to a real ``distribute worker`` process while its job runs.

The contract: any sequence of 1 to 5 SIGINT/SIGTERM, at any spacing, while a job runs ends with the
job given back at the head of the queue (or finished, when it returned within ``--grace``), exit
code 0, no traceback, nothing left in ``running.txt`` and the lock free. The first signal is
answered at once with one line naming the job and its grace. The job functions are in
``cli_jobs.py``; every wait is for a line the worker prints (the timeouts only stop a hung test).
"""
from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

from support import SUPPORT_DIR
from support.remotes import git_out, jobs_in

from distribute import JobStateError, Worker, init_remote
from distribute.loop import run_worker_loop

pytestmark = pytest.mark.slow

ENV = {"DISTRIBUTE_LOCK_LEASE_S": "2", "DISTRIBUTE_JOB_LEASE_S": "600",  # no lease brings a job back
       "DISTRIBUTE_POLL_MAX_S": "0.2", "DISTRIBUTE_POLL_S": "0.2"}
HANG_S = 60  # only a hung worker takes this long
STOPS = (signal.SIGINT, signal.SIGTERM)


class WorkerProcess:
    """``distribute worker`` in the background; its stdout lines are read as they come."""

    def __init__(self, tmp: Path, url: str, run: str, *opts: str) -> None:
        env = dict(os.environ, **ENV, DISTRIBUTE_CACHE_DIR=str(tmp / "cache"))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SUPPORT_DIR), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            ["distribute", "worker", url, "--run", f"cli_jobs:{run}", "--name", "w",
             "--path", str(tmp / "w"), *opts],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, True)),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object, is_stdout: bool) -> None:
        for line in stream:  # type: ignore[attr-defined]
            (self.out if is_stdout else self.err).append(line)
            if is_stdout:
                self._lines.put(line.rstrip("\n"))
        if is_stdout:
            self._lines.put(None)

    def wait_for(self, prefix: str) -> str:
        """The next stdout line starting with ``prefix`` (earlier lines are skipped)."""
        end = time.monotonic() + HANG_S
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no line {prefix!r} after {HANG_S}s:\n{self.text()}") from None
            if line is None:
                self.proc.wait()
                raise AssertionError(f"exited without printing {prefix!r}:\n{self.text()}")
            if line.startswith(prefix):
                return line

    def send(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def finish(self) -> int:
        """Wait for the exit; return the exit code (every line read)."""
        try:
            code = self.proc.wait(timeout=HANG_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the worker did not stop:\n{self.text()}") from None
        for reader in self._readers:
            reader.join()
        return code

    def text(self) -> str:
        return "".join(self.out) + "--- stderr ---\n" + "".join(self.err)


def start(tmp: Path, job: str, run: str, grace: float) -> tuple[str, WorkerProcess]:
    """A fresh remote with ``job`` and ``next`` queued, and a worker running ``job``."""
    url = "file://" + str(tmp / "srv.git")
    subprocess.run(["git", "init", "-q", "--bare", str(tmp / "srv.git")], check=True)
    init_remote(url, [job, "next"])
    worker = WorkerProcess(tmp, url, run, "--grace", f"{grace:g}")
    assert worker.wait_for("RUNNING") == f"RUNNING {job}"
    return url, worker


def job_file(url: str, ref: str, job: str, name: str, tmp: Path) -> Optional[str]:
    """The text of the job's file ``name`` on ``ref`` (wherever the layout puts the job's
    directory), or ``None``."""
    paths = [p for p in git_out(url, "ls-tree", "-r", "--name-only", ref, tmp=tmp).splitlines()
             if p.startswith("updates/") and p.endswith(f"/{job}/{name}")]
    return git_out(url, "show", f"{ref}:{paths[0]}", tmp=tmp) if len(paths) == 1 else None


def check_stopped(url: str, worker: WorkerProcess, job: str, tmp: Path) -> bool:
    """The common end of every scenario; returns whether the job was finished (else given back)."""
    code = worker.finish()
    out, text = "".join(worker.out), worker.text()
    assert code == 0, text
    assert "Traceback" not in text
    acks = [line for line in out.splitlines() if line.startswith("w: SIG")]
    assert len(acks) == 1 and f"job {job} " in acks[0], text
    finished = f"w finished job {job}" in out
    assert finished != (f"w gave back job {job}" in out), text
    assert out.index(acks[0]) < out.index(f"w finished job {job}" if finished else
                                          f"w gave back job {job}")
    assert "w stopped (SIG" in out, text
    if finished:
        assert jobs_in(url, "done.txt", tmp) == [job]
        assert jobs_in(url, "jobs.txt", tmp) == ["next"]  # no new job was taken
    else:
        assert jobs_in(url, "jobs.txt", tmp) == [job, "next"]
    assert jobs_in(url, "running.txt", tmp) == []
    assert git_out(url, "for-each-ref", "refs/distribute/lock", tmp=tmp) == ""
    return finished


# Each round: a fresh remote, a worker running a job, then 1-5 stop signals in a random order at
# random spacings (seeded by the round). "busy" works in Python code (the interruption lands at
# once, its finally pushes interrupted.txt); "block" sleeps in C code (it cannot be interrupted and
# is left behind); "nap" returns after a random time, within the grace or not.
# SIGNAL_TEST_SEED=<n> draws other schedules (to run many more rounds by hand).
ROUNDS = [(n, ("busy", "block", "nap", "busy")[n % 4]) for n in range(16)]
SEED = int(os.environ.get("SIGNAL_TEST_SEED", "0"))


@pytest.mark.parametrize("seed,run", ROUNDS, ids=[f"{n:02d}-{run}" for n, run in ROUNDS])
def test_any_stop_signals_give_the_job_back_or_let_it_finish(tmp_path: Path, seed: int,
                                                             run: str) -> None:
    rng = random.Random(f"{SEED}-{seed}")
    job = f"nap-{rng.randrange(400, 1600)}" if run == "nap" else "first"
    grace = 0.8 if run == "nap" else rng.choice([0, 0.3, 0.6])
    signals = [rng.choice(STOPS) for _ in range(rng.randint(1, 5))]
    pauses = [rng.uniform(0, 0.3) for _ in signals]
    url, worker = start(tmp_path, job, run, grace)
    for sig, pause in zip(signals, pauses):
        time.sleep(pause)  # the spacing of the signals is what is tested here
        worker.send(sig)
    finished = check_stopped(url, worker, job, tmp_path)
    names = {s.name for s in signals}
    assert any(f"w stopped ({name})" in "".join(worker.out) for name in names)
    if run != "nap":
        assert not finished
    if not finished and run == "busy":  # the job function's finally ran and its push landed
        assert job_file(url, f"w/{job}", job, "interrupted.txt", tmp_path) == f"{job} interrupted\n"
    if not finished and run != "nap":
        assert job_file(url, f"w/{job}", job, "partial.txt", tmp_path) == f"{job} partial\n"


@pytest.mark.parametrize("run", ["busy", "block"])
def test_second_ctrl_c_gives_back_at_once_despite_a_long_grace(tmp_path: Path, run: str) -> None:
    url, worker = start(tmp_path, "first", run, 600)
    worker.send(signal.SIGINT)
    ack = worker.wait_for("w: SIGINT")  # answered at once: the grace is ten minutes
    assert ack == ("w: SIGINT received: job first has 600s of its grace left to return; "
                   "Ctrl-C again gives it back now")
    worker.send(signal.SIGINT)
    assert worker.wait_for("w gave back job first").startswith(
        "w gave back job first (SIGINT then SIGINT received")
    assert check_stopped(url, worker, "first", tmp_path) is False
    out = "".join(worker.out)
    assert "w stopped (SIGINT): 0 done, 0 failed, 1 given back" in out
    if run == "block":
        assert "did not stop and was left behind" in out
    else:
        assert "the job function was interrupted" in out


def test_a_job_returning_within_the_grace_is_finished(tmp_path: Path) -> None:
    url, worker = start(tmp_path, "one", "wait_for_go", 600)
    worker.send(signal.SIGTERM)
    ack = worker.wait_for("w: SIGTERM")
    assert ack == ("w: SIGTERM received: job one has 600s of its grace left to return; "
                   "a second SIGTERM or Ctrl-C gives it back now")
    (tmp_path / "go").touch()
    worker.wait_for("w finished job one")
    worker.send(signal.SIGINT)  # a signal after the job is over changes nothing
    assert check_stopped(url, worker, "one", tmp_path) is True
    assert "w stopped (SIGTERM): 1 done, 0 failed" in "".join(worker.out)
    assert job_file(url, "master", "one", "result.txt", tmp_path) == "one after go\n"


class RecordingWorker(Worker):
    """A worker that notes which thread runs each ``commit_update``."""

    threads: list[str]

    def commit_update(self, message: Optional[str] = None) -> bool:
        self.threads = [*getattr(self, "threads", []), threading.current_thread().name]
        return super().commit_update(message)


def test_the_job_runs_in_its_own_thread_and_git_in_the_loop_thread(file_remote: str,
                                                                   tmp_path: Path) -> None:
    init_remote(file_remote, ["a"])
    worker = RecordingWorker(tmp_path / "w", "w", remote_url=file_remote)
    seen: dict[str, object] = {}
    later, answered = threading.Event(), threading.Event()
    refused: list[BaseException] = []

    def leftover(view: Worker) -> None:  # a thread the job leaves behind, using the worker late
        later.wait(HANG_S)
        try:
            view.commit_update("too late")
        except JobStateError as exc:
            refused.append(exc)
        finally:
            answered.set()

    def run(job: str, view: Worker) -> None:
        seen.update(thread=threading.current_thread().name, is_worker=isinstance(view, Worker),
                    name=view.name)
        Path(view.job_dir or "", "partial.txt").write_text("partial\n")
        assert view.commit_update("checkpoint") is True
        threading.Thread(target=leftover, args=(view,), daemon=True).start()

    lines: list[str] = []
    try:
        result = run_worker_loop(worker, run, exit_when_queue_empty=True, report=lines.append)
    finally:
        worker.close()
    later.set()
    assert (result.done, result.ended_by) == (1, "queue empty"), lines
    assert seen == {"thread": "distribute-job-a", "is_worker": True, "name": "w"}
    assert worker.threads == [threading.main_thread().name]  # the job's call ran in the loop
    assert job_file(file_remote, "master", "a", "partial.txt", tmp_path) == "partial\n"
    assert answered.wait(HANG_S)
    assert refused and "is over on this worker" in str(refused[0])
    assert worker.threads == [threading.main_thread().name]  # never called for the leftover
