"""Suspected defects of serving the line (issue 23), each confirmed or refuted by a test.

1. a push refused both for a waiter that left the line and for a job branch name that is taken;
2. a worker restarted while its dead predecessor's request is still in line;
3. a serving hold longer than the leases, and one whose lock is broken;
4. two idle processes of one name waiting in line on the same wait ref;
5. what records name when a holder rejects an invalid job for a waiter.

One ``file://`` remote, real git; the restart uses a real process that is killed.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from support.processes import kill_tree, spawn_worker
from support.remotes import git_out, jobs_in, ledger_file, person_appends
from support.serving import (
    InLine,
    OneShot,
    bare_git,
    hold_lock_as_dead_holder,
    patient,
    releases,
    server,
    subjects,
    until,
    wait_refs,
)

from distribute import Worker, add_jobs, combinable, queue_jobs_func, worker_from_url
from distribute.exceptions import LockLostError
from distribute.protocol import LOCK_REF, wait_ref


def with_result(worker: Worker, job: Optional[str]) -> str:
    """Check that ``worker`` got ``job`` and write its result."""
    assert job is not None and worker.running_job == job
    Path(worker.job_dir or "", "result.txt").write_text(f"{job} by {worker.name}\n")
    return job


def done_by(url: str, tmp: Path) -> list[list[str]]:
    """``[job, worker]`` of every done record, sorted."""
    return sorted(line.split("\t")[:2] for line in ledger_file(url, "done.txt", tmp))


def lock_holder(bare: Path) -> str:
    """The worker named by the lock's marker (``""`` when the lock is free)."""
    value = bare_git(bare, "for-each-ref", "--format=%(objectname)", LOCK_REF)
    return bare_git(bare, "log", "-1", "--format=%s", value).split()[1] if value else ""


# ---- 1. a waiter that left, and a branch name that is taken, in one refusal ----------------------
def test_a_left_waiter_and_a_taken_branch_in_one_refusal(ledger_remote: tuple[Path, str],
                                                         tmp_path: Path, seam: Any) -> None:
    """The holder's push is refused for two refs at once: the wait ref of the waiter it served
    (the waiter left the line) and its own new job branch (the name is taken: a kept branch of
    an earlier run). No ``RefRejectedError``: the holder makes its edit again without the waiter,
    then renames its branch, and lands; the waiter, unserved, claims for itself."""
    bare, url = ledger_remote
    waiter = patient(url, tmp_path, "waiter")
    add_jobs(waiter, ["H1", "W1"])
    master = bare_git(bare, "rev-parse", "master")
    bare_git(bare, "update-ref", "refs/heads/holder/H1", master)  # kept from an earlier run
    hold_lock_as_dead_holder(bare)
    in_line = InLine(lambda: waiter.get_next_job(queue_jobs_func))
    until(lambda: bool(wait_refs(bare)), "the waiter's request in line")
    refusals: list[str] = []

    def waiter_leaves_first(run: Callable[[], Any]) -> Any:
        bare_git(bare, "update-ref", "-d", wait_ref("waiter"))  # the waiter left the line
        status, out, err = run()
        refusals.append(out)
        return status, out, err

    seam(OneShot("holder", releases("refs/heads/master", LOCK_REF), waiter_leaves_first))
    holder = server(url, tmp_path)
    assert holder.get_next_job(queue_jobs_func) == "H1"
    refused = [line for line in refusals[0].splitlines() if line.startswith("!")]
    assert any(wait_ref("waiter") in line for line in refused)  # both in the same refusal
    assert any("refs/heads/holder/H1" in line and "atomic" not in line for line in refused)
    assert (holder.working_branch or "").startswith("holder/H1-")
    assert in_line.join() == "W1"  # not served: it claimed W1 itself
    assert subjects(url, tmp_path)[-2:] == ["holder took job H1", "waiter took job W1"]
    for worker in (holder, waiter):
        with_result(worker, worker.running_job)
        worker.finish_job()
    assert done_by(url, tmp_path) == [["H1", "holder"], ["W1", "waiter"]]


