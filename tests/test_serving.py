"""Serving the line, decided by answers: a waiter trusts only what master records for its request.

Each test puts a worker in line behind a lock nobody renews (a dead holder's), lets another worker
with a short lease take over and serve, or removes the wait ref as a clean-up would, and checks
what the waiter concludes. One process, a ``file://`` remote, real git.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from support.jobfuncs import always_a_job, retry_failed_once
from support.remotes import git_out, ledger_file
from support.serving import (
    InLine,
    OneShot,
    bare_git,
    hold_lock_as_dead_holder,
    patient,
    pushes,
    releases,
    server,
    subjects,
    until,
    wait_refs,
)

from distribute import Worker, add_jobs, queue_jobs_func
from distribute.protocol import LOCK_REF


def test_a_served_fail_then_a_served_claim_of_the_same_job(ledger_remote: tuple[Path, str],
                                                           tmp_path: Path) -> None:
    """The holder fails the waiter's job and, since the function retries failed jobs, claims
    the same job for it again: the waiter runs it again (it must not fail the new claim)."""
    bare, url = ledger_remote
    waiter = patient(url, tmp_path, "waiter")
    add_jobs(waiter, ["J1"])
    assert waiter.get_next_job(retry_failed_once) == "J1"
    hold_lock_as_dead_holder(bare)
    in_line = InLine(lambda: waiter.fail_job("boom", retry_failed_once))
    until(lambda: bool(wait_refs(bare)), "the waiter's request in line")
    holder = server(url, tmp_path)
    assert holder.get_next_job(retry_failed_once) is None  # nothing for itself; serves the waiter
    assert in_line.join() == "J1"  # claimed for it again, by the holder
    Path(waiter.job_dir or "", "result.txt").write_text("second go\n")
    waiter.finish_job()
    log = subjects(url, tmp_path)
    assert log[-3:] == ["waiter failed job J1: boom (served by holder)",
                        "waiter took job J1 (served by holder)", "waiter finished job J1"]
    assert [line.split("\t")[:2] for line in ledger_file(url, "done.txt", tmp_path)] == [
        ["J1", "waiter"]]
    assert ledger_file(url, "failed.txt", tmp_path) == []
    assert ledger_file(url, "running.txt", tmp_path) == []


def test_a_wait_ref_removed_unserved_means_ask_the_function(ledger_remote: tuple[Path, str],
                                                           tmp_path: Path) -> None:
    """A clean-up removes the waiter's request unserved while the queue is empty: the waiter
    runs its next-job function itself, which has a job (``None`` only when it says so)."""
    bare, url = ledger_remote
    waiter = patient(url, tmp_path, "waiter")
    hold_lock_as_dead_holder(bare)
    in_line = InLine(lambda: waiter.get_next_job(always_a_job))
    until(lambda: bool(wait_refs(bare)), "the waiter's request in line")
    for ref in wait_refs(bare):  # as a holder's clean-up of a waiter it took for dead does
        bare_git(bare, "update-ref", "-d", ref)
    bare_git(bare, "update-ref", "-d", LOCK_REF)  # the lock is free again
    job = in_line.join()
    assert job is not None and job.startswith("fresh-")
    assert subjects(url, tmp_path)[-1] == f"waiter took job {job}"
    waiter.finish_job()


def test_a_served_close_without_a_job_for_the_waiter(ledger_remote: tuple[Path, str],
                                                     tmp_path: Path) -> None:
    """The holder finishes the waiter's job but finds no next job for it with the waiter's own
    (combinable) function: the close commit answers ``none`` as well, the waiter takes that for
    its function's word (no hold of its own) and the holder's push deleted its heartbeat."""
    bare, url = ledger_remote
    waiter = patient(url, tmp_path, "waiter")
    add_jobs(waiter, ["J1"])
    assert waiter.get_next_job(retry_failed_once) == "J1"
    Path(waiter.job_dir or "", "result.txt").write_text("done\n")
    hold_lock_as_dead_holder(bare)
    in_line = InLine(lambda: waiter.finish_job(retry_failed_once))
    until(lambda: bool(wait_refs(bare)), "the waiter's request in line")
    holder = server(url, tmp_path)
    assert holder.get_next_job(retry_failed_once) is None
    assert in_line.join() is None
    assert waiter.running_job is None
    assert subjects(url, tmp_path)[-1] == "waiter finished job J1 (served by holder)"
    assert [line.split("\t")[:2] for line in ledger_file(url, "done.txt", tmp_path)] == [
        ["J1", "waiter"]]
    served = git_out(url, "log", "-1", "--format=%B", "master", tmp=tmp_path)
    answers = [line.split()[1:] for line in served.splitlines()
               if line.startswith("Distribute-Answer: ")]
    assert [part for _, part in answers] == ["close", "none"] and answers[0][0] == answers[1][0]
    assert "refs/distribute/hb/" not in git_out(url, "ls-remote", url, tmp=tmp_path)


# ---- faults at a chosen call, through the fault seam (distribute/repo/faults.py) ---------------
HUNG_UP = "fatal: the remote end hung up unexpectedly\n"


class Interrupted(Exception):
    """The waiter's wait cut short (as Ctrl-C would) while its request was in line."""


def waiting_with_j1(bare: Path, url: str, tmp: Path) -> Worker:
    """A worker running J1 (of J1, J2, J3) with its result written, about to close it behind a
    dead holder's lock (so it waits in line with its request)."""
    waiter = patient(url, tmp, "waiter")
    add_jobs(waiter, ["J1", "J2", "J3"])
    assert waiter.get_next_job(queue_jobs_func) == "J1"
    Path(waiter.job_dir or "", "result.txt").write_text("done\n")
    hold_lock_as_dead_holder(bare)
    return waiter


