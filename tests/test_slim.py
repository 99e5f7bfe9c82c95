"""Slim local copies (shallow, partial, sparse) against real remotes: small, and the API still works."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support.remotes import git_out, jobs_in

from distribute import MergeConflictError, Worker, init_remote, queue_jobs_func, worker_from_url
from distribute.cli.commands import story
from distribute.protocol import job_path

LEDGER = [".distribute", "done.txt", "failed.txt", "jobs.txt", "running.txt"]


def run_jobs(worker: Worker, count: int) -> None:
    for _ in range(count):
        job = worker.get_next_job(queue_jobs_func)
        assert job is not None
        Path(worker.job_dir or "", "result.txt").write_text(f"result of {job}\n")
        worker.finish_job()


def in_copy(worker: Worker, *args: str) -> str:
    return subprocess.run(["git", "-C", worker.path, *args], check=True, capture_output=True,
                          text=True).stdout


def missing_objects(worker: Worker) -> set[str]:
    """Objects of master that the copy does not hold (``?sha`` lines), without fetching them."""
    out = in_copy(worker, "rev-list", "--objects", "--missing=print", "refs/remotes/origin/master")
    return {line[1:] for line in out.splitlines() if line.startswith("?")}


@pytest.mark.slow
def test_slim_copy_holds_the_ledger_and_its_own_job(any_remote: str, tmp_path: Path) -> None:
    init_remote(any_remote, ["a", "b", "c"])
    run_jobs(worker_from_url(any_remote, tmp_path / "first", "first"), 2)
    new = worker_from_url(any_remote, tmp_path / "new", "new")
    root = Path(new.path)
    assert (root / ".git" / "shallow").exists()
    assert sorted(p.name for p in root.iterdir() if p.name != ".git") == LEDGER
    other = in_copy(new, "rev-parse",
                    f"refs/remotes/origin/master:{job_path('a')}/result.txt").strip()
    assert other in missing_objects(new)  # other jobs' results were not downloaded

    assert new.get_next_job(queue_jobs_func) == "c"
    Path(new.job_dir or "", "result.txt").write_text("result of c\n")
    assert new.commit_update()
    new.include_paths(f"{job_path('b')}")  # mid-job: the job's own files stay
    assert Path(new.job_dir or "", "result.txt").read_text() == "result of c\n"
    assert (root / job_path("b") / "result.txt").read_text() == "result of b\n"
    Path(new.job_dir or "", "more.txt").write_text("more\n")
    new.finish_job()
    assert sorted(jobs_in(any_remote, "done.txt", tmp_path)) == ["a", "b", "c"]
    files = git_out(any_remote, "ls-tree", "-r", "--name-only", "master", tmp=tmp_path).split()
    assert {f"{job_path('c')}/result.txt", f"{job_path('c')}/more.txt",
            f"{job_path('a')}/result.txt"} <= set(files)

    new.include_paths(f"{job_path('a')}")  # fetched on demand
    assert (root / job_path("a") / "result.txt").read_text() == "result of a\n"
    assert new.get_next_job(queue_jobs_func) is None  # a sync resets the work tree ...
    assert (root / job_path("a") / "result.txt").read_text() == "result of a\n"  # ... keeps it
    assert not (root / job_path("c")).exists()  # the finished job's files are not checked out
    assert not (root / ".distribute-job" / "c").exists()  # and its working directory is gone
    with pytest.raises(ValueError):
        new.include_paths("../outside")
    new.close()


def test_history_of_a_slim_copy_is_deepened_for_the_log(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote, ["a", "b"])
    run_jobs(worker_from_url(file_remote, tmp_path / "first", "first"), 2)
    new = worker_from_url(file_remote, tmp_path / "new", "new")
    assert in_copy(new, "rev-list", "--count", "refs/remotes/origin/master").strip() == "1"
    lines = story(new, 50).splitlines()
    assert [line.split("  ", 1)[1] for line in lines] == [
        "initialise the distribute job ledger", "first took job a", "first finished job a",
        "first took job b", "first finished job b"]


def test_server_without_on_demand_fetches_gets_whole_files(file_remote: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    init_remote(file_remote, ["a", "b"])
    run_jobs(worker_from_url(file_remote, tmp_path / "first", "first"), 1)
    # protocol v0 only: the server refuses requests for single objects it did not advertise
    for key, value in (("GIT_CONFIG_COUNT", "1"), ("GIT_CONFIG_KEY_0", "protocol.version"),
                       ("GIT_CONFIG_VALUE_0", "0")):
        monkeypatch.setenv(key, value)
    new = worker_from_url(file_remote, tmp_path / "new", "new")
    assert missing_objects(new) == set()
    assert (Path(new.path) / ".git" / "shallow").exists()
    run_jobs(new, 1)
    new.include_paths(f"{job_path('a')}")
    assert (Path(new.path) / job_path("a") / "result.txt").read_text() == "result of a\n"
    assert jobs_in(file_remote, "done.txt", tmp_path) == ["a", "b"]


def test_slim_copies_can_be_turned_off(file_remote: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    init_remote(file_remote, ["a", "b"])
    run_jobs(worker_from_url(file_remote, tmp_path / "first", "first"), 1)
    monkeypatch.setenv("DISTRIBUTE_SLIM_CLONE", "0")
    full = worker_from_url(file_remote, tmp_path / "full", "full")
    assert not (Path(full.path) / ".git" / "shallow").exists()
    assert (Path(full.path) / job_path("a") / "result.txt").read_text() == "result of a\n"
    run_jobs(full, 1)
    assert jobs_in(file_remote, "done.txt", tmp_path) == ["a", "b"]


def test_after_a_merge_conflict_the_job_files_are_back(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote, ["a"])
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    assert worker.get_next_job(queue_jobs_func) == "a"
    Path(worker.job_dir or "", "result.txt").write_text("result of a\n")
    Path(worker.path, "summary.txt").write_text("from the job\n")
    other = worker_from_url(file_remote, tmp_path / "other", "other")

    def edit(ledger, root: Path) -> str:  # noqa: ANN001
        (root / "summary.txt").write_text("from master\n")
        return "summary"

    other.update_master(edit)
    with pytest.raises(MergeConflictError, match="summary.txt"):
        worker.finish_job()
    assert Path(worker.job_dir or "", "result.txt").read_text() == "result of a\n"
    Path(worker.path, "summary.txt").write_text("from master\n")  # resolve, and retry
    worker.finish_job()
    files = git_out(file_remote, "ls-tree", "-r", "--name-only", "master", tmp=tmp_path).split()
    assert f"{job_path('a')}/result.txt" in files
    assert jobs_in(file_remote, "done.txt", tmp_path) == ["a"]
