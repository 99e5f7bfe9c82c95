"""Keeping a remote lean and a cycle cheap: ``distribute upgrade`` leaves the remote as a fresh one
of its size would be, ``distribute prune`` deletes spent branches in few pushes and nothing else,
and a checkpoint starts no git process it does not need.

Sizes are a few thousand records or refs (built in a second with ``support.bigremote``); speed
is measured in ``benchmarks/prune.py``, never asserted here.
"""
from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from support import bigremote
from support.gitservers import SmartHttpServer
from support.remotes import person_appends

from distribute import init_remote, maintenance, queue_jobs_func, worker_from_url
from distribute.maintenance import prune
from distribute.protocol import DONE_RECENT, FLAT, LAYOUT_FILE, job_path
from distribute.repo import faults, localcopy
from distribute.repo.bulkdelete import plan
from distribute.repo.faults import command_of


class Recorder:
    """A fault injector that changes nothing and records the git command lines of ``runner``
    (the worker's copy; its heartbeat thread runs git through a runner of its own)."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.commands: list[list[str]] = []

    def around(self, process: Any, args: list[str], run: Callable[[], Any]) -> Any:
        if process is self.runner:
            self.commands.append(list(args))
        return run()


def recorded_prune(worker: Any, batch: int) -> tuple[Any, Recorder]:
    """``prune(worker, batch=batch)`` with the git command lines of the worker's copy recorded."""
    recorder = Recorder(worker.clone)
    faults.install(recorder)
    try:
        return prune(worker, batch=batch), recorder
    finally:
        faults.install(None)


def test_a_checkpoint_and_a_finish_do_not_ask_git_for_the_remote_url(
        file_remote: str, tmp_path: Path, seam: Callable[[Any], Any]) -> None:
    init_remote(file_remote, ["a"])
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    assert worker.get_next_job(queue_jobs_func) == "a"
    recorder = seam(Recorder(worker.clone))
    for step in range(3):
        Path(worker.job_dir or "", "result.txt").write_text(f"step {step}\n")
        worker.commit_update()
    worker.finish_job()
    commands = [command_of(c) for c in recorder.commands]
    assert commands.count("push") >= 3  # (the checkpoints and the finish ran)
    assert "config" not in commands, [c for c in recorder.commands if command_of(c) == "config"]
    assert worker.clone.remote_url() == file_remote  # still right, from memory
    worker.clone.git("remote", "set-url", "origin", file_remote + "-moved")
    assert worker.clone.remote_url() == file_remote + "-moved"  # (read again once changed)
    worker.close()