# ---- 2. a restarted worker and its dead predecessor's request ----------------------------------
def test_a_restarted_worker_skips_and_outlives_its_predecessors_request(
        ledger_remote: tuple[Path, str], tmp_path: Path) -> None:
    """A worker process dies while waiting in line with a request; a new process of the same name
    on the same local copy becomes the lock holder. It does not serve that request (one of its
    own name): the request stays in line, untouched. When another holder serves it later (a job
    claimed for the dead process), the new process's next claim gives that job back at once
    ("restarted without it") and takes it itself: no job stays running under its name
    unknown to it."""
    bare, url = ledger_remote
    add_jobs(patient(url, tmp_path, "adder"), ["J1", "J2", "J3"])
    hold_lock_as_dead_holder(bare)
    dead = spawn_worker(url, tmp_path / "w", "w", "one-job", "--lock-lease", "600")
    try:
        until(lambda: wait_refs(bare) == [wait_ref("w")], "the doomed process's request in line")
    finally:
        kill_tree(dead.pid)
        dead.communicate()
    request = bare_git(bare, "rev-parse", wait_ref("w"))
    assert "Distribute-Request: " in bare_git(bare, "log", "-1", "--format=%B", request)
    bare_git(bare, "update-ref", "-d", LOCK_REF)  # the dead holder's lock goes
    restarted = patient(url, tmp_path, "w")  # the same local copy: its predecessor ended
    assert with_result(restarted, restarted.get_next_job(queue_jobs_func)) == "J1"
    assert bare_git(bare, "rev-parse", wait_ref("w")) == request  # not served, still in line
    assert "Distribute-Answer" not in git_out(url, "log", "--format=%B", "master", tmp=tmp_path)
    assert jobs_in(url, "running.txt", tmp_path) == ["J1"]

    other = server(url, tmp_path, "other")
    assert other.get_next_job(queue_jobs_func) == "J2"  # and it serves the dead request: J3
    assert "w took job J3 (served by other)" in subjects(url, tmp_path)
    assert restarted.finish_job(queue_jobs_func) == "J3"
    assert "w requeued job J3 (w restarted without it)" in subjects(url, tmp_path)
    with_result(restarted, "J3")
    restarted.finish_job()
    with_result(other, "J2")
    other.finish_job()
    assert done_by(url, tmp_path) == [["J1", "w"], ["J2", "other"], ["J3", "w"]]
    assert jobs_in(url, "running.txt", tmp_path) == []


# ---- 3. long serving holds ----------------------------------------------------------------------
_calls = itertools.count()
#: What the second call of :func:`second_call_waits` waits for (set by each test).
_gate: list[Callable[[], bool]] = [lambda: True]


@combinable
def second_call_waits(worker: Any) -> Optional[str]:
    """The queue's next job; the second call (the one a holder makes for the waiter it serves,
    after its own) returns only once ``_gate[0]()`` holds."""
    if next(_calls) == 1:
        until(_gate[0], "the gate of the slow next-job call", timeout_s=90)
    return queue_jobs_func(worker)


def plain_queue(worker: Any) -> Optional[str]:
    """The queue's next job, from a function no holder runs for others (its caller waits in line
    without a request and claims under the lock itself, requeueing silent workers' jobs)."""
    return queue_jobs_func(worker)


