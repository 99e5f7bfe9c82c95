"""Files over the size limit with the Hugging Face mirror configured (issue 25, "Big files"): the
file goes to the Hub, a pointer ``<name>.hub.json`` to git, and reads get the file back.

The git hosts are real bare repositories (the GH001 host of :mod:`support.hosts`, over smart HTTP
or ``file://``); the Hub is the loopback fake of :mod:`support.hubserver`, which the real
``huggingface_hub`` client talks to (LFS uploads included). Without a mirror, a file over the limit
fails its job: ``tests/test_host_rules.py``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from huggingface_hub import constants
from support.gitservers import SmartHttpServer
from support.hosts import size_limited_bare
from support.hubdata import EAGER, REPO, TOKEN
from support.hubserver import FakeHub
from support.invariants import master_file
from support.processes import cli_env
from support.remotes import jobs_in, ledger_file

from distribute import DistributeError, hub, init_remote, queue_jobs_func, worker_from_url
from distribute.bigfiles import LargeFile, read_pointer, resolve_pointers
from distribute.hub import hub_path_for
from distribute.hub.largefiles import large_file_path
from distribute.protocol import job_path
from distribute.protocol.pointer import Pointer
from distribute.worker import Worker

pytestmark = pytest.mark.usefixtures("this_checkout")
MB = 1 << 20
BIG = b"\1" * (2 * MB)  # what ``cli_jobs:sized`` writes for a job ``big-2mb``
BIG_SHA = hashlib.sha256(BIG).hexdigest()
HUB_ENV = {"HF_REPO_ID": REPO, "HF_TOKEN": TOKEN, "DISTRIBUTE_HF_RETRIES": "1",
           "DISTRIBUTE_HF_BACKOFF_S": "0.01", "DISTRIBUTE_HF_TIMEOUT_S": "10",
           "DISTRIBUTE_HF_MAX_WAIT_S": "30", "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", **EAGER}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """The fake Hub, storing files over 64 KB with LFS, with the library pointed at it."""
    with FakeHub(TOKEN, lfs_threshold=64 * 1024) as server:
        for key, value in {**HUB_ENV, "HF_ENDPOINT": server.url}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("HF_REPO_TYPE", raising=False)
        # (the client read HF_HUB_DISABLE_XET at its import; the fake speaks LFS, not Xet)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        yield server


def _run_workers(tmp_path: Path, url: str, count: int, env: dict[str, str]
                 ) -> list[subprocess.CompletedProcess]:
    """Run ``count`` real ``distribute worker`` processes with the Hub mirror until the queue is
    empty; return them ended."""
    procs = [subprocess.Popen(
        [sys.executable, "-m", "distribute", "worker", url, "--run", "cli_jobs:sized",
         "--name", f"w{i}", "--exit-when-queue-empty", "--mirror", "hf"], cwd=tmp_path,
        env=cli_env(tmp_path, env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(count)]
    ended = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        ended.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return ended


def _assert_on_the_hub_with_a_pointer(fake: FakeHub, bare: Path, job: str) -> Pointer:
    """The job's 2 MB file is on the Hub (LFS) and only its pointer is in master."""
    where = large_file_path(job, "big.bin")
    assert fake.files(REPO)[where] == BIG
    assert fake.repo(REPO).head[where].lfs
    path = job_path(job)
    assert master_file(bare, f"{path}/big.bin") is None
    pointer = Pointer.parse(master_file(bare, f"{path}/big.bin.hub.json") or "")
    assert pointer is not None and (pointer.path, pointer.size, pointer.sha256) == (
        where, len(BIG), BIG_SHA)
    assert (pointer.repo_id, pointer.repo_type, pointer.name) == (REPO, "dataset", "big.bin")
    commit = next(c for c in fake.commits(REPO) if c.oid == pointer.revision)
    assert commit.files[where].data == BIG  # the revision holds the file
    assert (master_file(bare, f"{path}/result.txt") or "").startswith(f"{job} by w")
    return pointer


def _no_token_anywhere(bare: Path, ended: list[subprocess.CompletedProcess]) -> None:
    objects = subprocess.run(["git", "--git-dir", str(bare), "cat-file", "--batch-all-objects",
                              "--batch"], capture_output=True, check=True).stdout
    assert TOKEN.encode() not in objects
    assert not any(TOKEN in p.stdout + p.stderr for p in ended)


