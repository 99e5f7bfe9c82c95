"""A host that answers "ok" for pushes it never applied (issue 25: GitLab/Gitaly has reported
atomic pushes as successful although every ref update failed), over real smart HTTP.

:class:`~support.faultyhttp.FaultyHttpServer`'s ``misreported`` push is not applied, yet every ref
is answered ``ok``: git exits 0. A worker acts only on pushes it has seen land: after an "ok" from
a host not known to report truthfully (anything but a local path or ``file://``) it reads the
pushed refs back and pushes again what is not there (``DISTRIBUTE_VERIFY_PUSHES``).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest
from support.faultyhttp import FaultyHttpServer, PushFaultRates
from support.gitservers import make_bare
from support.invariants import check_remote
from support.remotes import git_out, ledger_file
from support.simulation import Config

from distribute import init_remote, queue_jobs_func, worker_from_url
from distribute.exceptions import SettingError
from distribute.protocol import LOCK_REF, job_path, marker_message
from distribute.repo import Clone, RefUpdate
from distribute.repo.verify import local_remote, seen_landed, verifies

HERE = Path(__file__).resolve().parent
NO_FAULTS = PushFaultRates(0, 0, 0)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FaultyHttpServer]:
    make_bare(tmp_path)
    with FaultyHttpServer(tmp_path, NO_FAULTS) as server:
        init_remote(server.url(), ["J1", "J2"])
        yield server


def remote_ref(url: str, ref: str, tmp: Path) -> str:
    return git_out(url, "ls-remote", url, ref, tmp=tmp).strip()


def test_a_misreported_lock_take_is_taken_again(host: FaultyHttpServer, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """The claim's lock push is answered ok and not applied: the fetch that follows the take
    does not show the lock (a take is not read back on its own: that fetch is its read), so the
    worker takes it again before it edits anything; it claims J1 once, leaves the lock free."""
    url = host.url()
    worker = worker_from_url(url, path=tmp_path / "w", name="w")
    host.next_pushes("misreported")
    with caplog.at_level(logging.WARNING, logger="distribute"):
        assert worker.get_next_job(queue_jobs_func) == "J1"
    assert host.injected["misreported"] == 1
    assert "answered ok for taking the lock, but the lock is not there" in caplog.text
    assert worker.clone.misreported_pushes == 0
    assert remote_ref(url, LOCK_REF, tmp_path) == ""
    assert [line.split("\t")[:2] for line in ledger_file(url, "running.txt", tmp_path)] == [
        ["J1", "w"]]
    worker.close()


@pytest.mark.parametrize("faulted", [1, 2], ids=["lock", "finish"])
def test_a_misreported_finish_is_pushed_again(host: FaultyHttpServer, tmp_path: Path,
                                              faulted: int) -> None:
    """The finish's lock push, or the finish itself (master, the job's branch and the lock's
    release in one push), is answered ok and not applied: the job is done once, on master, by
    the worker, and nothing is held."""
    url = host.url()
    worker = worker_from_url(url, path=tmp_path / "w", name="w")
    assert worker.get_next_job(queue_jobs_func) == "J1"
    Path(worker.job_dir or "", "result.txt").write_text("w J1\n")
    host.next_pushes(*[None] * (faulted - 1), "misreported")
    worker.finish_job()
    assert host.injected["misreported"] == 1
    assert worker.running_job is None and remote_ref(url, LOCK_REF, tmp_path) == ""
    assert [line.split("\t")[:2] for line in ledger_file(url, "done.txt", tmp_path)] == [
        ["J1", "w"]]
    assert git_out(url, "show", f"master:{job_path('J1')}/result.txt", tmp=tmp_path) == "w J1\n"
    worker.close()


def test_a_misreported_checkpoint_is_pushed_again(host: FaultyHttpServer,
                                                  tmp_path: Path) -> None:
    """A job's checkpoint (its branch) is answered ok and not applied: it is pushed again, and
    the branch holds the worker's commit."""
    url = host.url()
    worker = worker_from_url(url, path=tmp_path / "w", name="w")
    assert worker.get_next_job(queue_jobs_func) == "J1"
    Path(worker.job_dir or "", "result.txt").write_text("w J1\n")
    host.next_pushes("misreported")
    assert worker.commit_update()
    branch = f"refs/heads/{worker.working_branch}"
    assert remote_ref(url, branch, tmp_path).split("\t")[0] == worker.clone.resolve("HEAD")
    worker.finish_job()
    worker.close()