def long_hold_setup(url: str, tmp: Path, bare: Path, holder: Worker, seam: Any,
                    ) -> tuple[Worker, Worker, InLine, InLine, InLine]:
    """Holder runs H1, a waiter W1, both with results; the holder starts finishing (claiming with
    :func:`second_call_waits`) and, holding the lock, syncs only once the waiter has asked to
    finish and claim and an idle worker ``x`` (lock lease 1 s, job lease 3 s) waits in line to
    claim for itself. Returns the waiter, x, and the three calls under way: the holder's, the
    waiter's and x's."""
    global _calls
    _calls = itertools.count()
    waiter = worker_from_url(url, path=tmp / "waiter", name="waiter", lock_lease_s=600.0,
                             job_lease_s=3.0)  # (it beats every 0.6 s: x sees it alive)
    add_jobs(waiter, ["H1", "W1", "H2", "W2", "X1"])
    with_result(holder, holder.get_next_job(queue_jobs_func))
    with_result(waiter, waiter.get_next_job(queue_jobs_func))
    x = worker_from_url(url, path=tmp / "x", name="x", lock_lease_s=1.0, job_lease_s=3.0,
                        poll_max_s=0.2)

    def sync_once_both_wait(run: Callable[[], Any]) -> Any:
        until(lambda: len(wait_refs(bare)) == 2, "the waiter and x in line")
        return run()

    seam(OneShot("holder", lambda args: "fetch" in args and lock_holder(bare) == "holder",
                 sync_once_both_wait))
    hold = InLine(lambda: holder.finish_job(second_call_waits))
    until(lambda: lock_holder(bare) == "holder", "the holder's hold")
    waiter_in_line = InLine(lambda: waiter.finish_job(second_call_waits))
    until(lambda: wait_refs(bare) == [wait_ref("waiter")], "the waiter in line")
    return waiter, x, hold, waiter_in_line, InLine(lambda: x.get_next_job(plain_queue))


def renewals_seen(bare: Path, count: int) -> Callable[[], bool]:
    """A condition: the test has seen the lock take ``count`` values (the holder renews it every
    third of its lease)."""
    seen: set[str] = set()

    def enough() -> bool:
        seen.add(bare_git(bare, "for-each-ref", "--format=%(objectname)", LOCK_REF))
        return len(seen - {""}) >= count

    return enough


def test_a_serving_hold_longer_than_both_leases(ledger_remote: tuple[Path, str], tmp_path: Path,
                                                seam: Any) -> None:
    """The holder's hold (finish, claim, serve a waiter with a slow next-job call) lasts twelve
    renewals of the lock (4 s): past the lock lease (1 s) and the job lease (3 s) of an idle
    worker waiting in line to claim for itself. The lock is renewed all along, so that worker
    neither breaks it nor requeues anybody's job: every job is claimed once and done once."""
    bare, url = ledger_remote
    holder = worker_from_url(url, path=tmp_path / "holder", name="holder", lock_lease_s=1.0,
                             job_lease_s=3.0)
    _gate[0] = renewals_seen(bare, 12)
    waiter, x, hold, waiter_in_line, x_in_line = long_hold_setup(url, tmp_path, bare, holder,
                                                                 seam)
    assert hold.join() == "H2"
    assert waiter_in_line.join() == "W2"
    assert x_in_line.join() == "X1"
    story = subjects(url, tmp_path)
    assert story[-5:] == ["holder finished job H1", "holder took job H2",
                          "waiter finished job W1 (served by holder)",
                          "waiter took job W2 (served by holder)", "x took job X1"]
    assert not [s for s in story if "requeued" in s]
    for worker in (holder, waiter, x):
        with_result(worker, worker.running_job)
        worker.finish_job()
    assert [job for job, _ in done_by(url, tmp_path)] == ["H1", "H2", "W1", "W2", "X1"]


def test_a_broken_serving_hold_does_not_give_the_holders_job_away(ledger_remote: tuple[Path, str],
                                                                  tmp_path: Path,
                                                                  seam: Any) -> None:
    """The next-job call the holder makes for a waiter outlasts its time limit (3 s): renewal
    stops, and the idle worker in line (lock lease 1 s, job lease 3 s) breaks the lock and
    claims. It must not requeue the holder's job as silent (the holder never stopped working on
    it, and beats for it while it holds the lock) and run it a second time: it takes the next
    queued job. The holder's push is fenced (``LockLostError``); it finishes its job afterwards,
    the waiter does its own finish. Every job runs once."""
    bare, url = ledger_remote
    holder = worker_from_url(url, path=tmp_path / "holder", name="holder", lock_lease_s=1.0,
                             job_lease_s=3.0, heartbeat_s=0.2, next_job_timeout_s=3.0)
    _gate[0] = lambda: lock_holder(bare) != "holder"  # once the lock was broken
    waiter, x, hold, waiter_in_line, x_in_line = long_hold_setup(url, tmp_path, bare, holder,
                                                                 seam)
    with pytest.raises(LockLostError):
        hold.join()
    assert x_in_line.join() == "H2"  # the next queued job, not the holder's H1
    assert holder.running_job == "H1"
    assert waiter_in_line.join() == "W2"  # unserved: the waiter finished and claimed itself
    assert not [s for s in subjects(url, tmp_path) if "requeued" in s]
    for worker in (holder, waiter, x):
        with_result(worker, worker.running_job)
        worker.finish_job()
    assert done_by(url, tmp_path) == [["H1", "holder"], ["H2", "x"], ["W1", "waiter"],
                                      ["W2", "waiter"]]


