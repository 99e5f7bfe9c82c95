"""Failed jobs keep no branch (issue 25, "branches stay bounded"): the failure's commit on master
has the failed branch's tip as a second parent, its push deletes the branch, and ``failed.txt``
records the tip, from which ``requeue --resume`` restores the checkpoint. ``prune`` does the same
for the branches older versions kept. Real git servers: ``file://``, ``git daemon``, smart HTTP,
and a smart-HTTP host that takes only branches and tags."""
from __future__ import annotations

import subprocess
from pathlib import Path

from support.gitservers import SmartHttpServer
from support.hosts import branches_only_bare
from support.remotes import git_out, ledger_file, person
from support.serving import (InLine, bare_git, hold_lock_as_dead_holder, patient, server, until,
                             wait_refs)

from distribute import add_jobs, init_remote, queue_jobs_func, requeue_jobs, worker_from_url
from distribute.ledger import Entry
from distribute.maintenance import prune
from distribute.protocol import job_path


def branches(url: str, tmp: Path) -> list[str]:
    """The remote's ``refs/heads/*`` but master and the coordination namespace."""
    out = git_out(url, "ls-remote", url, "refs/heads/*", tmp=tmp)
    names = [line.split("\t")[1] for line in out.splitlines()]
    return [n for n in names if n != "refs/heads/master" and not n.startswith(
        "refs/heads/_distribute/")]


def failed_record(url: str, job: str, tmp: Path) -> Entry:
    (line,) = [line for line in ledger_file(url, "failed.txt", tmp) if line.startswith(job + "\t")]
    return Entry.parse(line)


def in_master(url: str, commit: str, tmp: Path) -> bool:
    """Whether ``commit`` is in master's history on the remote (a fresh clone's view)."""
    clone = tmp / f"check-{commit[:8]}"
    if not clone.exists():
        subprocess.run(["git", "clone", "-q", "--bare", url, str(clone)], check=True,
                       capture_output=True)
    else:
        subprocess.run(["git", "-C", str(clone), "fetch", "-q", "origin", "master:master"],
                       check=True, capture_output=True)
    return subprocess.run(["git", "-C", str(clone), "merge-base", "--is-ancestor", commit,
                           "master"], capture_output=True).returncode == 0


def fail_three_times_then_finish(url: str, tmp: Path) -> None:
    """Job J fails on w0, w1, w2 in turn, each attempt resuming (``requeue --resume``) from the
    last one's checkpoint and adding a line; after each failure no branch is left and the failed
    record's tip is in master's history; w3 finally finishes with all three lines."""
    init_remote(url, ["J"])
    for i in range(4):
        worker = worker_from_url(url, tmp / f"w{i}", f"w{i}")
        try:
            assert worker.get_next_job(lambda: "J") == "J"
            notes = Path(worker.job_dir or "", "notes.txt")
            before = notes.read_text() if notes.exists() else ""
            assert before == "".join(f"try w{k}\n" for k in range(i))  # resumed from the last
            notes.write_text(before + f"try w{i}\n")
            worker.commit_update()
            if i == 3:
                worker.finish_job()
                break
            worker.fail_job(f"boom {i}")
            assert branches(url, tmp) == []  # the failed attempt keeps no branch
            record = failed_record(url, "J", tmp)
            assert record.reason == f"boom {i}" and len(record.tip) == 40
            assert in_master(url, record.tip, tmp)
            assert git_out(url, "show", f"{record.tip}:{job_path('J')}/notes.txt",
                           tmp=tmp) == before + f"try w{i}\n"
            requeue_jobs(worker, ["J"], resume=True)
            assert ledger_file(url, "resume.txt", tmp) == [
                f"J\t{'w%d/J' % i}{'@%d' % (i + 1) if i else ''}\t{record.tip}"]
        finally:
            worker.close()
    assert git_out(url, "show", f"master:{job_path('J')}/notes.txt", tmp=tmp) == \
        "try w0\ntry w1\ntry w2\ntry w3\n"
    assert branches(url, tmp) == [] and ledger_file(url, "failed.txt", tmp) == []
    first_parent = git_out(url, "log", "--first-parent", "--format=%s", "master",
                           tmp=tmp).splitlines()
    assert [s for s in first_parent if "failed job J" in s] == [
        "w2 failed job J: boom 2", "w1 failed job J: boom 1", "w0 failed job J: boom 0"]