def test_a_file_over_the_limit_lands_on_the_hub_with_a_pointer_in_git(
        tmp_path: Path, http: SmartHttpServer, fake: FakeHub) -> None:
    """The held-out check of issue 25 with the mirror: a 1 MB GH001 host and
    ``DISTRIBUTE_MAX_FILE_MB=1``; the job writing 2 MB is done, its file on the Hub and a pointer
    in git; the other jobs are done; both workers exit 0; no token in git or the output. A later
    reader's ``include_paths`` gets the bytes back (ignored by git in its copy)."""
    bare = size_limited_bare(http.root, MB)
    jobs = ["a", "big-2mb", "b", "c"]
    init_remote(http.url(), jobs)
    ended = _run_workers(tmp_path, http.url(), 2, {"DISTRIBUTE_MAX_FILE_MB": "1"})
    assert [p.returncode for p in ended] == [0, 0], [p.stderr[-3000:] for p in ended]
    assert sorted(jobs_in(http.url(), "done.txt", tmp_path)) == sorted(jobs)
    assert ledger_file(http.url(), "failed.txt", tmp_path) == []
    _assert_on_the_hub_with_a_pointer(fake, bare, "big-2mb")
    mirrored = fake.files(REPO)  # (the mirror uploads the job's folder: its pointer, not the file)
    assert f"{hub_path_for('big-2mb')}/big.bin.hub.json" in mirrored
    assert f"{hub_path_for('big-2mb')}/big.bin" not in mirrored
    assert "refused a file" not in "".join(p.stderr for p in ended)  # set aside before any push
    _no_token_anywhere(bare, ended)

    reader = worker_from_url(http.url(), tmp_path / "reader", "reader")
    try:
        hub.keep_large_files(reader)
        reader.include_paths(job_path("big-2mb"))
        assert (Path(reader.path, job_path("big-2mb"), "big.bin")).read_bytes() == BIG
        status = subprocess.run(["git", "-C", reader.path, "status", "--porcelain"],
                                capture_output=True, text=True, check=True).stdout
        assert status == ""  # the fetched file is ignored: never committed by a later job
    finally:
        reader.close()


@pytest.mark.parametrize("job, batch", [("big-2mb", "4"), ("big-2mb", "1"), ("ckpt-big-2mb", "4")])
def test_the_hosts_own_refusal_takes_the_hub_route(
        tmp_path: Path, http: SmartHttpServer, fake: FakeHub, job: str, batch: str) -> None:
    """No limit set: the host's GH001 refusal (of the finish: of a batch's last job, which closes
    the big one finished before it, or of the big one alone; or of a checkpoint) is recognised,
    the worker takes the host's limit and sends the file to the Hub; the job is done with a
    pointer in git, the other job too, the worker exits 0."""
    bare = size_limited_bare(http.root, MB)
    init_remote(http.url(), [job, "a"])
    (ended,) = _run_workers(tmp_path, http.url(), 1, {"DISTRIBUTE_MAX_FILE_MB": "0",
                                                      "DISTRIBUTE_MAX_BATCH": batch})
    assert ended.returncode == 0, ended.stderr[-3000:]
    assert sorted(jobs_in(http.url(), "done.txt", tmp_path)) == sorted([job, "a"])
    assert ledger_file(http.url(), "failed.txt", tmp_path) == []
    assert "bigger files go to the store" in ended.stderr  # the refusal was met, and handled
    _assert_on_the_hub_with_a_pointer(fake, bare, job)
    _no_token_anywhere(bare, [ended])


def test_a_hub_that_cannot_take_the_file_fails_that_job_only(
        tmp_path: Path, http: SmartHttpServer, fake: FakeHub) -> None:
    """The Hub answers 500 to everything: the job with the 2 MB file fails at once, its reason
    naming the file, its size, the limit and the Hub's trouble (not the token); the other job is
    done (its mirroring waits); the worker exits 0."""
    bare = size_limited_bare(http.root, MB)
    init_remote(http.url(), ["big-2mb", "a"])
    fake.fail("500")
    (ended,) = _run_workers(tmp_path, http.url(), 1, {"DISTRIBUTE_MAX_FILE_MB": "1"})
    assert ended.returncode == 0, ended.stderr[-3000:]
    assert jobs_in(http.url(), "done.txt", tmp_path) == ["a"]
    (failed,) = ledger_file(http.url(), "failed.txt", tmp_path)
    assert failed.startswith("big-2mb\t"), failed
    assert "big.bin is 2.00 MB, over the limit of 1.00 MB" in failed
    assert "could not be stored elsewhere" in failed and "HTTP 500" in failed, failed
    assert master_file(bare, f"{job_path('big-2mb')}/big.bin.hub.json") is None
    _no_token_anywhere(bare, [ended])
    assert TOKEN not in failed


def _worker(url: str, tmp_path: Path, name: str, store: bool = True) -> Worker:
    w = worker_from_url(url, tmp_path / name, name, poll_max_s=0.1)
    if store:
        hub.keep_large_files(w)
    return w