def test_a_misreported_join_is_joined_again(host: FaultyHttpServer, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """Another holds the lock; the worker's push joining the line with its request is answered
    ok and not applied (its take, refused by the lease, never reaches the host): its next look
    (the join's read) does not show its wait ref, which it takes for its request answered; it
    finds no answer on master, so it waits for the lock itself, and takes it once free."""
    url = host.url()
    other = Clone.clone(url, tmp_path / "other")
    held = other.make_marker(marker_message("lock", "other"))
    assert other.push([RefUpdate(LOCK_REF, held, expect="")])
    worker = worker_from_url(url, path=tmp_path / "w", name="w")
    host.next_pushes("misreported")  # the join
    claimed: list[Optional[str]] = []
    thread = threading.Thread(target=lambda: claimed.append(worker.get_next_job(queue_jobs_func)),
                              daemon=True)
    with caplog.at_level(logging.DEBUG, logger="distribute"):
        thread.start()
        deadline = time.monotonic() + 30
        while "refs/distribute/wait/w" not in remote_ref(url, "refs/distribute/wait/w", tmp_path):
            assert time.monotonic() < deadline, "the worker never joined again"
            time.sleep(0.1)
        assert other.push([RefUpdate(LOCK_REF, None, expect=held)])
        thread.join(60)
    assert host.injected["misreported"] == 1 and claimed == ["J1"]
    assert "answered nothing" in caplog.text  # (the join's look found no wait ref, no answer)
    assert remote_ref(url, "refs/distribute/[lw]*", tmp_path) == ""  # (no lock, no wait ref)
    worker.close()


def test_trusting_every_answer_is_a_setting(host: FaultyHttpServer, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``never`` takes the host's word: a misreported push counts as applied (what workers did
    before pushes were read back); ``auto`` reads it back over HTTP and pushes again."""
    url = host.url()
    clone = Clone.clone(url, tmp_path / "c")
    head = clone.resolve("origin/master") or ""
    monkeypatch.setenv("DISTRIBUTE_VERIFY_PUSHES", "never")
    host.next_pushes("misreported")
    assert clone.push([RefUpdate("refs/heads/a", head, expect="")])
    assert remote_ref(url, "refs/heads/a", tmp_path) == "" and clone.verified_pushes == 0
    monkeypatch.setenv("DISTRIBUTE_VERIFY_PUSHES", "auto")
    host.next_pushes("misreported", "misreported")
    assert clone.push([RefUpdate("refs/heads/b", head, expect="")])
    assert remote_ref(url, "refs/heads/b", tmp_path).split("\t")[0] == head
    assert (clone.verified_pushes, clone.misreported_pushes) == (3, 2)


def test_which_remotes_are_read_back(file_remote: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto``: every remote but a local one; a local push is not read back (git applied it
    itself), unless ``always``. A value not among the modes is refused, naming the setting."""
    assert local_remote(file_remote) and local_remote("/srv/jobs.git")
    assert local_remote("../jobs.git") and local_remote(r"C:\jobs.git")
    for url in ("https://gitlab.com/me/jobs.git", "git@gitlab.com:me/jobs.git",
                "ssh://git@host/jobs.git", "git://host/jobs.git", "http://127.0.0.1:8/r.git"):
        assert not local_remote(url) and verifies(url), url
    assert not verifies(file_remote)
    init_remote(file_remote, ["J1"])
    clone = Clone.clone(file_remote, tmp_path / "c")
    head = clone.resolve("origin/master") or ""
    assert clone.push([RefUpdate("refs/heads/a", head, expect="")])
    assert clone.verified_pushes == 0
    monkeypatch.setenv("DISTRIBUTE_VERIFY_PUSHES", "ALWAYS")
    assert verifies(file_remote) and clone.push([RefUpdate("refs/heads/b", head, expect="")])
    assert clone.verified_pushes == 1 and clone.misreported_pushes == 0
    monkeypatch.setenv("DISTRIBUTE_VERIFY_PUSHES", "sometimes")
    with pytest.raises(SettingError, match="DISTRIBUTE_VERIFY_PUSHES must be one of "
                                           "auto/always/never, not 'sometimes'"):
        verifies(file_remote)


def test_a_fleet_on_a_host_that_misreports(tmp_path: Path) -> None:
    """Three ``distribute worker`` processes, no special settings, drain 12 jobs while a fifth of
    all pushes are answered ok and never applied: each job done once, by the worker its record
    names, nothing left queued or running, every worker exits 0, ``git fsck`` clean."""
    bare = make_bare(tmp_path)
    jobs = [f"j{i:02d}" for i in range(12)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(HERE / "support"), os.environ.get("PYTHONPATH")])))
    with FaultyHttpServer(tmp_path, NO_FAULTS, seed=5) as server:
        init_remote(server.url(), jobs)
        server.rates = PushFaultRates(0, 0, 0, misreported=0.2)
        procs = [subprocess.Popen(
            [sys.executable, "-m", "distribute", "worker", server.url(), "--run",
             "jobfuncs:write_result", "--idle-exit", "--name", name, "--path",
             str(tmp_path / name)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True) for name in ("w0", "w1", "w2")]
        errors = [proc.communicate(timeout=600)[1] for proc in procs]
    assert server.injected["misreported"] > 0
    for proc, err in zip(procs, errors):
        assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert check_remote(bare, Config(5, workers=3, jobs=12, faults=False), jobs) == []


def test_a_misreport_is_logged_without_the_token(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The warning about a push not seen to land names the refs, never the credentials of the
    remote's URL."""
    make_bare(tmp_path)
    with FaultyHttpServer(tmp_path, NO_FAULTS, username="u", password="s3cr3t-t0ken") as server:
        url = server.url()
        init_remote(url, ["J1"])
        clone = Clone.clone(url, tmp_path / "c")
        host_head = clone.resolve("origin/master") or ""
        server.next_pushes("misreported")
        with caplog.at_level(logging.INFO, logger="distribute"):
            assert clone.push([RefUpdate("refs/heads/a", host_head, expect="")])
    assert "not there when read back" in caplog.text and "refs/heads/a" in caplog.text
    assert "s3cr3t-t0ken" not in caplog.text


def test_what_counts_as_seen_landed() -> None:
    """Every ref at its pushed value (a deleted one gone); or, atomic, one ref at a value only
    this push could have put there (created, or changed from the value it expected): the
    others may have moved on since. A deletion or an unconditional write proves nothing alone."""
    a, b, c = "a" * 40, "b" * 40, "c" * 40
    take = [RefUpdate("refs/x", a, expect=""), RefUpdate("refs/lock", None, expect=b)]
    assert seen_landed(take, [a, None], {"refs/x": a}, atomic=True)
    assert seen_landed(take, [a, None], {"refs/x": a, "refs/lock": c}, atomic=True)
    assert not seen_landed(take, [a, None], {"refs/x": a, "refs/lock": c}, atomic=False)
    assert not seen_landed(take, [a, None], {"refs/lock": b}, atomic=True)
    assert not seen_landed(take, [a, None], {"refs/x": c}, atomic=True)
    blind = [RefUpdate("refs/w", a, expect=None), RefUpdate("refs/lock", None, expect=b)]
    assert not seen_landed(blind, [a, None], {"refs/w": a, "refs/lock": c}, atomic=True)
    assert seen_landed(blind, [a, None], {"refs/w": a}, atomic=True)
