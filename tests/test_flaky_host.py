"""A host that loses push answers, drops pushes and answers ``(failed)``, over real smart HTTP.

:class:`~support.faultyhttp.FaultyHttpServer` fails push requests at the network boundary, so the
worker sees what git itself prints for such a host (over HTTP, a lost answer still prints
``Done``). Each push's outcome must be settled as having landed or not: a push judged refused
after it landed leaves a lock nobody releases (the fleet stalls for its lease) or a checkpoint
"changed by someone else".
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from support.faultyhttp import FaultyHttpServer, PushFaultRates
from support.gitservers import make_bare
from support.invariants import check_remote
from support.remotes import git_out, ledger_file
from support.simulation import Config

from distribute import add_jobs, init_remote, queue_jobs_func, worker_from_url
from distribute.protocol import LOCK_REF

HERE = Path(__file__).resolve().parent
NO_FAULTS = PushFaultRates(0, 0, 0)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FaultyHttpServer]:
    make_bare(tmp_path)
    with FaultyHttpServer(tmp_path, NO_FAULTS) as server:
        init_remote(server.url(), ["J1", "J2"])
        yield server


def lock_ref(url: str, tmp: Path) -> str:
    return git_out(url, "ls-remote", url, LOCK_REF, tmp=tmp).strip()


@pytest.mark.parametrize("kind", ["applied-then-dropped", "dropped", "busy", "unavailable"])
def test_a_lock_push_of_any_outcome_is_settled(host: FaultyHttpServer, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture,
                                               kind: str) -> None:
    """The claim's first push (taking the lock) meets ``kind``: the worker settles it (it holds
    the lock: the push landed or is tried again), claims J1 and releases the lock; it never waits
    for its own lock's lease to run out."""
    url = host.url()
    worker = worker_from_url(url, path=tmp_path / "w", name="w")
    host.next_pushes(kind)
    with caplog.at_level(logging.INFO, logger="distribute"):
        assert worker.get_next_job(queue_jobs_func) == "J1"
    assert host.injected[kind] == 1
    assert lock_ref(url, tmp_path) == ""
    assert "breaks the lock" not in caplog.text
    assert [line.split("\t")[:2] for line in ledger_file(url, "running.txt", tmp_path)] == [
        ["J1", "w"]]
    worker.close()


def test_a_checkpoint_whose_answer_was_lost(host: FaultyHttpServer, tmp_path: Path) -> None:
    """A job's checkpoint is applied and its answer lost: the retry is refused (the branch has
    moved: to our own commit), and the checkpoint counts as written, not as "changed by someone
    else"; the job finishes once."""
    url = host.url()
    worker = worker_from_url(url, path=tmp_path / "w", name="w")
    assert worker.get_next_job(queue_jobs_func) == "J1"
    Path(worker.job_dir or "", "result.txt").write_text("w J1\n")
    host.next_pushes("applied-then-dropped")
    assert worker.commit_update()
    assert host.injected["applied-then-dropped"] == 1
    worker.finish_job()
    assert [line.split("\t")[:2] for line in ledger_file(url, "done.txt", tmp_path)] == [
        ["J1", "w"]]
    worker.close()


def test_a_finish_whose_answer_was_lost(host: FaultyHttpServer, tmp_path: Path) -> None:
    """The finish (master, the job's branch and the lock in one push) lands and its answer is
    lost: the worker counts it done, once, and holds no lock."""
    url = host.url()
    worker = worker_from_url(url, path=tmp_path / "w", name="w")
    assert worker.get_next_job(queue_jobs_func) == "J1"
    Path(worker.job_dir or "", "result.txt").write_text("w J1\n")
    host.next_pushes(None, "applied-then-dropped")  # the lock's take, then the finish
    worker.finish_job()
    assert host.injected["applied-then-dropped"] == 1
    assert worker.running_job is None and lock_ref(url, tmp_path) == ""
    assert [line.split("\t")[:2] for line in ledger_file(url, "done.txt", tmp_path)] == [
        ["J1", "w"]]
    add_jobs(worker, ["J3"])
    assert worker.get_next_job(queue_jobs_func) == "J2"
    worker.close()


def test_a_fleet_on_a_flaky_host(tmp_path: Path) -> None:
    """Three ``distribute worker`` processes drain 12 jobs while a quarter of all pushes are
    applied and unanswered, dropped, or answered ``(failed)``: each job done once, by the worker
    its record names, nothing left queued or running, every worker exits 0, ``git fsck``
    clean."""
    bare = make_bare(tmp_path)
    jobs = [f"j{i:02d}" for i in range(12)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(HERE / "support"), os.environ.get("PYTHONPATH")])))
    with FaultyHttpServer(tmp_path, NO_FAULTS, seed=3) as server:
        init_remote(server.url(), jobs)
        server.rates = PushFaultRates(0.15, 0.05, 0.05)
        procs = [subprocess.Popen(
            [sys.executable, "-m", "distribute", "worker", server.url(), "--run",
             "jobfuncs:write_result", "--idle-exit", "--name", name, "--path",
             str(tmp_path / name)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True) for name in ("w0", "w1", "w2")]
        errors = [proc.communicate(timeout=600)[1] for proc in procs]
    assert sum(n for kind, n in server.injected.items() if kind != "none") > 0
    for proc, err in zip(procs, errors):
        assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert check_remote(bare, Config(3, workers=3, jobs=12, faults=False), jobs) == []
