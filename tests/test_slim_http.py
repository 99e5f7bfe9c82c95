"""A slim copy over smart HTTP pushes without fetching the remote's trees one by one.

Over smart HTTP every push pack is thin, and from a shallow copy that made ``pack-objects`` walk
every tree of the remote's master: in a partial copy, one request per directory of results it
lacked (hours at 100 000 jobs). Pushes of such a copy run from a sibling git directory that
borrows its objects (:mod:`distribute.repo.pushdir`).
"""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest
from support import bigremote
from support.gitservers import SmartHttpServer

from distribute import worker_from_url
from distribute.next_jobs import queue_jobs_func

DONE = 300  # (about 300 results directories the copy never needs)


def missing_objects(copy: Path, rev: str) -> int:
    """How many objects reachable from ``rev`` the (partial) copy lacks."""
    out = subprocess.run(["git", "-C", str(copy), "rev-list", "--objects", "--missing=print", rev],
                         capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if line.startswith("?"))


def git_out(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def big_http(tmp_path: Path, request: pytest.FixtureRequest):
    """A password-protected smart-HTTP remote holding ``DONE`` done jobs (or as many as the
    test's ``done`` marker says) and 5 queued ones."""
    root = tmp_path / "hosts"
    root.mkdir()
    marker = request.node.get_closest_marker("done")
    bigremote.build(root / "r.git", marker.args[0] if marker else DONE, queued=5)
    with SmartHttpServer(root, username="user", password="s3cret") as server:
        yield server


def test_claim_checkpoint_and_finish_fetch_no_results_trees(big_http, tmp_path):
    worker = worker_from_url(big_http.url("r.git"), tmp_path / "w", name="w1")
    copy = tmp_path / "w"
    assert (copy / ".git" / "shallow").exists()  # a slim copy: shallow and partial
    start = git_out(copy, "rev-parse", "refs/remotes/origin/master").strip()
    lacking = missing_objects(copy, start)
    assert lacking >= DONE // 2

    requests = big_http.requests
    job = worker.get_next_job(queue_jobs_func)
    assert job == "q0001"
    (Path(worker.job_dir or "") / "result.txt").write_text("42\n")
    assert worker.commit_update("half way")
    worker.finish_job()
    # a few round trips per step, not one per results directory
    assert big_http.requests - requests < 40
    assert missing_objects(copy, start) == lacking

    # the copy's tracking refs moved as `git push` moves them: master where the finish put it,
    # no tracking ref of the job's branch, which the finish deleted
    remote = dict(line.split("\t") for line in git_out(
        big_http.root / "r.git", "for-each-ref", "--format=%(refname)\t%(objectname)",
        "refs/heads/").splitlines())
    tracking = dict(line.split("\t") for line in git_out(
        copy, "for-each-ref", "--format=%(refname)\t%(objectname)",
        "refs/remotes/origin/").splitlines() if "/origin/distribute/" not in line)
    assert {ref.replace("refs/remotes/origin/", "refs/heads/"): sha
            for ref, sha in tracking.items()} == remote
    assert "q0001" in git_out(big_http.root / "r.git", "show", "master:done.txt")
    assert git_out(big_http.root / "r.git", "show", "master:" + str(
        Path(worker_path(big_http, job)) / "result.txt")) == "42\n"
    worker.close()


def worker_path(server: SmartHttpServer, job: str) -> str:
    """Where ``job``'s results are on the remote's master."""
    listing = git_out(server.root / "r.git", "ls-tree", "-r", "--name-only", "master")
    return next(p for p in listing.splitlines() if f"/{job}/" in p).rpartition("/")[0]


@pytest.mark.done(20)  # (the copy fetches what it lacks, one request each: keep it small)
def test_a_push_the_sibling_cannot_pack_runs_from_the_copy(big_http, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="distribute.repo")
    worker = worker_from_url(big_http.url("r.git"), tmp_path / "w", name="w1")
    assert worker.get_next_job(queue_jobs_func) == "q0001"
    sibling = tmp_path / "w" / ".git" / "distribute-push"
    assert (sibling / "objects" / "info" / "alternates").exists()
    assert "s3cret" not in caplog.text
    # the sibling no longer sees the copy's objects: it cannot pack the finish's commits
    (sibling / "objects" / "info" / "alternates").write_text(str(tmp_path / "nowhere") + "\n")
    worker.finish_job()
    assert "pushing from the copy itself" in caplog.text
    assert "q0001" in git_out(big_http.root / "r.git", "show", "master:done.txt")
    assert "s3cret" not in caplog.text
    worker.close()


def test_a_job_writing_beside_its_directory_fetches_no_results_trees(big_http, tmp_path):
    """Files the job changed in the checkout itself are committed through the copy's sparse
    index; git's write-tree would expand it to every path, fetching each directory it lacks."""
    worker = worker_from_url(big_http.url("r.git"), tmp_path / "w", name="w1")
    copy = tmp_path / "w"
    start = git_out(copy, "rev-parse", "refs/remotes/origin/master").strip()
    lacking = missing_objects(copy, start)
    assert worker.get_next_job(queue_jobs_func) == "q0001"
    Path(worker.path, "summary.txt").write_text("from the job\n")
    assert worker.commit_update("beside")
    worker.finish_job()
    assert missing_objects(copy, start) == lacking
    assert git_out(big_http.root / "r.git", "show", "master:summary.txt") == "from the job\n"
    worker.close()


@pytest.mark.done(20)
@pytest.mark.parametrize("rule", [("uploadpackfilter.tree.maxDepth", "0"),
                                  ("uploadpackfilter.tree.allow", "false")],
                         ids=["trees-to-depth-0", "no-tree-filter"])
def test_a_host_refusing_the_tree_filter_gets_a_copy_without_files(big_http, tmp_path, caplog,
                                                                    rule):
    """Hosts may allow fewer partial-clone filters (trees to depth 0 only): the copy is then
    made with ``blob:none`` (every tree of master's last commit, no file) and works as usual."""
    caplog.set_level(logging.INFO, logger="distribute.repo")
    subprocess.run(["git", "-C", str(big_http.root / "r.git"), "config", *rule], check=True)
    worker = worker_from_url(big_http.url("r.git"), tmp_path / "w", name="w1")
    assert "refuses the tree:3 filter" in caplog.text and "s3cret" not in caplog.text
    copy = tmp_path / "w"
    assert (copy / ".git" / "shallow").exists()
    assert missing_objects(copy, "refs/remotes/origin/master") > 0  # (still partial)
    assert worker.get_next_job(queue_jobs_func) == "q0001"
    (Path(worker.job_dir or "") / "result.txt").write_text("42\n")
    worker.finish_job()
    assert "q0001" in git_out(big_http.root / "r.git", "show", "master:done.txt")
    worker.close()