def test_a_resumed_job_gets_its_big_file_back_and_nothing_is_uploaded_twice(
        tmp_path: Path, file_remote: str, fake: FakeHub, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint with a 2 MB file (limit 1 MB) puts it on the Hub in one commit, its pointer on
    the branch; the job is given back; the next attempt starts with the file itself (sha256
    checked) and finishes without another Hub commit. A reader without the mirror keeps the
    pointer only; a job's own ``*.hub.json`` that is not a pointer is left alone."""
    monkeypatch.setenv("DISTRIBUTE_MAX_FILE_MB", "1")
    caplog.set_level(logging.INFO)
    init_remote(file_remote, ["ckpt"])
    w1 = _worker(file_remote, tmp_path, "w1")
    try:
        assert w1.get_next_job(queue_jobs_func) == "ckpt"
        Path(w1.job_dir or "", "sub").mkdir()
        Path(w1.job_dir or "", "sub", "big.bin").write_bytes(BIG)
        Path(w1.job_dir or "", "notes.hub.json").write_text('{"mine": 1}\n')
        assert w1.commit_update("checkpoint")
        assert len(fake.commits(REPO)) == 1
        assert fake.files(REPO)[large_file_path("ckpt", "sub/big.bin")] == BIG
        assert Path(w1.job_dir or "", "sub", "big.bin").read_bytes() == BIG  # the job keeps it
        assert not w1.commit_update("again")  # nothing changed: no upload, no commit
        w1.give_back_job()
    finally:
        w1.close()

    w2 = _worker(file_remote, tmp_path, "w2")
    try:
        assert w2.get_next_job(queue_jobs_func) == "ckpt"
        assert Path(w2.job_dir or "", "sub", "big.bin").read_bytes() == BIG
        w2.finish_job()
    finally:
        w2.close()
    assert len(fake.commits(REPO)) == 1  # the resumed file matched its pointer: not sent again

    w3 = _worker(file_remote, tmp_path, "w3", store=False)
    try:
        w3.include_paths(job_path("ckpt"))
        done = Path(w3.path, job_path("ckpt"))
        assert sorted(p.name for p in done.rglob("*") if p.is_file()) == [
            "big.bin.hub.json", "notes.hub.json"]
        assert "no store is configured" in caplog.text
        hub.keep_large_files(w3)
        w3.include_paths(job_path("ckpt"))
        assert (done / "sub" / "big.bin").read_bytes() == BIG
        assert not (done / "notes").exists()
    finally:
        w3.close()
    assert TOKEN not in caplog.text


def test_a_download_that_is_not_the_pointers_file_is_refused(
        tmp_path: Path, fake: FakeHub, caplog: pytest.LogCaptureFixture) -> None:
    """The SHA-256 of what the Hub sends is checked: a pointer naming other content (or a size)
    gets no file, and no temporary file is left; a resolve logs it and goes on."""
    store = hub.HubFileStore(hub.settings())
    local = tmp_path / "big.bin"
    local.write_bytes(BIG)
    pointer = store.put("j", [LargeFile("big.bin", local, len(BIG), BIG_SHA)])["big.bin"]
    again = store.put("j", [LargeFile("big.bin", local, len(BIG), BIG_SHA)])["big.bin"]
    assert again == pointer and len(fake.commits(REPO)) == 1  # the same file: no second commit
    folder = tmp_path / "job"
    folder.mkdir()
    store.get(pointer, folder / "ok.bin")
    assert (folder / "ok.bin").read_bytes() == BIG
    wrong = Pointer(**{**pointer.__dict__, "sha256": "0" * 64})
    with pytest.raises(DistributeError, match="not the file the pointer names"):
        store.get(wrong, folder / "bad.bin")
    assert sorted(p.name for p in folder.iterdir()) == ["ok.bin"]
    (folder / "bad.bin.hub.json").write_text(wrong.text())
    assert resolve_pointers(store, folder) == []
    assert "not the file the pointer names" in caplog.text and not (folder / "bad.bin").exists()
    assert read_pointer(folder / "bad.bin.hub.json") == wrong


def test_pointers_are_told_from_other_json() -> None:
    good = Pointer("b.bin", "dataset", REPO, "large-files/ab/cd/j/b.bin", 3, "a" * 64, "f" * 40)
    assert Pointer.parse(good.text()) == good
    doc = json.loads(good.text())
    for change in ({"distribute": "other"}, {"version": 2}, {"size": -1}, {"size": True},
                   {"sha256": "xyz"}, {"path": "../x"}, {"revision": ""}, {"repo_id": 7}):
        assert Pointer.parse(json.dumps({**doc, **change})) is None, change
    assert Pointer.parse("not json") is None and Pointer.parse("[1]") is None


def test_a_job_given_back_with_a_file_over_the_limit_goes_back_without_it(
        tmp_path: Path, file_remote: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a store, giving back a job whose directory holds a file over the limit (a stop
    signal) does not raise: the job is queued again, its branch keeps the rest."""
    monkeypatch.setenv("DISTRIBUTE_MAX_FILE_MB", "1")
    init_remote(file_remote, ["j"])
    w = _worker(file_remote, tmp_path, "w1", store=False)
    try:
        assert w.get_next_job(queue_jobs_func) == "j"
        branch = w.working_branch
        Path(w.job_dir or "", "big.bin").write_bytes(BIG)
        Path(w.job_dir or "", "small.txt").write_text("kept\n")
        w.give_back_job()
        assert w.running_job is None
    finally:
        w.close()
    assert jobs_in(file_remote, "jobs.txt", tmp_path) == ["j"]
    files = subprocess.run(["git", "--git-dir", file_remote[len("file://"):], "ls-tree", "-r",
                            "--name-only", f"refs/heads/{branch}", "--", job_path("j")],
                           capture_output=True, text=True, check=True).stdout.split()
    assert files == [f"{job_path('j')}/small.txt"]