# ---- 4. two idle processes of one name in line ---------------------------------------------------
def test_two_idle_processes_of_one_name_both_get_an_answer(ledger_remote: tuple[Path, str],
                                                          tmp_path: Path) -> None:
    """Two idle processes named ``twin`` (two local copies) wait in line for a lock nobody
    renews, both on ``refs/distribute/wait/twin``: each push of one replaces the other's wait
    ref (a request, then a plain wait). Once the lock is free, both get their answer after a
    bounded number of polls: one takes the only job, the other's own next-job function says
    "no job". No livelock."""
    bare, url = ledger_remote
    add_jobs(patient(url, tmp_path, "adder"), ["J1"])
    hold_lock_as_dead_holder(bare)
    twins = [worker_from_url(url, path=tmp_path / f"copy-{i}", name="twin",
                             lock_lease_s=600.0, poll_max_s=0.2) for i in range(2)]
    calls = [InLine(lambda w=w: w.get_next_job(queue_jobs_func)) for w in twins]
    until(lambda: all(w._lock.waits >= 5 for w in twins), "both twins polling in line")
    polls = [w._lock.waits for w in twins]
    bare_git(bare, "update-ref", "-d", LOCK_REF)  # the lock is free
    results = sorted([call.join() for call in calls], key=str)
    assert results == ["J1", None]
    assert all(w._lock.waits - before <= 100 for w, before in zip(twins, polls))
    assert subjects(url, tmp_path)[-1] == "twin took job J1"
    assert wait_refs(bare) == []
    for worker in twins:
        if worker.running_job:
            with_result(worker, worker.running_job)
            worker.finish_job()
    assert done_by(url, tmp_path) == [["J1", "twin"]]


# ---- 5. records of a holder's rejections for a waiter --------------------------------------------
def test_an_invalid_job_rejected_for_a_waiter_names_the_waiter(ledger_remote: tuple[Path, str],
                                                               tmp_path: Path) -> None:
    """A person put a job with a tab into the queue; the holder's next-job function meets it
    while claiming for a waiter. The rejection is the waiter's: its commit and the failed record
    name the waiter, the subject ends "(served by holder)"; the holder's own records stay
    its own."""
    bare, url = ledger_remote
    waiter = patient(url, tmp_path, "waiter")
    add_jobs(waiter, ["H1"])
    person_appends(url, tmp_path / "person", ["bad\tjob", "W1"])
    hold_lock_as_dead_holder(bare)
    in_line = InLine(lambda: waiter.get_next_job(queue_jobs_func))
    until(lambda: bool(wait_refs(bare)), "the waiter's request in line")
    holder = server(url, tmp_path)
    assert holder.get_next_job(queue_jobs_func) == "H1"
    assert in_line.join() == "W1"
    assert subjects(url, tmp_path)[-3:] == [
        "holder took job H1", "waiter rejected invalid job 'bad\\tjob' (served by holder)",
        "waiter took job W1 (served by holder)"]
    rejected = git_out(url, "log", "-1", "--format=%B", "master~1", tmp=tmp_path)
    assert "Distribute-Worker: waiter" in rejected and "Distribute-Event: rejected" in rejected
    assert [line.split("\t")[:2] for line in ledger_file(url, "failed.txt", tmp_path)] == [
        ["'bad\\tjob'", "waiter"]]
