"""Live mirroring by a fleet within the Hub's commit quota, and workers that stop.

The fake Hub (``tests/support/hubserver.py``) enforces a commit quota scaled down from the Hub's
hourly one (a few commits per few seconds) and answers 429 with ``Retry-After`` beyond it; the
workers are real ``distribute worker --mirror hf`` processes or the library's own loop. Assertions
are about what reached the Hub, how many commits and refusals it took — never about time.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from support.hubdata import REPO, TOKEN, expected_files, results, write_results
from support.hubserver import FakeHub
from support.remotes import jobs_in

from distribute import Worker, hub, init_remote, worker_from_url
from distribute.hub.cursor import MIRROR_REF, MirrorState, repo_key
from distribute.loop import LoopResult, run_worker_loop
from distribute.repo import RefUpdate

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("this_checkout")]
JOB_MODULE = ("from pathlib import Path\nimport sys\n"
              f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from support.hubdata import write_results\n"
              "def run(job, worker):\n"
              "    write_results(job, Path(worker.job_dir))\n")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    with FakeHub(TOKEN, page_size=1000) as server:
        for key, value in {"HF_ENDPOINT": server.url, "HF_TOKEN": TOKEN, "HF_REPO_ID": REPO,
                           "DISTRIBUTE_HF_RETRIES": "2", "DISTRIBUTE_HF_BACKOFF_S": "0.05",
                           "DISTRIBUTE_HF_TIMEOUT_S": "20", "DISTRIBUTE_HF_PAUSE_S": "1",
                           "DISTRIBUTE_HF_MAX_WAIT_S": "60", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                           "DISTRIBUTE_CACHE_DIR": str(tmp_path / "cache")}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("HF_REPO_TYPE", raising=False)
        yield server


def _path(first: Path) -> str:
    """``PYTHONPATH`` for a worker process: ``first`` (the job module), then the caller's."""
    return os.pathsep.join(filter(None, [str(first), os.environ.get("PYTHONPATH")]))