def test_a_job_failing_on_three_workers_keeps_no_branch_and_resumes(any_remote: str,
                                                                   tmp_path: Path) -> None:
    fail_three_times_then_finish(any_remote, tmp_path)


def test_the_same_on_a_host_taking_only_branches_and_tags(tmp_path: Path) -> None:
    root = tmp_path / "hosts"
    root.mkdir()
    repo = branches_only_bare(root)
    with SmartHttpServer(root) as http:
        fail_three_times_then_finish(http.url(), tmp_path)
    refs = bare_git(repo, "for-each-ref", "--format=%(refname)").split()
    assert [r for r in refs if not r.startswith("refs/heads/_distribute/")] == [
        "refs/heads/master"]


def test_a_served_failure_keeps_the_waiters_tip_and_deletes_its_branch(
        ledger_remote: tuple[Path, str], tmp_path: Path) -> None:
    """A waiter fails its job with a request; the holder serves it: one commit whose second
    parent is the waiter's last commit, the waiter's branch deleted in the holder's push."""
    bare, url = ledger_remote
    waiter = patient(url, tmp_path, "waiter")
    add_jobs(waiter, ["J1"])
    assert waiter.get_next_job(lambda: "J1") == "J1"
    Path(waiter.job_dir or "", "state.txt").write_text("half way\n")
    waiter.commit_update()
    Path(waiter.job_dir or "", "state.txt").write_text("further\n")  # (committed by the fail)
    hold_lock_as_dead_holder(bare)
    in_line = InLine(lambda: waiter.fail_job("boom"))
    until(lambda: bool(wait_refs(bare)), "the waiter's request in line")
    holder = server(url, tmp_path)
    assert holder.get_next_job(lambda: None) is None  # (serves the waiter on the way)
    assert in_line.join() is None
    subject = bare_git(bare, "log", "-1", "--format=%s", "master")
    assert subject == "waiter failed job J1: boom (served by holder)"
    record = failed_record(url, "J1", tmp_path)
    assert bare_git(bare, "rev-parse", "master^2") == record.tip
    assert bare_git(bare, "show", f"{record.tip}:{job_path('J1')}/state.txt") == "further"
    assert branches(url, tmp_path) == []
    waiter.close()
    holder.close()


def legacy_failures(url: str, tmp: Path) -> dict[str, str]:
    """Jobs A and B failed as an older version left them: a branch holding the checkpoint (B's a
    renamed twin) and a failed record without a tip; C queued. Returns ``{job: branch tip}``."""
    init_remote(url, ["A", "B", "C"])
    work = tmp / "person"
    person(url, work, "status")
    tips = {}
    for job, branch in (("A", "old/A"), ("B", "old/B-1a2b3c")):
        person(url, work, "checkout", "-q", "-b", branch, "origin/master")
        (work / job_path(job)).mkdir(parents=True)
        (work / job_path(job) / "ckpt.txt").write_text(f"{job} checkpoint\n")
        person(url, work, "add", "-A")
        person(url, work, "commit", "-qm", f"old update on job {job}")
        person(url, work, "push", "-q", "origin", branch)
        tips[job] = person(url, work, "rev-parse", "HEAD").strip()
    person(url, work, "checkout", "-q", "--detach", "origin/master")
    (work / "jobs.txt").write_text("C\n")
    (work / "failed.txt").write_text("A\told\t2026-01-01T00:00:00Z\t1\tboom\n"
                                     "B\told\t2026-01-01T00:00:00Z\t1\tbang\n")
    person(url, work, "commit", "-qam", "as an older version failed them")
    person(url, work, "push", "-q", "origin", "HEAD:master")
    assert branches(url, tmp) == ["refs/heads/old/A", "refs/heads/old/B-1a2b3c"]
    return tips


def resumes(url: str, tmp: Path, job: str, name: str) -> str:
    """Claim ``job`` on a new worker ``name`` and return what its directory's ``ckpt.txt``
    holds (empty if absent); the job is finished."""
    runner = worker_from_url(url, tmp / name, name)
    try:
        assert runner.get_next_job(lambda: job) == job
        ckpt = Path(runner.job_dir or "", "ckpt.txt")
        text = ckpt.read_text() if ckpt.exists() else ""
        runner.finish_job()
        return text
    finally:
        runner.close()