def test_a_request_served_while_its_worker_was_not_looking(ledger_remote: tuple[Path, str],
                                                           tmp_path: Path, seam: Any) -> None:
    """The waiter's wait is cut short with its request still in line; a holder serves it later.
    The waiter's retried finish takes that answer: its job is done in its own name and the job
    claimed for it is its next one (not "done by another worker", no stray running job)."""
    bare, url = ledger_remote
    waiter = waiting_with_j1(bare, url, tmp_path)

    def cut_short(run: Callable[[], Any]) -> Any:
        raise Interrupted("waiting cut short")

    seam(OneShot("waiter", lambda args: "ls-remote" in args and bool(wait_refs(bare)),
                 cut_short))
    seam(OneShot("waiter", lambda args: "push" in args and ":refs/distribute/wait/waiter" in args,
                 cut_short))  # (and its leaving the line)
    with pytest.raises(Interrupted):
        waiter.finish_job(queue_jobs_func)
    assert wait_refs(bare) == ["refs/distribute/wait/waiter"]  # (leaving the line failed too)
    holder = server(url, tmp_path)
    assert holder.get_next_job(queue_jobs_func) == "J2"  # then it serves the waiter: J1, J3
    assert wait_refs(bare) == []
    assert waiter.finish_job(queue_jobs_func) == "J3"
    waiter.finish_job()
    holder.finish_job()
    assert sorted(line.split("\t")[:2] for line in ledger_file(url, "done.txt", tmp_path)) == [
        ["J1", "waiter"], ["J2", "holder"], ["J3", "waiter"]]
    assert ledger_file(url, "running.txt", tmp_path) == []


def test_a_wait_ref_put_back_by_a_retried_join_after_it_was_served(
        ledger_remote: tuple[Path, str], tmp_path: Path, seam: Any) -> None:
    """The waiter's join push lands and its answer is lost; before the retry a holder serves the
    request (finishes J1, claims J3 for it) and deletes the wait ref, which the retried join then
    puts back. Taking the lock later, the waiter finds its request answered on master: it takes
    J3; J1 is done once, in its name, not "done by another worker". (Found by the simulation:
    the waiter failed its served claim again with the old reason.)"""
    bare, url = ledger_remote
    waiter = waiting_with_j1(bare, url, tmp_path)
    holder = server(url, tmp_path)

    def served_meanwhile(run: Callable[[], Any]) -> Any:
        run()  # the join lands
        assert holder.get_next_job(queue_jobs_func) == "J2"  # and serves the waiter
        assert wait_refs(bare) == []
        return 128, "", HUNG_UP

    shot = seam(OneShot("waiter", pushes("refs/distribute/wait/waiter"), served_meanwhile))
    assert waiter.finish_job(queue_jobs_func) == "J3"
    assert shot.fired
    waiter.finish_job()
    holder.finish_job()
    assert sorted(line.split("\t")[:2] for line in ledger_file(url, "done.txt", tmp_path)) == [
        ["J1", "waiter"], ["J2", "holder"], ["J3", "waiter"]]
    assert ledger_file(url, "running.txt", tmp_path) == []
    assert subjects(url, tmp_path).count("waiter finished job J1 (served by holder)") == 1


def running_j1(url: str, tmp: Path, name: str) -> Worker:
    """A worker running job J1 (the only job), with a result written."""
    worker = patient(url, tmp, name)
    add_jobs(worker, ["J1"])
    assert worker.get_next_job(queue_jobs_func) == "J1"
    Path(worker.job_dir or "", "result.txt").write_text("done\n")
    return worker


def test_a_holder_push_applied_but_its_answer_lost(ledger_remote: tuple[Path, str], tmp_path: Path,
                                                   seam: Any) -> None:
    """The finish lands, the answer is lost, and before the retry another worker has taken the
    lock: the push is judged by master's history (it landed), not by the lock's value."""
    bare, url = ledger_remote
    worker = running_j1(url, tmp_path, "worker")

    def apply_then_drop(run: Callable[[], Any]) -> Any:
        run()
        hold_lock_as_dead_holder(bare)  # the first waiter took the lock at once
        return 128, "", HUNG_UP

    shot = seam(OneShot("worker", releases("refs/heads/master", LOCK_REF), apply_then_drop))
    assert worker.finish_job() is None
    assert shot.fired and worker.running_job is None
    assert [line.split("\t")[:2] for line in ledger_file(url, "done.txt", tmp_path)] == [
        ["J1", "worker"]]
    assert subjects(url, tmp_path).count("worker finished job J1") == 1


def test_a_busy_ref_is_no_lost_compare_and_swap(ledger_remote: tuple[Path, str], tmp_path: Path,
                                                seam: Any) -> None:
    """A host answers ``(failed)`` for every ref of a checkpoint push (another push held a ref
    lock): nothing changed, the push is tried again, and the job's checkpoint lands."""
    _, url = ledger_remote
    worker = running_j1(url, tmp_path, "worker")

    def busy(run: Callable[[], Any]) -> Any:
        return 1, "To origin\n!\tabc:refs/heads/worker/J1\t[remote rejected] (failed)\nDone\n", \
            "error: failed to push some refs\n"

    shot = seam(OneShot("worker", pushes(), busy))
    assert worker.commit_update()
    assert shot.fired
    worker.finish_job()
    assert [line.split("\t")[:2] for line in ledger_file(url, "done.txt", tmp_path)] == [
        ["J1", "worker"]]
