"""A big remote costs a job no more than a small one: the structure that makes it so.

Remotes of a few thousand done jobs are built in a second (``bigremote.py``); the assertions are
about what each commit touches, what is left behind and what the local copy holds, never about
time (``benchmarks/history.py`` measures that).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support import bigremote
from support.remotes import git_out, jobs_in

from distribute import Worker, init_remote, queue_jobs_func, worker_from_url
from distribute.protocol import DONE_RECENT, LAYOUT_FILE, job_path

pytestmark = pytest.mark.slow


def cycle(worker: Worker, text: str = "r") -> str:
    job = worker.get_next_job(queue_jobs_func)
    assert job is not None
    Path(worker.job_dir or "", "result.txt").write_text(f"{text} {job}\n")
    worker.commit_update()
    worker.finish_job()
    return job


def new_objects(url: str, tmp: Path, old: str, new: str) -> tuple[int, int]:
    """How many objects, and how many bytes of them, ``new`` adds to master over ``old``."""
    listing = git_out(url, "rev-list", "--objects", f"{old}..{new}", tmp=tmp).split("\n")
    shas = [line.split()[0] for line in listing if line.strip()]
    out = subprocess.run(["git", "-C", str(tmp / "inspect.git"), "cat-file",
                          "--batch-check=%(objectsize)"], input="\n".join(shas) + "\n",
                         capture_output=True, text=True, check=True).stdout
    return len(shas), sum(int(x) for x in out.split())


def test_a_finish_touches_the_same_few_objects_however_big_the_remote(tmp_path: Path) -> None:
    """The objects one claim + commit_update + finish adds to master do not grow with the number
    of done jobs (1 500 against 5 500): a few small trees, the ledger files, the job's files."""
    added = {}
    for done in (1500, 5500):
        bare = tmp_path / f"r{done}.git"
        bigremote.build(bare, done)
        url = f"file://{bare}"
        worker = worker_from_url(url, tmp_path / f"w{done}", "w")
        before = git_out(url, "rev-parse", "master", tmp=tmp_path / f"i{done}").strip()
        cycle(worker)
        after = git_out(url, "rev-parse", "master", tmp=tmp_path / f"i{done}").strip()
        added[done] = new_objects(url, tmp_path / f"i{done}", before, after)
        changed = git_out(url, "diff-tree", "-r", "--name-only", before, after,
                          tmp=tmp_path / f"i{done}").split()
        assert sorted(changed) == sorted(["done.txt", "jobs.txt",  # (running.txt: as before)
                                          f"{job_path('q0001')}/result.txt"])
        # the copy's index stays sparse: it never held the paths of other jobs' results
        entries = subprocess.run(["git", "-C", worker.path, "ls-files", "--sparse"],
                                 capture_output=True, text=True, check=True).stdout.split()
        assert len(entries) < 20, entries[:30]
        worker.close()
    (n_small, bytes_small), (n_big, bytes_big) = added[1500], added[5500]
    assert n_small == n_big  # same objects: 3 commits, 5 trees, the ledger blobs, the result
    assert abs(bytes_big - bytes_small) < 500  # (done.txt holds the recent 1 000 in both)


def test_done_records_roll_into_segments_and_still_count(tmp_path: Path) -> None:
    bare = tmp_path / "r.git"
    # a done.txt one line short of a roll, as a remote made before segments would have it
    bigremote.build(bare, 2 * DONE_RECENT - 1, queued=3, segmented=False)
    url = f"file://{bare}"
    worker = worker_from_url(url, tmp_path / "w", "w")
    cycle(worker)
    segments = git_out(url, "ls-tree", "--name-only", "master", "done/", tmp=tmp_path).split()
    assert segments == ["done/000001.txt"]
    assert len(jobs_in(url, "done.txt", tmp_path)) == DONE_RECENT
    story = git_out(url, "log", "--first-parent", "--format=%s", "master", tmp=tmp_path)
    assert story.splitlines()[0] == "w finished job q0001"  # the roll is in the finish commit
    # an archived job queued again is recognised as done (and dropped from the queue)
    subprocess.run(["git", "clone", "-q", url, str(tmp_path / "person")], check=True)
    (tmp_path / "person" / "jobs.txt").write_text("job0000001\nq0002\nq0003\n")
    for args in (["commit", "-qam", "again"], ["push", "-q", "origin", "HEAD:master"]):
        subprocess.run(["git", "-C", str(tmp_path / "person"), "-c", "user.name=p",
                        "-c", "user.email=p@x", *args], check=True)
    assert worker.get_next_job(queue_jobs_func) == "q0002"
    worker.finish_job()
    status = subprocess.run([sys.executable, "-m", "distribute", "status", url, "--json"],
                            capture_output=True, text=True, check=True,
                            env={**__import__("os").environ,
                                 "DISTRIBUTE_CACHE_DIR": str(tmp_path / "cache")}).stdout
    counts = json.loads(status)["counts"]
    assert counts["done"] == 2 * DONE_RECENT + 1 and counts["queued"] == 1
    worker.close()


def test_merged_branches_go_and_departed_workers_leave_no_heartbeat(file_remote: str,
                                                                   tmp_path: Path) -> None:
    init_remote(file_remote, ["a", "b", "c"])
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    cycle(worker)
    job = worker.get_next_job(queue_jobs_func)
    worker.fail_job("broken")
    worker.close()
    refs = git_out(file_remote, "for-each-ref", "--format=%(refname)", tmp=tmp_path).split()
    assert refs == ["refs/heads/master"]  # a failed job keeps no branch either


def test_a_remote_in_the_first_layout_keeps_working_and_upgrades(tmp_path: Path) -> None:
    bare = tmp_path / "old.git"
    bigremote.build(bare, 300, queued=4, layout=1, segmented=False, branches=True)
    url = f"file://{bare}"
    worker = worker_from_url(url, tmp_path / "w", "w")
    cycle(worker)  # results land where that remote keeps them
    files = git_out(url, "ls-tree", "-r", "--name-only", "master", tmp=tmp_path).split()
    assert "updates/q0001/result.txt" in files and LAYOUT_FILE not in files
    assert worker.get_next_job(queue_jobs_func) == "q0002"
    env = {**__import__("os").environ, "DISTRIBUTE_CACHE_DIR": str(tmp_path / "cache")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "distribute", *args, url],
                              capture_output=True, text=True, env=env)

    refused = cli("upgrade")
    assert refused.returncode == 1 and "1 job(s) are running" in refused.stderr
    worker.finish_job()  # (without files: no directory)
    assert "moved 301 job directories" in cli("upgrade").stdout
    files = git_out(url, "ls-tree", "-r", "--name-only", "master", tmp=tmp_path).split()
    assert f"{job_path('q0001')}/result.txt" in files and LAYOUT_FILE in files
    assert not [f for f in files if f.count("/") == 2 and f.startswith("updates/")]
    assert cycle(worker) == "q0003"
    files = git_out(url, "ls-tree", "-r", "--name-only", "master", tmp=tmp_path).split()
    assert f"{job_path('q0003')}/result.txt" in files
    pruned = cli("prune")
    assert pruned.returncode == 0 and "300 job branches" in pruned.stdout
    heads = git_out(url, "for-each-ref", "--format=%(refname)", "refs/heads/", tmp=tmp_path).split()
    assert heads == ["refs/heads/master"]
    worker.close()