def test_prune_keeps_the_failed_branches_older_versions_left(file_remote: str,
                                                             tmp_path: Path) -> None:
    """prune puts the legacy failed branches' tips into master's history, records them in
    ``failed.txt``, deletes the branches; ``requeue --resume`` then restores from the tip."""
    tips = legacy_failures(file_remote, tmp_path)
    worker = worker_from_url(file_remote, tmp_path / "pruner", "pruner")
    deleted = prune(worker)
    assert sorted(deleted["kept"]) == ["refs/heads/old/A", "refs/heads/old/B-1a2b3c"]
    assert sorted(deleted["branches"]) == sorted(deleted["kept"])
    assert branches(file_remote, tmp_path) == []
    for job in ("A", "B"):
        assert failed_record(file_remote, job, tmp_path).tip == tips[job]
        assert in_master(file_remote, tips[job], tmp_path)
    assert git_out(file_remote, "log", "-1", "--format=%s", "master", tmp=tmp_path).strip() == \
        "pruner kept 2 job branches in master's history"
    assert prune(worker)["kept"] == []  # (nothing left to keep)
    requeue_jobs(worker, ["B", "A"], resume=True)
    worker.close()
    assert resumes(file_remote, tmp_path, "B", "next") == "B checkpoint\n"
    assert resumes(file_remote, tmp_path, "A", "next") == "A checkpoint\n"


def test_a_failed_branch_an_older_version_kept_still_resumes(file_remote: str,
                                                              tmp_path: Path) -> None:
    """Without prune: the record names no tip, the branch (a renamed twin too) is read."""
    legacy_failures(file_remote, tmp_path)
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    requeue_jobs(worker, ["A", "B"], resume=True)
    worker.close()
    assert ledger_file(file_remote, "resume.txt", tmp_path) == ["A\told/A", "B\told/B"]
    assert resumes(file_remote, tmp_path, "A", "next") == "A checkpoint\n"
    assert resumes(file_remote, tmp_path, "B", "next") == "B checkpoint\n"
    assert branches(file_remote, tmp_path) == []  # (each resumed attempt took its branch in)


def test_a_served_claim_resumes_from_a_branch_of_its_own_name(
        ledger_remote: tuple[Path, str], tmp_path: Path) -> None:
    """A worker gives job J back, then is served a claim of J by a holder: its branch has the
    name of the one it resumes from; its first checkpoint moves that branch on (the old tip a
    parent) instead of deleting it, and the finish takes it in."""
    bare, url = ledger_remote
    waiter = patient(url, tmp_path, "waiter")
    add_jobs(waiter, ["J"])
    assert waiter.get_next_job(queue_jobs_func) == "J"
    Path(waiter.job_dir or "", "ckpt.txt").write_text("half way\n")
    waiter.commit_update()
    waiter.give_back_job()
    old = bare_git(bare, "rev-parse", "refs/heads/waiter/J")
    work = tmp_path / "person"
    person(url, work, "status")
    (work / "jobs.txt").write_text("X\nJ\n")  # (the holder's own claim takes X)
    person(url, work, "commit", "-qam", "X first")
    person(url, work, "push", "-q", "origin", "HEAD:master")
    hold_lock_as_dead_holder(bare)
    in_line = InLine(lambda: waiter.get_next_job(queue_jobs_func))
    until(lambda: bool(wait_refs(bare)), "the waiter's request in line")
    holder = server(url, tmp_path)
    assert holder.get_next_job(queue_jobs_func) == "X"
    assert in_line.join() == "J"
    assert waiter.working_branch == "waiter/J"
    assert Path(waiter.job_dir or "", "ckpt.txt").read_text() == "half way\n"
    new = bare_git(bare, "rev-parse", "refs/heads/waiter/J")
    assert new != old and bare_git(bare, "rev-parse", f"{new}^2") == old
    waiter.finish_job()
    holder.finish_job()
    assert branches(url, tmp_path) == []
    waiter.close()
    holder.close()