def test_a_fleet_of_cli_workers_stays_under_the_commit_quota(
        fake: FakeHub, file_remote: str, tmp_path: Path) -> None:
    """4 workers drain 40 jobs (3 files each) against a quota of 6 commits per 10 s. Every finish
    would make a batch (3 files), but the budget is one commit per 2 s (1800/hour) for the whole
    fleet: the fleet paces itself (no or very few 429s), so commits hold several jobs, and the
    live mirror plus one catch-up at most put everything on the Hub."""
    jobs = [f"job-{i:02d}" for i in range(40)]
    init_remote(file_remote, jobs)
    fake.set_quota(6, 10.0)
    (tmp_path / "hubjobs.py").write_text(JOB_MODULE)
    env = dict(os.environ, PYTHONPATH=_path(tmp_path), DISTRIBUTE_HF_COMMITS_PER_HOUR="1800",
               DISTRIBUTE_HF_BATCH_FILES="3", DISTRIBUTE_HF_BATCH_S="300")
    procs = [subprocess.Popen([sys.executable, "-m", "distribute", "worker", file_remote, "--run",
                               "hubjobs:run", "--idle-exit", "--poll", "0.5", "--mirror", "hf",
                               "--name", f"w{i}", "--path", str(tmp_path / f"w{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(4)]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in outputs]
    assert sorted(jobs_in(file_remote, "done.txt", tmp_path)) == jobs
    assert "(not mirrored)" not in "".join(out for out, _ in outputs)
    live = fake.commits(REPO)
    live_files = sum(len([p for p in c.changed if p != hub.LAYOUT_FILE]) for c in live)
    assert 1 <= len(live) < live_files // 3  # the budget, not the finishes, set the pace
    assert fake.refused() <= 2  # the mirror paced itself

    report = hub.catch_up(worker_from_url(file_remote, tmp_path / "catch-up", "catch-up"))
    assert results(fake) == expected_files(jobs)  # the live mirror plus one catch-up: everything
    assert report.uploaded_jobs + live_files // 3 == len(jobs)
    assert report.commits == []  # stopping workers committed what they held
    print(f"fleet: {len(live)} live commits for {live_files // 3} jobs, {fake.refused()} refused, "
          f"catch-up {report.uploaded_jobs} jobs in {len(report.commits)} commits, "
          f"{fake.count()} requests")
    status = subprocess.run([sys.executable, "-m", "distribute.cli.hub", "mirror", file_remote,
                             "--status", "--json"], capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["done"] == shown["mirrored"] == len(jobs) and shown["lag"] == 0
    assert shown["last_commit"] == fake.commits(REPO)[-1].oid


def mirroring_worker(url: str, tmp: Path, monkeypatch: pytest.MonkeyPatch, jobs: list[str],
                     per_hour: str) -> Worker:
    """A worker on a remote queued with ``jobs``, whose mirror batches wait for 1 000 files and
    whose fleet may commit ``per_hour`` times an hour."""
    monkeypatch.setenv("DISTRIBUTE_HF_COMMITS_PER_HOUR", per_hour)
    monkeypatch.setenv("DISTRIBUTE_HF_BATCH_FILES", "1000")
    init_remote(url, jobs)
    return worker_from_url(url, tmp / "w", "w1")


def run_jobs(worker: Worker, **options: Any) -> LoopResult:
    """The worker loop with jobs that write their results."""
    return run_worker_loop(worker, lambda job, w: write_results(job, Path(w.job_dir)), **options)


def test_a_stopping_worker_commits_the_batch_it_holds(fake: FakeHub, file_remote: str,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With a batch threshold never reached, nothing is committed while the worker runs; when it
    stops (``--max-jobs``), :func:`flush_mirror` commits all of it in one commit."""
    jobs = [f"job-{i}" for i in range(8)]
    worker = mirroring_worker(file_remote, tmp_path, monkeypatch, jobs, per_hour="3600")
    try:
        result = run_jobs(worker, max_jobs=6, after_finish=hub.mirror_after_finish)
        assert result.done == 6 and fake.commits(REPO) == []
        assert hub.flush_mirror(worker) is True
    finally:
        worker.close()
    assert results(fake) == expected_files(jobs[:6])
    assert len(fake.commits(REPO)) == 1
    assert hub.mirror_status(worker.clone).lag == 0


def test_a_stopping_worker_hands_over_to_the_holder_then_takes_over_a_dead_one(
        fake: FakeHub, file_remote: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While another worker holds the commit slot, a stopping worker waits for it; a holder that
    died (its lease ran out) is replaced, and the batch is committed all the same."""
    jobs = ["a", "b", "c"]
    worker = mirroring_worker(file_remote, tmp_path, monkeypatch, jobs, per_hour="3600")
    try:
        run_jobs(worker, exit_when_queue_empty=True, after_finish=hub.mirror_after_finish)
        s = hub.settings()
        dead = MirrorState(repo=repo_key(s), until=time.time() + 3, next_at=time.time())
        marker = worker.clone.make_marker(dead.message("dead-worker"))
        assert worker.clone.push([RefUpdate(MIRROR_REF, marker)])
        assert hub.mirror_status(worker.clone).committing == "dead-worker"
        assert hub.flush_mirror(worker) is True
    finally:
        worker.close()
    assert results(fake) == expected_files(jobs) and len(fake.commits(REPO)) == 1


def test_cli_worker_with_max_jobs_ends_with_its_results_on_the_hub(
        fake: FakeHub, file_remote: str, tmp_path: Path) -> None:
    jobs = ["one", "two", "three", "four"]
    init_remote(file_remote, jobs)
    (tmp_path / "hubjobs.py").write_text(JOB_MODULE)
    env = dict(os.environ, PYTHONPATH=_path(tmp_path), DISTRIBUTE_HF_COMMITS_PER_HOUR="3600")
    run = subprocess.run([sys.executable, "-m", "distribute", "worker", file_remote, "--run",
                          "hubjobs:run", "--max-jobs", "3", "--mirror", "hf", "--name", "cli-w"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert results(fake) == expected_files(jobs[:3]) and len(fake.commits(REPO)) == 1


def test_an_idle_worker_commits_a_batch_due_by_time_and_mirror_job_commits_one_job(
        fake: FakeHub, file_remote: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = ["a", "b", "c"]
    worker = mirroring_worker(file_remote, tmp_path, monkeypatch, jobs, per_hour="360000")
    try:
        run_jobs(worker, max_jobs=2, after_finish=hub.mirror_after_finish)
        assert hub.mirror_when_idle(worker) is False and fake.commits(REPO) == []  # not due yet
        monkeypatch.setenv("DISTRIBUTE_HF_BATCH_S", "0")  # (a job has waited long enough)
        assert hub.mirror_when_idle(worker) is True
        assert results(fake) == expected_files(jobs[:2]) and len(fake.commits(REPO)) == 1
        assert hub.mirror_when_idle(worker) is False  # nothing pending
        run_jobs(worker, exit_when_queue_empty=True)
        oid = hub.mirror_job(worker, "c")
        assert oid == fake.commits(REPO)[-1].oid and results(fake) == expected_files(jobs)
        assert fake.commits(REPO)[-1].title.startswith("Mirror job c by w1 from git ")
        assert hub.mirror_job(worker, "c") is None  # all there already: no commit
    finally:
        worker.close()
    assert len(fake.commits(REPO)) == 2
