"""``distribute mirror`` (``python -m distribute.cli.hub mirror``) against the fake Hub.

The remotes here are real bare repositories whose master is written with plain git (a ledger with
done jobs and their ``updates/<slug>/`` files), which is quicker than running the jobs.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from support.hubdata import (EAGER, REPO, SEEDED_JOBS, TOKEN, expected_files, results,
                             seed_done_jobs)
from support.hubserver import FakeHub

from distribute.hub import hub_path_for

pytestmark = pytest.mark.usefixtures("this_checkout")
JOBS = SEEDED_JOBS


def mirror(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "distribute.cli.hub", *args], check=False, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    with FakeHub(TOKEN, page_size=4, lfs_threshold=4096) as server:
        for key, value in {"HF_ENDPOINT": server.url, "HF_TOKEN": TOKEN, "HF_REPO_ID": REPO,
                           "DISTRIBUTE_HF_RETRIES": "1", "DISTRIBUTE_HF_BACKOFF_S": "0.01",
                           "DISTRIBUTE_HF_TIMEOUT_S": "5", "DISTRIBUTE_CACHE_DIR": str(tmp_path / "cache"),
                           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                           "DISTRIBUTE_HF_COMMITS_PER_HOUR": "360000"}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("HF_REPO_TYPE", raising=False)
        yield server


@pytest.mark.slow
def test_mirror_uploads_in_batches_then_nothing_new(fake: FakeHub, file_remote: str, tmp_path: Path) -> None:
    first, _ = seed_done_jobs(file_remote, tmp_path, [JOBS[:1], JOBS[1:]])
    dry = mirror("mirror", file_remote, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "3 not (fully) mirrored" in dry.stdout and all(f"  {j}\n" in dry.stdout for j in JOBS)
    assert fake.repos == {} and fake.count("commit") == 0  # a dry run creates nothing

    since = mirror("mirror", file_remote, "--since", first, "--batch", "1")
    assert since.returncode == 0, since.stderr
    assert "mirrored 2 jobs (6 files)" in since.stdout and "in 2 commits" in since.stdout
    assert results(fake) == expected_files(JOBS[1:])

    run = mirror("mirror", file_remote, "--batch", "2")
    assert run.returncode == 0, run.stderr
    assert "mirrored 1 jobs (3 files)" in run.stdout and "2 were already up to date" in run.stdout
    assert results(fake) == expected_files(JOBS)
    commits = len(fake.commits(REPO))
    assert commits == 3 and fake.commits(REPO)[-1].title.startswith("Mirror job job-1 by seed-worker from git ")

    status = mirror("mirror", file_remote, "--status")
    assert status.returncode == 0, status.stderr
    assert "mirrored:   3 of 3 done jobs; lag 0" in status.stdout and "(folders)" in status.stdout
    fake.reset_counts()
    again = mirror("mirror", file_remote)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("nothing to upload: 3 done jobs")
    assert len(fake.commits(REPO)) == commits
    assert {s.kind for s in fake.seen} <= {"tree", "agent-registry"}


def test_wrong_token_from_env_file_is_one_sentence_without_the_token(
        fake: FakeHub, file_remote: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_done_jobs(file_remote, tmp_path, [JOBS])
    wrong = "hf_WrongTokenFromDotEnv5a6b7c"
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HF_ENDPOINT")  # both from the working directory's .env:
    (tmp_path / ".env").write_text(f"HF_TOKEN={wrong}\nHF_ENDPOINT={fake.url}\n")
    for args in (["mirror", file_remote], ["-v", "mirror", file_remote]):
        run = mirror(*args)
        assert run.returncode == 1
        assert run.stderr.splitlines()[-1].startswith("error: ")
        assert "refused the token (HTTP 401)" in run.stderr and "HF_TOKEN" in run.stderr
        assert wrong not in run.stdout + run.stderr
    assert fake.repos == {} and fake.count("tree") == 2  # the .env's endpoint was used


@pytest.mark.slow
def test_large_files_go_through_lfs_and_are_never_skipped_silently(
        fake: FakeHub, file_remote: str, tmp_path: Path) -> None:
    # above the fake's 4 KiB LFS threshold
    seed_done_jobs(file_remote, tmp_path, [JOBS[:2]], big=10_000)
    fake.fail("500", kinds={"lfs-batch"})
    failed = mirror("mirror", file_remote)
    assert failed.returncode == 1 and "error: " in failed.stderr and "HTTP 500" in failed.stderr
    assert fake.commits(REPO) == []  # nothing committed without its large file
    fake.heal()
    run = mirror("mirror", file_remote)
    assert run.returncode == 0, run.stderr
    big = bytes(i % 251 for i in range(10_000))
    for job in JOBS[:2]:
        stored = fake.repo(REPO).head[f"{hub_path_for(job)}/big.bin"]
        assert stored.lfs and stored.data == big
    assert len(fake.commits(REPO)) == 1
    fake.reset_counts()
    again = mirror("mirror", file_remote)  # LFS files compare by size and sha256
    assert again.returncode == 0 and again.stdout.startswith("nothing to upload"), again.stderr
    assert fake.count("preupload") == fake.count("commit") == fake.count("lfs-batch") == 0


@pytest.mark.slow
def test_usage_errors(fake: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    help_ = mirror("mirror", "--help")
    assert help_.returncode == 0 and "--since COMMIT" in help_.stdout and "--batch N" in help_.stdout
    assert mirror("mirror", "file:///nowhere", "--batch", "0").returncode == 2
    monkeypatch.delenv("DISTRIBUTE_REMOTE", raising=False)
    run = mirror("mirror")
    assert run.returncode == 1 and "no remote given" in run.stderr
    for bad in ("0", "nan", "2.5", "many"):
        monkeypatch.setenv("DISTRIBUTE_MIRROR_BATCH", bad)
        run = mirror("mirror", "file:///nowhere")
        assert run.returncode == 1 and "DISTRIBUTE_MIRROR_BATCH" in run.stderr, run.stderr
        assert "Traceback" not in run.stderr
    monkeypatch.delenv("DISTRIBUTE_MIRROR_BATCH")
    monkeypatch.delenv("HF_REPO_ID")
    run = mirror("mirror", "file:///nowhere")
    assert run.returncode == 1 and "HF_REPO_ID" in run.stderr


@pytest.mark.slow
def test_cli_worker_with_mirror_hf_drains_the_queue(fake: FakeHub, file_remote: str, tmp_path: Path) -> None:
    from distribute import init_remote

    init_remote(file_remote, JOBS)
    (tmp_path / "hubjobs.py").write_text(
        "from pathlib import Path\n"
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from support.hubdata import write_results\n"
        "def run(job, worker):\n"
        "    write_results(job, Path(worker.job_dir))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ["PYTHONPATH"]]),
               **EAGER)  # a commit slot after each finish
    run = subprocess.run([sys.executable, "-m", "distribute", "worker", file_remote, "--run", "hubjobs:run",
                          "--exit-when-queue-empty", "--mirror", "hf", "--name", "cli-w"],
                         check=False, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert results(fake) == expected_files(JOBS)
    # a commit slot after each landing: one per finish, or fewer when finishes land as a batch
    assert 1 <= len(fake.commits(REPO)) <= len(JOBS)


def test_distribute_mirror_runs_through_the_main_cli(fake: FakeHub, file_remote: str, tmp_path: Path) -> None:
    seed_done_jobs(file_remote, tmp_path, [JOBS])
    run = subprocess.run([sys.executable, "-m", "distribute", "mirror", file_remote], check=False,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "mirrored 3 jobs (9 files)" in run.stdout and results(fake) == expected_files(JOBS)


def test_no_token_says_one_is_needed(fake: FakeHub, file_remote: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seed_done_jobs(file_remote, tmp_path, [JOBS])
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-login"))  # no token saved by a login either
    run = mirror("mirror", file_remote)
    assert run.returncode == 1
    assert "the Hub needs a token (HTTP 401)" in run.stderr and "set HF_TOKEN" in run.stderr
    assert "refused" not in run.stderr
