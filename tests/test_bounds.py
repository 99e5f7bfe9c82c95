"""Directories stay under GitHub's 3 000 entries (issue 25): job results are sharded
``updates/<ab>/<cd>/<slug>/``, done segments go into ``done/<seq // 1000>/`` from the 1 000th on
(``docs/protocol.md``, "How big things get")."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

from support.remotes import git_out, ledger_file, person

from distribute import init_remote, queue_jobs_func, worker_from_url
from distribute.archive import segments
from distribute.protocol import DONE_RECENT, job_path, segment_path

#: GitHub's published limit of entries per directory.
LIMIT = 3000


def test_segments_of_ten_million_done_jobs_fill_no_directory_past_the_limit() -> None:
    """10 000 000 done jobs make 10 000 segments (1 000 records each): ``done/`` holds 999
    files and 10 folders, each folder at most 1 000 files."""
    count = 10_000_000 // DONE_RECENT
    folders = collections.Counter(segment_path(seq).rpartition("/")[0] for seq in
                                  range(1, count + 1))
    assert folders["done"] == 999 and len(folders) == 11
    assert max(folders.values()) <= 1000
    assert len(folders) - 1 + folders["done"] < LIMIT  # (done/'s own entries)
    assert segment_path(999) == "done/000999.txt" and segment_path(1000) == "done/001/001000.txt"


def test_results_fill_no_directory_past_the_limit() -> None:
    """``updates/<ab>/<cd>/<slug>``: 256 folders, 256 in each, and leaves holding jobs / 65 536
    entries on average (a million jobs: about 15; ten million: about 150, far below the
    limit): 300 000 jobs here, about 4.6 per leaf."""
    leaves = collections.Counter(job_path(f"job-{i}").rpartition("/")[0]
                                 for i in range(300_000))
    assert 64_000 < len(leaves) <= 65_536 and max(leaves.values()) < 25
    assert len({path.split("/")[1] for path in leaves}) == 256


def test_a_finish_past_the_999th_segment_writes_into_a_folder(file_remote: str,
                                                               tmp_path: Path) -> None:
    """A remote whose done archive reached segment 1 001 (two of them already in ``done/001/``):
    a finish that rolls ``done.txt`` writes segment 1 002 into ``done/001/``; a queued job
    recorded done in a segment of a folder is dropped, not run again; status counts them all."""
    init_remote(file_remote, ["new", "old-done"])
    work = tmp_path / "person"
    person(file_remote, work, "status")
    for seq, job in ((998, "a"), (999, "b"), (1000, "old-done"), (1001, "c")):
        path = work / segment_path(seq)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{job}\tw\t2026-01-01T00:00:00Z\t1\n")
    (work / "done.txt").write_text("".join(f"r{i}\tw\t2026-01-01T00:00:00Z\t1\n"
                                           for i in range(2 * DONE_RECENT - 1)))
    (work / "jobs.txt").write_text("old-done\nnew\n")
    person(file_remote, work, "add", "-A")
    person(file_remote, work, "commit", "-qm", "an archive of a thousand segments")
    person(file_remote, work, "push", "-q", "origin", "HEAD:master")

    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    try:
        assert [p for p, _ in segments(worker.clone, "origin/master")] == [
            "done/000998.txt", "done/000999.txt", "done/001/001000.txt", "done/001/001001.txt"]
        assert worker.get_next_job(queue_jobs_func) == "new"  # (old-done is done: dropped)
        Path(worker.job_dir or "", "result.txt").write_text("r\n")
        worker.finish_job()
    finally:
        worker.close()
    listing = git_out(file_remote, "ls-tree", "-r", "--name-only", "master", "done/",
                      tmp=tmp_path).split()
    assert listing == ["done/000998.txt", "done/000999.txt", "done/001/001000.txt",
                       "done/001/001001.txt", "done/001/001002.txt"]
    assert len(ledger_file(file_remote, "done.txt", tmp_path)) == DONE_RECENT
    status = subprocess.run([sys.executable, "-m", "distribute", "status", file_remote, "--json"],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "DISTRIBUTE_CACHE_DIR": str(tmp_path / "c")})
    assert json.loads(status.stdout)["counts"]["done"] == 4 + 2 * DONE_RECENT
