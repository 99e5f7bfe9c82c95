"""Faults inside one process: slow job functions, fenced holders, local damage, corrupt ledgers."""
from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Optional

import pytest

from support.remotes import git_out, ledger_file

from distribute import LockLostError, Worker, init_remote, queue_jobs_func, worker_from_url

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin:/usr/local/bin"}


def git(path: Path, *args: str, check: bool = True) -> str:
    return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                          check=check, env=GIT_ENV).stdout


@pytest.mark.slow
def test_slow_next_job_function_renews_its_lease(file_remote: str, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    init_remote(file_remote, ["slow", "next"])
    slow = worker_from_url(file_remote, tmp_path / "slow", "slow", lock_lease_s=1.0)
    other = worker_from_url(file_remote, tmp_path / "other", "other", lock_lease_s=1.0,
                            poll_max_s=0.1)
    got: list[Optional[str]] = []
    started = threading.Event()

    def slow_func(w: Worker) -> Optional[str]:
        started.set()
        waiter.join(timeout=4)  # four lock leases while the other worker waits for the lock
        assert waiter.is_alive()  # it is still waiting: the lease was renewed, never broken
        return queue_jobs_func(w)

    waiter = threading.Thread(target=lambda: (started.wait(), got.append(
        other.get_next_job(queue_jobs_func))))
    waiter.start()
    with caplog.at_level(logging.INFO):
        assert slow.get_next_job(slow_func) == "slow"
    waiter.join(timeout=30)
    assert got == ["next"]
    assert "breaks the lock" not in caplog.text


def test_holder_that_cannot_renew_is_fenced(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote, ["a", "b"])
    stuck = worker_from_url(file_remote, tmp_path / "stuck", "stuck", lock_lease_s=1.0)
    other = worker_from_url(file_remote, tmp_path / "other", "other", lock_lease_s=1.0,
                            poll_max_s=0.1)

    def cut_off(w: Worker) -> Optional[str]:
        job = queue_jobs_func(w)
        git(Path(w.path), "remote", "set-url", "origin", str(tmp_path / "unreachable"))
        assert other.get_next_job(queue_jobs_func) == "a"  # breaks the lock after the lease
        git(Path(w.path), "remote", "set-url", "origin", file_remote)
        return job

    with pytest.raises(LockLostError):
        stuck.get_next_job(cut_off)
    assert [l.split("\t")[:2] for l in ledger_file(file_remote, "running.txt", tmp_path)] == \
        [["a", "other"]]
    assert ledger_file(file_remote, "jobs.txt", tmp_path) == ["b"]
    assert "stuck" not in git_out(file_remote, "log", "--format=%s", "master", tmp=tmp_path)
    assert stuck.get_next_job(queue_jobs_func) == "b"  # and it carries on normally


def test_local_damage_is_repaired(file_remote: str, tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    init_remote(file_remote, ["one", "two", "three", "four"])
    path = tmp_path / "w"
    worker = worker_from_url(file_remote, path, "w")
    worker.get_next_job(queue_jobs_func)
    Path(worker.job_dir, "r.txt").write_text("one")
    worker.finish_job()
    worker.close()
    # 1. the clone deleted: cloned again
    shutil.rmtree(path)
    worker = worker_from_url(file_remote, path, "w")
    assert worker.get_next_job(queue_jobs_func) == "two"
    worker.finish_job()
    worker.close()
    # 2. a merge left half-done by a killed process, plus junk and an edited ledger file
    git(path, "checkout", "-q", "-b", "side", "origin/master")
    (path / "jobs.txt").write_text("junk\n")
    git(path, "commit", "-qam", "side")
    git(path, "checkout", "-q", "--detach", "origin/master")
    (path / "jobs.txt").write_text("other junk\n")
    git(path, "commit", "-qam", "main")
    git(path, "merge", "side", check=False)
    assert (path / ".git" / "MERGE_HEAD").exists()
    (path / "stray-output.bin").write_text("junk")
    with caplog.at_level(logging.WARNING):
        worker = worker_from_url(file_remote, path, "w")
    assert "aborting a merge" in caplog.text and "stray-output.bin" in caplog.text
    assert worker.get_next_job(queue_jobs_func) == "three"
    worker.finish_job()
    # 3. a rebase left half-done
    worker.close()
    git(path, "checkout", "-q", "-B", "r1", "origin/master")
    (path / "done.txt").write_text("x\n")
    git(path, "commit", "-qam", "r1")
    git(path, "checkout", "-q", "-B", "r2", "origin/master")
    (path / "done.txt").write_text("y\n")
    git(path, "commit", "-qam", "r2")
    git(path, "rebase", "r1", check=False)
    assert (path / ".git" / "rebase-merge").exists() or (path / ".git" / "rebase-apply").exists()
    worker = worker_from_url(file_remote, path, "w")
    assert worker.get_next_job(queue_jobs_func) == "four"
    worker.finish_job()
    done = [l.split("\t")[0] for l in ledger_file(file_remote, "done.txt", tmp_path)]
    assert done == ["one", "two", "three", "four"]
    files = git_out(file_remote, "ls-tree", "-r", "--name-only", "master", tmp=tmp_path).split()
    assert "stray-output.bin" not in files


def test_corrupt_ledger_is_handled(file_remote: str, tmp_path: Path,
                                   caplog: pytest.LogCaptureFixture) -> None:
    init_remote(file_remote)
    editor = tmp_path / "editor"
    subprocess.run(["git", "clone", "-q", file_remote, str(editor)], check=True, env=GIT_ENV)
    (editor / "jobs.txt").write_bytes(b"\r\n  a  \r\n\r\nb\nb\ndone-before\n\n\t\n")
    (editor / "done.txt").write_bytes(b"done-before\told\t2026-01-01T00:00:00Z\t1\r\n\n")
    git(editor, "commit", "-qam", "hand edit")
    git(editor, "push", "-q", "origin", "HEAD:master")
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    seen = []
    with caplog.at_level(logging.WARNING):
        while (job := worker.get_next_job(queue_jobs_func)) is not None:
            seen.append(job)
            worker.finish_job()
    assert seen == ["a", "b"]
    assert [l.split("\t")[0] for l in ledger_file(file_remote, "done.txt", tmp_path)] == \
        ["done-before", "a", "b"]
    assert ledger_file(file_remote, "jobs.txt", tmp_path) == []
    assert "blank lines" in caplog.text
    assert "already running or done" in caplog.text