# ---- upgrade ----------------------------------------------------------------------------------
def cli(url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISTRIBUTE_CACHE_DIR": str(tmp / "cache")}
    return subprocess.run([sys.executable, "-m", "distribute", *args, url], capture_output=True,
                          text=True, env=env)


def bare_git(bare: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "p", "GIT_AUTHOR_EMAIL": "p@x",
           "GIT_COMMITTER_NAME": "p", "GIT_COMMITTER_EMAIL": "p@x"}
    return subprocess.run(["git", "--git-dir", str(bare), *args], capture_output=True, text=True,
                          check=True, env=env).stdout


def test_upgrade_rolls_done_into_segments_in_the_layout_commit(tmp_path: Path) -> None:
    """A first-layout remote with 3 500 done records in one ``done.txt``, upgraded: one commit
    moves the results and leaves 1 500 records in ``done.txt``, 2 000 in two segments, as
    finishes would have; readers still see 3 500 done; later finishes roll on from there."""
    bare = tmp_path / "old.git"
    bigremote.build(bare, 3500, queued=4, layout=FLAT, segmented=False)
    url = f"file://{bare}"
    lines = bare_git(bare, "show", "master:done.txt").splitlines()
    before = bare_git(bare, "rev-parse", "master").strip()
    out = cli(url, tmp_path, "upgrade")
    assert out.returncode == 0, out.stderr
    assert ("moved 3500 job directories to the sharded layout and put 2000 done records into "
            "2 done segments") in out.stdout
    assert bare_git(bare, "rev-list", "--count", f"{before}..master").strip() == "1"
    assert bare_git(bare, "rev-parse", "master^").strip() == before
    files = bare_git(bare, "ls-tree", "-r", "--name-only", "master").split()
    assert [f for f in files if f.startswith("done/")] == ["done/000001.txt", "done/000002.txt"]
    assert LAYOUT_FILE in files and f"{job_path('job0000001')}/result.txt" in files
    segments = [bare_git(bare, "show", f"master:done/00000{n}.txt").splitlines() for n in (1, 2)]
    recent = bare_git(bare, "show", "master:done.txt").splitlines()
    assert [len(s) for s in segments] == [DONE_RECENT, DONE_RECENT]
    assert segments[0] + segments[1] + recent == lines  # every record, in order, unchanged
    status = json.loads(cli(url, tmp_path, "status", "--json").stdout)
    assert status["counts"]["done"] == 3500 and status["counts"]["queued"] == 4
    assert "nothing changed" in cli(url, tmp_path, "upgrade").stdout

    worker = worker_from_url(url, tmp_path / "w", "w")
    person_appends(url, tmp_path / "person", ["job0000001"])  # an archived job, queued again
    for _ in range(4):
        job = worker.get_next_job(queue_jobs_func)
        assert job is not None and job.startswith("q")
        Path(worker.job_dir or "", "result.txt").write_text("r\n")
        worker.commit_update()
        worker.finish_job()
    assert worker.get_next_job(queue_jobs_func) is None  # (job0000001 was dropped: done)
    assert len(bare_git(bare, "show", "master:done.txt").splitlines()) == len(recent) + 4
    assert f"{job_path('q0004')}/result.txt" in bare_git(bare, "ls-tree", "-r", "--name-only",
                                                       "master").split()
    worker.close()


def test_upgrade_of_a_sharded_remote_with_a_long_done_file_only_rolls_it(tmp_path: Path) -> None:
    bare = tmp_path / "r.git"
    bigremote.build(bare, 2 * DONE_RECENT + 10, queued=2, segmented=False)
    url = f"file://{bare}"
    out = cli(url, tmp_path, "upgrade")
    assert out.returncode == 0 and "moved" not in out.stdout, out.stdout + out.stderr
    assert "put 1000 done records into 1 done segment" in out.stdout
    assert len(bare_git(bare, "show", "master:done.txt").splitlines()) == DONE_RECENT + 10


# ---- prune ------------------------------------------------------------------------------------
def legacy_remote(tmp: Path, done: int) -> tuple[Path, str, str]:
    """A first-layout remote with a branch per done job, plus branches prune must keep; returns
    (bare, URL, a commit master lacks)."""
    bare = tmp / "old.git"
    bigremote.build(bare, done, queued=2, layout=FLAT, segmented=False, branches=True)
    extra = bare_git(bare, "commit-tree", "-p", "master", "-m", "more work",
                     "master^{tree}").strip()
    for ref, sha in (("w1/job0000002", extra),  # done, but this tip is not in master: kept first
                     ("w5/job0000001", "master"),  # w0 finished job0000001, not w5: spent too
                     ("w0/job0000001@2", "master"),  # another attempt, merged: spent
                     ("w1/q0001", extra), ("w5/q0002", "master"),  # queued jobs': they stay
                     ("w0/unknown", "master"), ("feature/x", "master")):
        bare_git(bare, "update-ref", f"refs/heads/{ref}", sha)
    return bare, f"file://{bare}", extra


def heads(bare: Path) -> dict[str, str]:
    out = bare_git(bare, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/")
    return dict(line.split() for line in out.splitlines())


KEPT = ["refs/heads/feature/x", "refs/heads/master", "refs/heads/w0/unknown",
        "refs/heads/w1/q0001", "refs/heads/w5/q0002"]


def in_master(bare: Path, commit: str) -> bool:
    return subprocess.run(["git", "--git-dir", str(bare), "merge-base", "--is-ancestor", commit,
                           "master"]).returncode == 0


def test_prune_deletes_spent_branches_in_batches_and_nothing_else(tmp_path: Path) -> None:
    bare, url, extra = legacy_remote(tmp_path, 700)
    worker = worker_from_url(url, tmp_path / "copy", "pruner")
    deleted, recorder = recorded_prune(worker, 60)
    assert sorted(heads(bare)) == KEPT
    assert heads(bare)["refs/heads/w1/q0001"] == extra
    assert deleted["kept"] == ["refs/heads/w1/job0000002"] and in_master(bare, extra)
    assert len(deleted["branches"]) == 700 + 2 and "refs/heads/w0/job0000001@2" in \
        deleted["branches"]
    pushes = [c for c in recorder.commands if command_of(c) == "push" and "--prune" in c]
    assert 700 / 60 <= len(pushes) <= 3 * 700 / 60  # batches of at most 60 refs, none tiny
    assert all("--force-with-lease" in c and "--atomic" in c for c in pushes)
    assert not worker.clone.local_refs("refs/distribute-prune/")  # nothing left behind
    worker.close()


class Meddler:
    """Before the first pattern push, as late workers might: ``move`` moves one ref the push will
    delete and creates one under the same pattern; ``drop`` deletes a ref the push keeps."""

    def __init__(self, bare: Path, commit: str, mode: str) -> None:
        self.bare, self.commit, self.mode, self.done = bare, commit, mode, False
        self.moved = self.created = self.removed = ""

    def around(self, process: Any, args: list[str], run: Callable[[], Any]) -> Any:
        if not self.done and command_of(args) == "push" and "--prune" in args:
            self.done = True
            if self.mode == "drop":  # (a finish deleting its branch): it must not come back
                self.removed = next(a.split(":", 1)[1] for a in args
                                    if a[:40].isalnum() and a[40:41] == ":")
                bare_git(self.bare, "update-ref", "-d", self.removed)
                return run()
            prefix = next(a.split(":", 1)[1][:-1] for a in args if a.endswith("*")
                          and a.startswith("refs/"))
            covered = bare_git(self.bare, "for-each-ref", "--format=%(refname)",
                               f"{prefix}*").split()
            self.moved, self.created = covered[0], prefix + "new"
            bare_git(self.bare, "update-ref", self.moved, self.commit)
            bare_git(self.bare, "update-ref", self.created, "master")
        return run()


@pytest.mark.parametrize("mode", ["move", "drop"])
def test_a_branch_that_changes_while_prune_pushes_stays_as_it_is(tmp_path: Path,
                                                                  mode: str) -> None:
    bare, url, extra = legacy_remote(tmp_path, 300)
    worker = worker_from_url(url, tmp_path / "copy", "pruner")
    meddler = Meddler(bare, extra, mode)
    faults.install(meddler)
    try:
        deleted = prune(worker, batch=100)
    finally:
        faults.install(None)
    left = heads(bare)
    if mode == "move":
        assert left[meddler.moved] == extra and meddler.created in left  # both untouched
        assert meddler.moved not in deleted["branches"]
    else:
        assert meddler.removed in KEPT and meddler.removed not in left  # not made again
    assert sorted(set(left) - {meddler.moved, meddler.created}) == sorted(
        set(KEPT) - {meddler.removed})  # the rest went
    assert len(deleted["branches"]) == 302 - (mode == "move")
    worker.close()


def test_plan_covers_every_doomed_ref_once_and_names_every_other_ref_it_covers() -> None:
    rng = random.Random(7)
    names = {f"refs/heads/w{rng.randrange(3)}/job{rng.randrange(10**5):05d}"
             + rng.choice(["", "@2", "-x"]) for _ in range(3000)}
    names |= {"refs/heads/master", "refs/heads/w0/job", "refs/heads/w0/job1", "refs/tags/v1"}
    listed = {ref: f"{i:040x}" for i, ref in enumerate(sorted(names))}
    doomed = {ref for ref in listed if rng.random() < 0.9 and ref.count("/") == 3}
    doomed.add("refs/heads/w0/job")
    batches = plan(listed, doomed, limit=100, keep_limit=3)
    seen: list[str] = []
    for batch in batches:
        covered = {ref for ref in listed
                   if any(ref.startswith(p) for p in batch.patterns) or ref in batch.exact}
        assert covered == set(batch.delete) | set(batch.keep)  # no ref is covered unnamed
        assert not set(batch.keep) & doomed and set(batch.delete) <= doomed
        assert batch.size() <= 100
        seen += batch.delete
    assert sorted(seen) == sorted(doomed)  # each doomed ref in exactly one batch
    assert len(batches) <= 2 * len(doomed) / 100 + 3


def test_many_branches_are_named_once_with_what_to_run(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A new copy of a remote keeping many branches says so in one line (what it costs, what to
    run); a reused copy says nothing more; ``upgrade`` says what ``prune`` would do."""
    _, url, _ = legacy_remote(tmp_path, 120)
    monkeypatch.setattr(localcopy, "MANY_BRANCHES", 100)
    monkeypatch.setattr(maintenance, "MANY_BRANCHES", 100)
    with caplog.at_level(logging.WARNING):
        worker_from_url(url, tmp_path / "w", "w").close()
        worker = worker_from_url(url, tmp_path / "w", "w")  # (the same copy again)
    said = [r.getMessage() for r in caplog.records if "branches" in r.getMessage()]
    assert len(said) == 1 and "keeps 127 branches" in said[0], said
    assert f"distribute prune {url}" in said[0] and "MB" in said[0]
    hint = maintenance.prune_hint(worker, url)
    assert hint is not None and "keeps 126 branches" in hint and "distribute prune" in hint
    monkeypatch.setattr(maintenance, "MANY_BRANCHES", 1000)
    assert maintenance.prune_hint(worker, url) is None
    worker.close()


# ---- prune over smart HTTP --------------------------------------------------------------------
def served_legacy_remote(tmp: Path, done: int, **auth: str) -> tuple[Path, SmartHttpServer, str]:
    root = tmp / "srv"
    root.mkdir()
    bare, _, extra = legacy_remote(root, done)
    bare_git(bare, "config", "http.receivepack", "true")
    return bare, SmartHttpServer(root, **auth), extra  # type: ignore[arg-type]


def test_prune_over_http_posts_its_batches_and_keeps_what_it_must(tmp_path: Path) -> None:
    bare, server, extra = served_legacy_remote(tmp_path, 700, username="u", password="p:w@")
    with server:
        url = server.url("old.git")  # (the credentials in the URL)
        worker = worker_from_url(url, tmp_path / "copy", "pruner")
        deleted, recorder = recorded_prune(worker, 60)
        worker.close()
    assert sorted(heads(bare)) == KEPT and in_master(bare, extra)
    assert len(deleted["branches"]) == 702
    # (no git push but the lock's and the one commit keeping w1/job0000002's tip)
    assert not [c for c in recorder.commands if command_of(c) == "push" and "--prune" in c]


class MoveBeforePost:
    """Moves a branch prune is about to delete, and creates one beside it, once the deletions
    are planned (at the first look at the copy's http settings)."""

    def __init__(self, bare: Path, commit: str) -> None:
        self.bare, self.commit, self.done = bare, commit, False

    def around(self, process: Any, args: list[str], run: Callable[[], Any]) -> Any:
        if not self.done and command_of(args) == "config" and r"^http\." in args:
            self.done = True
            bare_git(self.bare, "update-ref", "refs/heads/w2/job0000003", self.commit)
            bare_git(self.bare, "update-ref", "refs/heads/w2/job0000003x", "master")
        return run()


def test_over_http_a_branch_that_moves_while_prune_deletes_stays(tmp_path: Path) -> None:
    bare, server, extra = served_legacy_remote(tmp_path, 300)
    with server:
        worker = worker_from_url(server.url("old.git"), tmp_path / "copy", "pruner")
        faults.install(MoveBeforePost(bare, extra))
        try:
            deleted = prune(worker, batch=100)
        finally:
            faults.install(None)
        worker.close()
    left = heads(bare)
    assert left.pop("refs/heads/w2/job0000003") == extra and left.pop("refs/heads/w2/job0000003x")
    assert sorted(left) == KEPT and len(deleted["branches"]) == 301


def test_over_http_credentials_come_from_git_and_unknown_settings_mean_git_push(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bare, server, _ = served_legacy_remote(tmp_path, 200, username="u", password="pw")
    helper = "!f() { echo username=u; echo password=pw; }; f"
    for key, value in {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "credential.helper",
                       "GIT_CONFIG_VALUE_0": helper}.items():
        monkeypatch.setenv(key, value)
    with server:
        url = server.url("old.git", with_credentials=False)
        worker = worker_from_url(url, tmp_path / "copy", "pruner")
        assert len(prune(worker, batch=80)["branches"]) == 202  # (asked git for them)
        assert sorted(heads(bare)) == KEPT
        worker.close()
        for ref in ("w0/job0000009", "w1/job0000010"):  # two more spent branches
            bare_git(bare, "update-ref", f"refs/heads/{ref}", "master")
        worker = worker_from_url(url, tmp_path / "copy", "pruner")
        worker.clone.git("config", "http.extraHeader", "X-Test: 1")  # not honoured: git push
        recorder = Recorder(worker.clone)
        faults.install(recorder)
        try:
            assert len(prune(worker)["branches"]) == 2
        finally:
            faults.install(None)
        worker.close()
    assert [c for c in recorder.commands if command_of(c) == "push" and "--prune" in c]
    assert sorted(heads(bare)) == KEPT
