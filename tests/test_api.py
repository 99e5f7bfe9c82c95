"""The README loop and the public API against real remotes (one process)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Optional

import pytest

from support.gitservers import make_bare
from support.remotes import git_out, ledger_file

from distribute import (InvalidJobError, JobStateError, LocalCopyError, LockLostError,
                        MergeConflictError, NotARemoteError, NotInitializedError, Worker,
                        init_remote, queue_jobs_func, random_jobs_func, whetlab_make_next_jobs_func,
                        worker_from_url)
from distribute.connect import requeue_jobs
from distribute.protocol import job_path
from distribute.dist import Worker as DistWorker, worker_from_url as dist_worker_from_url
from distribute.coordination import break_lock
from distribute.repo import Clone


def run_readme_loop(worker: Worker, next_job_func: Any, limit: int = 100) -> list[str]:
    """The loop of the README: take, write updates, commit, finish."""
    jobs = []
    for _ in range(limit):
        job = worker.get_next_job(next_job_func)
        if job is None:
            break
        Path(worker.job_dir, "log.txt").write_text(f"started {job}\n")
        worker.commit_update()
        Path(worker.job_dir, "result.txt").write_text(f"result of {job}\n")
        worker.commit_update()
        worker.finish_job()
        jobs.append(job)
    return jobs


@pytest.mark.slow
def test_queue_loop_end_to_end(any_remote: str, tmp_path: Path) -> None:
    assert init_remote(any_remote, [f"job{i}" for i in range(4)]) is True
    assert init_remote(any_remote) is False
    worker = worker_from_url(any_remote, tmp_path / "w1", "w1")
    assert (worker.running_job, worker.working_branch, worker.job_dir) == (None, None, None)
    assert run_readme_loop(worker, queue_jobs_func) == ["job0", "job1", "job2", "job3"]
    assert [l.split("\t")[:2] for l in ledger_file(any_remote, "done.txt", tmp_path)] == \
        [[f"job{i}", "w1"] for i in range(4)]
    assert ledger_file(any_remote, "running.txt", tmp_path) == []
    assert ledger_file(any_remote, "jobs.txt", tmp_path) == []
    files = git_out(any_remote, "ls-tree", "-r", "--name-only", "master", tmp=tmp_path).split()
    assert {f"{job_path(f'job{i}')}/result.txt" for i in range(4)} <= set(files)
    story = git_out(any_remote, "log", "--first-parent", "--format=%s", "master",
                    tmp=tmp_path).splitlines()
    assert story[:2] == ["w1 finished job job3", "w1 took job job3"]
    assert story[-1] == "initialise the distribute job ledger"
    assert len(story) == 1 + 2 * 4  # one commit per claim and per finish, nothing else
    refs = git_out(any_remote, "for-each-ref", "--format=%(refname)", tmp=tmp_path).split()
    assert "refs/distribute/lock" not in refs
    # merged job branches are deleted in the finish push; their commits stay on master
    assert [r for r in refs if r.startswith("refs/heads/")] == ["refs/heads/master"]
    assert "w1 update on job job2" in git_out(any_remote, "log", "--format=%s", "master",
                                              tmp=tmp_path)
    worker.close()


@pytest.mark.slow
def test_finish_and_claim_in_one_lock_hold(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote, ["a", "b", "c"])
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    job = worker.get_next_job(queue_jobs_func)
    seen = []
    while job is not None:
        seen.append(job)
        Path(worker.job_dir, "r.txt").write_text(job)
        pushes = worker.clone.network_calls
        job = worker.finish_job(queue_jobs_func)
        # alone: no lock and no fetch, one atomic push on the master of our last push
        assert worker.clone.network_calls - pushes == 1
        assert worker.running_job == job
    assert seen == ["a", "b", "c"]
    assert [l.split("\t")[0] for l in ledger_file(file_remote, "done.txt", tmp_path)] == seen
    story = git_out(file_remote, "log", "--first-parent", "--format=%s", "master",
                    tmp=tmp_path).splitlines()
    assert story[:4] == ["w finished job c", "w took job c", "w finished job b", "w took job b"]

    def broken() -> str:
        raise RuntimeError("job source down")

    init_remote(file_remote)
    worker.update_master(lambda ledger, root: (ledger.queued.append("d"),
                                               ledger.write(root, queue=True), "add d")[-1])
    assert worker.get_next_job(queue_jobs_func) == "d"
    with pytest.raises(RuntimeError):
        worker.finish_job(broken)  # the finish still lands
    assert worker.running_job is None
    assert "d" in [l.split("\t")[0] for l in ledger_file(file_remote, "done.txt", tmp_path)]


def test_give_back_then_take_again_with_the_same_name(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote, ["a"])
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    assert worker.get_next_job(queue_jobs_func) == "a"
    Path(worker.job_dir, "partial.txt").write_text("first try")
    worker.give_back_job()
    assert ledger_file(file_remote, "jobs.txt", tmp_path) == ["a"]
    first_try = git_out(file_remote, "rev-parse", "w/a", tmp=tmp_path).strip()
    assert worker.get_next_job(queue_jobs_func) == "a"
    assert worker.working_branch.startswith("w/a-")  # w/a was kept with the first try's work
    worker.finish_job()
    # resumed from it: its commit is in this attempt's history, merged; the branch is gone
    assert git_out(file_remote, "show", f"master:{job_path('a')}/partial.txt",
                   tmp=tmp_path) == "first try"
    assert first_try in git_out(file_remote, "rev-list", "master", tmp=tmp_path).split()
    assert "refs/heads/w/a" not in git_out(file_remote, "for-each-ref", "--format=%(refname)",
                                           tmp=tmp_path).split()
    assert ledger_file(file_remote, "done.txt", tmp_path)[0].startswith("a\tw\t")


@pytest.mark.slow
def test_random_jobs_loop(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote)
    assert (DistWorker, dist_worker_from_url) == (Worker, worker_from_url)  # the seed's import path
    worker = dist_worker_from_url(file_remote, tmp_path / "w", "rnd")
    jobs = run_readme_loop(worker, random_jobs_func, limit=3)
    assert len(set(jobs)) == 3 and all(j.isdigit() for j in jobs)
    assert sorted(l.split("\t")[0] for l in ledger_file(file_remote, "done.txt", tmp_path)) == \
        sorted(jobs)


class Experiment:
    """A Whetlab-style experiment: suggest / pending / cancel / update / get_by_result_id."""

    class Job(dict):  # type: ignore[type-arg]
        result_id: int

    def __init__(self) -> None:
        self.next_id = 100
        self.jobs: dict[int, "Experiment.Job"] = {}
        self.results: dict[int, float] = {}
        self.cancelled: list[int] = []

    def suggest(self) -> "Experiment.Job":
        job = Experiment.Job(learning_rate=0.1 * (self.next_id - 99))
        job.result_id = self.next_id
        self.jobs[self.next_id] = job
        self.next_id += 1
        return job

    def get_by_result_id(self, rid: int) -> "Experiment.Job":
        return self.jobs[int(rid)]

    def update(self, job: "Experiment.Job", value: float) -> None:
        self.results[job.result_id] = value

    def pending(self) -> list["Experiment.Job"]:
        return [j for rid, j in self.jobs.items()
                if rid not in self.results and rid not in self.cancelled]

    def cancel(self, job: "Experiment.Job") -> None:
        self.cancelled.append(job.result_id)


def test_whetlab_loop(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote)
    experiment = Experiment()
    orphan = experiment.suggest()  # suggested earlier by a worker that died before claiming it
    worker = worker_from_url(file_remote, tmp_path / "w", "wl")
    func = whetlab_make_next_jobs_func(worker, experiment)
    done = []
    for _ in range(2):
        job = worker.get_next_job(func)
        params = experiment.get_by_result_id(job)
        Path(worker.job_dir, "value.txt").write_text(str(params["learning_rate"]))
        experiment.update(params, params["learning_rate"] ** 2)
        worker.finish_job()
        done.append(job)
    assert done == ["101", "102"]
    assert experiment.cancelled == [orphan.result_id]
    assert [l.split("\t")[0] for l in ledger_file(file_remote, "done.txt", tmp_path)] == done


def test_next_job_function_changes_are_committed_with_the_claim(file_remote: str,
                                                                tmp_path: Path) -> None:
    init_remote(file_remote, ["a"])
    worker = worker_from_url(file_remote, tmp_path / "w", "w")

    def func(w: Worker) -> str:
        Path(w.path, "notes.txt").write_text("claimed by func\n")
        return "custom"

    assert worker.get_next_job(func) == "custom"
    assert git_out(file_remote, "show", "master:notes.txt", tmp=tmp_path) == "claimed by func\n"
    assert git_out(file_remote, "log", "-1", "--format=%s", "master", tmp=tmp_path).strip() == \
        "w took job custom"
    with pytest.raises(JobStateError):
        worker.get_next_job(func)
    worker.fail_job("gave up\nwith a newline\tand tab")
    failed = ledger_file(file_remote, "failed.txt", tmp_path)
    assert failed[0].split("\t")[0] == "custom"
    assert failed[0].split("\t")[4] == "gave up with a newline and tab"
    with pytest.raises(JobStateError):
        worker.finish_job()


def test_function_returning_none_writes_nothing(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote)
    before = git_out(file_remote, "rev-parse", "master", tmp=tmp_path)
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    assert worker.get_next_job(lambda: None) is None
    assert git_out(file_remote, "rev-parse", "master", tmp=tmp_path) == before
    assert "refs/distribute/lock" not in git_out(file_remote, "for-each-ref", tmp=tmp_path)


def test_exception_in_function_releases_lock_and_discards(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote, ["a"])
    worker = worker_from_url(file_remote, tmp_path / "w", "w")

    def broken(w: Worker) -> str:
        queue_jobs_func(w)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        worker.get_next_job(broken)
    assert ledger_file(file_remote, "jobs.txt", tmp_path) == ["a"]
    assert worker.get_next_job(queue_jobs_func) == "a"


def test_merge_conflict_keeps_master_and_branch(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote, ["one", "two"])
    w1 = worker_from_url(file_remote, tmp_path / "w1", "w1")
    w2 = worker_from_url(file_remote, tmp_path / "w2", "w2")
    for w in (w1, w2):
        w.get_next_job(queue_jobs_func)
        Path(w.path, "shared.txt").write_text(f"written by {w.name}\n")
    w1.finish_job()
    master = git_out(file_remote, "rev-parse", "master", tmp=tmp_path)
    with pytest.raises(MergeConflictError) as err:
        w2.finish_job()
    assert err.value.paths == ["shared.txt"] and "shared.txt" in str(err.value)
    assert git_out(file_remote, "rev-parse", "master", tmp=tmp_path) == master
    assert git_out(file_remote, "show", "w2/two:shared.txt", tmp=tmp_path) == "written by w2\n"
    assert w2.running_job == "two"
    w2.fail_job(str(err.value))
    failed = ledger_file(file_remote, "failed.txt", tmp_path)
    assert failed[0].startswith("two\tw2\t") and "shared.txt" in failed[0]
    assert ledger_file(file_remote, "running.txt", tmp_path) == []


def test_fencing_broken_lock_cannot_write(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote, ["a", "b"])
    slow = worker_from_url(file_remote, tmp_path / "slow", "slow")
    fast = worker_from_url(file_remote, tmp_path / "fast", "fast")
    breaker = Clone.clone(file_remote, tmp_path / "breaker")

    def stalled(w: Worker) -> Optional[str]:
        job = queue_jobs_func(w)  # takes "a" locally...
        assert break_lock(breaker) is not None  # ...while an operator breaks the lock
        assert fast.get_next_job(queue_jobs_func) == "a"  # and another worker claims
        return job

    with pytest.raises(LockLostError):
        slow.get_next_job(stalled)
    assert slow.running_job is None
    running = ledger_file(file_remote, "running.txt", tmp_path)
    assert [l.split("\t")[:2] for l in running] == [["a", "fast"]]
    assert ledger_file(file_remote, "jobs.txt", tmp_path) == ["b"]
    assert "slow" not in git_out(file_remote, "log", "--format=%s", "master", tmp=tmp_path)


HOSTILE = ["a/b", "..", "../../etc/passwd", "-rf", "--upload-pack=touch x", "x" * 300,
           "ünïcødé ジョブ", "a b c", "refs/heads/master", "x.lock", "@{-1}", "job-0123456789"]
INVALID = ["", "line\nbreak", "tab\there", " padded", "nul\0"]


@pytest.mark.slow
def test_hostile_job_strings(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote)
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    pending = list(INVALID) + list(HOSTILE)
    slugs = set()
    while pending:
        job = worker.get_next_job(lambda: pending.pop(0) if pending else None)
        if job is None:
            break
        assert Path(worker.job_dir).resolve().parent == Path(worker.path, ".distribute-job")
        subprocess.run(["git", "check-ref-format", f"refs/heads/{worker.working_branch}"],
                       check=True)
        slugs.add(worker.working_branch)
        Path(worker.job_dir, "out").write_text(job)
        worker.finish_job()
    assert len(slugs) == len(HOSTILE)
    done = [l.split("\t")[0] for l in ledger_file(file_remote, "done.txt", tmp_path)]
    assert done == HOSTILE
    failed = [l.split("\t")[0] for l in ledger_file(file_remote, "failed.txt", tmp_path)]
    assert failed == [repr(j) for j in INVALID]
    with pytest.raises(InvalidJobError):
        init_remote("file://" + str(tmp_path / "never"), ["bad\njob"])


def test_clear_errors(file_remote: str, tmp_path: Path) -> None:
    with pytest.raises(NotInitializedError, match="distribute init"):
        worker_from_url(file_remote, tmp_path / "a", "a")
    with pytest.raises(NotARemoteError):
        worker_from_url("file://" + str(tmp_path / "missing.git"), tmp_path / "b", "b")
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotARemoteError):
        worker_from_url("file://" + str(tmp_path / "plain"), tmp_path / "c", "c")
    with pytest.raises(NotARemoteError):
        worker_from_url("-oProxyCommand=touch /tmp/x", tmp_path / "d", "d")
    with pytest.raises(NotARemoteError):
        worker_from_url("ext::sh -c touch% /tmp/pwned", tmp_path / "e", "e")
    init_remote(file_remote)
    other = "file://" + str(make_bare(tmp_path / "srv2"))
    init_remote(other)
    worker_from_url(file_remote, tmp_path / "f", "f").close()
    with pytest.raises(LocalCopyError, match="another remote"):
        worker_from_url(other, tmp_path / "f", "f")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(LocalCopyError):
        worker_from_url(file_remote, tmp_path / "junk", "g")
    from distribute import WorkerNameError
    for bad in ["a/b", "..", "-x", "master", "x y", "x" * 65]:
        with pytest.raises(WorkerNameError):
            worker_from_url(file_remote, tmp_path / "h", bad)


def test_reuse_clone_and_default_name(file_remote: str, tmp_path: Path) -> None:
    init_remote(file_remote, ["a", "b"])
    w = worker_from_url(file_remote, tmp_path / "w")
    assert w.name.startswith(os.uname().nodename.split(".")[0][:10].rstrip("-.")[:3])
    w.get_next_job(queue_jobs_func)
    w.finish_job()
    w.close()
    again = worker_from_url(file_remote, tmp_path / "w", "again")
    assert again.get_next_job(queue_jobs_func) == "b"


def test_requeue_jobs_by_name_and_stale(file_remote: str, tmp_path: Path) -> None:
    """The library call behind ``distribute requeue``: named jobs go to the head in the order
    given, the rest is refused with why; stale jobs are those of silent workers."""
    init_remote(file_remote, ["a", "b", "c", "d"])
    runner = worker_from_url(file_remote, tmp_path / "runner", "runner")
    assert runner.get_next_job(queue_jobs_func) == "a"
    runner.finish_job()
    assert runner.get_next_job(queue_jobs_func) == "b"
    runner.fail_job("broken")
    assert runner.get_next_job(queue_jobs_func) == "c"  # and the runner goes silent
    person = worker_from_url(file_remote, tmp_path / "person", "person", job_lease_s=0.5)
    result = requeue_jobs(person, ["c", "b", "a", "d", "nope"])
    assert (result.requeued, result.failed, result.not_stale_yet) == (["c", "b"], [], {})
    assert result.refused == [("a", "done; a done job cannot run again"),
                              ("d", "already queued"), ("nope", "not in the ledger")]
    assert ledger_file(file_remote, "jobs.txt", tmp_path) == ["c", "b", "d"]
    assert ledger_file(file_remote, "running.txt", tmp_path) == []
    assert ledger_file(file_remote, "failed.txt", tmp_path) == []
    assert git_out(file_remote, "log", "-1", "--format=%s", "master",
                   tmp=tmp_path).strip() == "person requeued 2 jobs (c, b)"
    nothing = requeue_jobs(person, ["d"])
    assert nothing.requeued == [] and nothing.refused == [("d", "already queued")]

    silent = worker_from_url(file_remote, tmp_path / "silent", "silent")
    assert silent.get_next_job(queue_jobs_func) == "c"  # and this one goes silent too
    person.snapshot()  # the person's copy sees its heartbeat from now on
    result = requeue_jobs(person, stale=True, wait=True)  # until it has been silent for a lease
    assert (result.requeued, result.failed, result.refused) == (["c"], [], [])
    assert ledger_file(file_remote, "jobs.txt", tmp_path) == ["c", "b", "d"]
    assert git_out(file_remote, "log", "-1", "--format=%s", "master",
                   tmp=tmp_path).strip() == "person requeued 1 stale job (c)"
    assert requeue_jobs(person, stale=True) == ([], [], [], {})  # nothing is running
    with pytest.raises(ValueError):
        requeue_jobs(person, ["c"], stale=True)
    for worker in (runner, silent, person):
        worker.close()
