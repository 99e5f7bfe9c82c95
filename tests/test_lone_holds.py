"""A worker alone holds no lock (issue 28): its claim and its finish are one push each, on the
master of its own last push, with a lease that the lock is absent; when another worker comes (its
push moved master, or it holds the lock), the hold is made again under the lock, and every job
is still done exactly once. Real git remotes, workers in threads with copies of their own."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Optional

import pytest
from support.remotes import assert_settled, jobs_in
from support.serving import hold_lock_as_dead_holder

from distribute import Worker, init_remote, queue_jobs_func, worker_from_url
from distribute.protocol import LOCK_REF

ZERO = "0" * 40


def count_pushes(bare: Path, log: Path) -> None:
    """Have the remote note each push it receives (``push``) and each ref update it asks for
    (``old new ref``) in ``log``."""
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho push >> '{log}'\ncat >> '{log}'\n")
    hook.chmod(0o755)


def received(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def lock_created(lines: list[str]) -> bool:
    return any(line.endswith(" " + LOCK_REF) and line.split()[1] != ZERO for line in lines)


def result(worker: Worker, job: str) -> None:
    Path(worker.job_dir or "", "result.txt").write_text(f"{worker.name} {job}\n")


def test_a_lone_workers_claim_and_finish_are_one_push_each(file_remote: str,
                                                           tmp_path: Path) -> None:
    bare = Path(file_remote.removeprefix("file://"))
    jobs = ["a", "b", "c", "d"]
    init_remote(file_remote, jobs)
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    job = worker.get_next_job(queue_jobs_func)  # (a worker's first hold takes the lock)
    assert job == "a"
    log = tmp_path / "pushes.log"
    count_pushes(bare, log)
    while True:
        result(worker, job)
        for step in ("finish", "claim"):
            calls, before = worker.clone.network_calls, received(log)
            job = worker.finish_job() if step == "finish" else worker.get_next_job(
                queue_jobs_func)
            after = received(log)[len(before):]
            assert worker.clone.network_calls - calls == 1  # no fetch, no lock: one push...
            if job is None and step == "claim":  # ... or, with nothing to write, one look
                assert after == []
                break
            assert after.count("push") == 1
            assert any(line.endswith(" refs/heads/master") for line in after)
            assert not lock_created(after)
        if job is None:
            break
    assert_settled(file_remote, jobs, tmp_path)
    assert not lock_created(received(log))
    worker.close()


def _drain(worker: Worker, job: Optional[str], done: list[str]) -> None:
    while job is not None:
        result(worker, job)
        done.append(job)
        job = worker.finish_job(queue_jobs_func)


def test_a_second_worker_joins_a_lone_one(file_remote: str, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """The first works alone, without the lock; the second comes and claims (moving master):
    the first's next lockless push is refused, and that hold is made again under the lock. Then
    both drain the queue at once: every job done exactly once, nothing lost."""
    caplog.set_level(logging.DEBUG, logger="distribute")
    jobs = [f"j{i:02d}" for i in range(24)]
    init_remote(file_remote, jobs)
    first = worker_from_url(file_remote, tmp_path / "first", "first")
    job = first.get_next_job(queue_jobs_func)
    done: dict[str, list[str]] = {"first": [], "second": []}
    for _ in range(3):  # alone: lockless
        assert job is not None
        result(first, job)
        done["first"].append(job)
        job = first.finish_job(queue_jobs_func)
    lone = [r for r in caplog.records if r.getMessage() == "first held without the lock (alone)"]
    assert len(lone) == 3

    joined = threading.Event()
    errors: list[BaseException] = []

    def second_worker() -> None:
        try:
            second = worker_from_url(file_remote, tmp_path / "second", "second")
            claimed = second.get_next_job(queue_jobs_func)
            joined.set()
            _drain(second, claimed, done["second"])
            second.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)
            joined.set()

    thread = threading.Thread(target=second_worker, daemon=True)
    thread.start()
    assert joined.wait(60) and not errors, errors
    caplog.clear()
    _drain(first, job, done["first"])  # its first push now: master moved, refused
    thread.join(120)
    assert not thread.is_alive() and not errors, errors
    messages = [r.getMessage() for r in caplog.records]
    assert "first is not alone any more (master moved or the lock is taken); the hold is made " \
           "again under the lock" in messages
    assert "first took the lock" in messages  # (the hold made again, and those after)
    assert sorted(done["first"] + done["second"]) == jobs
    assert done["second"]  # (both worked)
    workers = assert_settled(file_remote, jobs, tmp_path)
    assert {"first", "second"} == set(workers)
    first.close()


def test_a_lockless_hold_waits_for_a_lock_held_by_another(file_remote: str,
                                                          tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture,
                                                          ) -> None:
    """The lockless push leases the lock absent: a lock taken since the worker's last look
    refuses it (master never moved), and the hold waits for the lock (here: a dead holder's,
    broken after the lease) and is made under it."""
    caplog.set_level(logging.DEBUG, logger="distribute")
    bare = Path(file_remote.removeprefix("file://"))
    init_remote(file_remote, ["a", "b"])
    worker = worker_from_url(file_remote, tmp_path / "w", "w", lock_lease_s=1.0)
    job = worker.get_next_job(queue_jobs_func)
    assert job == "a"
    result(worker, job)
    hold_lock_as_dead_holder(bare)
    caplog.clear()
    assert worker.finish_job(queue_jobs_func) == "b"
    messages = [r.getMessage() for r in caplog.records]
    assert "w is not alone any more (master moved or the lock is taken); the hold is made " \
           "again under the lock" in messages
    assert any(m.startswith("w breaks the lock") for m in messages)
    assert jobs_in(file_remote, "done.txt", tmp_path) == ["a"]
    assert jobs_in(file_remote, "running.txt", tmp_path) == ["b"]
    result(worker, "b")
    assert worker.finish_job() is None
    assert_settled(file_remote, ["a", "b"], tmp_path)
    worker.close()


def test_a_host_refusing_to_delete_the_absent_lock_gets_locked_holds(
        file_remote: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Stock git deletes an absent ref with a warning; a host that refuses it refuses the
    lockless push once, and the worker holds the lock from then on: every job done once."""
    caplog.set_level(logging.WARNING, logger="distribute.transaction")
    bare = Path(file_remote.removeprefix("file://"))
    jobs = ["a", "b", "c"]
    init_remote(file_remote, jobs)
    hook = bare / "hooks" / "pre-receive"
    log = tmp_path / "refused.log"
    hook.write_text(f"#!/bin/sh\nwhile read old new ref; do\n"
                    f"  if [ \"$old\" = {ZERO} ] && [ \"$new\" = {ZERO} ]; then\n"
                    f"    echo \"$ref\" >> '{log}'\n"
                    f"    echo \"no deleting $ref: it does not exist\" >&2; exit 1; fi\n"
                    f"done\nexit 0\n")
    hook.chmod(0o755)
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    job = worker.get_next_job(queue_jobs_func)
    done: list[str] = []
    _drain(worker, job, done)
    assert done == jobs
    assert_settled(file_remote, jobs, tmp_path)
    assert received(log) == [LOCK_REF]  # one lockless push tried, refused; none after
    refusals = [r for r in caplog.records if "refuses the lockless push" in r.getMessage()]
    assert len(refusals) == 1
    worker.close()
