"""The Hub tests' shared data: the fake Hub's token and repository, the files a job writes and
what the repository should then hold, a loop that mirrors while it drains, a seeded master."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from distribute import hub, queue_jobs_func
from distribute.ledger import job_slug
from distribute.worker import Worker

from .hubserver import FakeHub

TOKEN = "hf_TestTokenQ7x9Zr2Lk5Vb8Nm3"
REPO = "tester/results"
#: Live mirroring as eager as it gets: a commit after every finish (the fleet tests pace it).
EAGER = {"DISTRIBUTE_HF_COMMITS_PER_HOUR": "360000", "DISTRIBUTE_HF_BATCH_FILES": "1"}
#: The jobs :func:`seed_done_jobs` usually writes.
SEEDED_JOBS = ["job-1", "a b/c", "ünïcödé"]
_SEED_GIT = ["git", "-c", "user.name=seed", "-c", "user.email=seed@test"]


def write_results(job: str, job_dir: Path) -> None:
    """Three files per job: text, binary in a subdirectory, and a non-ASCII name."""
    (job_dir / "data").mkdir(parents=True, exist_ok=True)
    (job_dir / "result.txt").write_text(f"result of {job}\n", encoding="utf-8")
    (job_dir / "data" / "blob.bin").write_bytes(bytes(range(256)) + job.encode())
    (job_dir / "notes é.md").write_text(f"# {job}\n", encoding="utf-8")


def expected_files(jobs: list[str]) -> dict[str, bytes]:
    """The results of ``jobs`` as the repository holds them (at ``hub_path_for(job)``)."""
    out = {}
    for job in jobs:
        base = hub.hub_path_for(job)
        out[f"{base}/result.txt"] = f"result of {job}\n".encode()
        out[f"{base}/data/blob.bin"] = bytes(range(256)) + job.encode()
        out[f"{base}/notes é.md"] = f"# {job}\n".encode()
    return out


def results(fake: FakeHub) -> dict[str, bytes]:
    """The repository's files but its layout file."""
    return {p: d for p, d in fake.files(REPO).items() if p != hub.LAYOUT_FILE}


def run_jobs(worker: Worker, before_mirror: Optional[Callable[[str], None]] = None,
             flush: bool = True) -> dict[str, object]:
    """Drain the queue like the CLI's loop (each finish claims the next job in the same lock
    hold), mirroring each job right after its finish, then flush; ``{job: what
    mirror_after_finish said}``."""
    mirrored: dict[str, object] = {}
    job = worker.get_next_job(queue_jobs_func)
    while job is not None:
        write_results(job, Path(worker.job_dir or ""))
        next_job = worker.finish_job(queue_jobs_func)
        if before_mirror:
            before_mirror(job)
        mirrored[job] = hub.mirror_after_finish(worker, job)
        job = next_job
    if flush:
        mirrored["<flush>"] = hub.flush_mirror(worker)
    return mirrored


def serve_fake_hub(monkeypatch: pytest.MonkeyPatch, page_size: int,
                   **settings: str) -> Iterator[FakeHub]:
    """A fake Hub that the library is pointed at (token, repository, quick retries), with
    ``settings`` on top; for fixtures to yield from."""
    with FakeHub(TOKEN, page_size=page_size) as server:
        for key, value in {"HF_ENDPOINT": server.url, "HF_TOKEN": TOKEN, "HF_REPO_ID": REPO,
                           "DISTRIBUTE_HF_RETRIES": "1", "DISTRIBUTE_HF_BACKOFF_S": "0.01",
                           "DISTRIBUTE_HF_PAUSE_S": "0", "DISTRIBUTE_HF_MAX_WAIT_S": "30",
                           **settings}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("HF_REPO_TYPE", raising=False)
        yield server


def seed_done_jobs(url: str, tmp: Path, groups: list[list[str]], big: int = 0) -> list[str]:
    """Write master with plain git: one commit per group of jobs that become done (with their
    results, plus ``big`` bytes each when asked); return the commits' shas."""
    work = tmp / "seed"
    subprocess.run(_SEED_GIT + ["init", "-q", str(work)], check=True)
    done, shas = [], []
    for group in groups:
        for job in group:
            job_dir = work / "updates" / job_slug(job)
            write_results(job, job_dir)
            if big:
                (job_dir / "big.bin").write_bytes(bytes(i % 251 for i in range(big)))
            done.append(f"{job}\tseed-worker\t2024-01-01T00:00:00Z\t1\n")
        for name in ("jobs.txt", "running.txt", "failed.txt"):
            (work / name).touch()
        (work / "done.txt").write_text("".join(done), encoding="utf-8")
        subprocess.run(_SEED_GIT + ["-C", str(work), "add", "-A"], check=True)
        subprocess.run(_SEED_GIT + ["-C", str(work), "commit", "-qm",
                                    f"seed finished {len(group)} jobs"], check=True)
        shas.append(subprocess.run(_SEED_GIT + ["-C", str(work), "rev-parse", "HEAD"], check=True,
                                   capture_output=True, text=True).stdout.strip())
    subprocess.run(_SEED_GIT + ["-C", str(work), "push", "-q", url, "HEAD:refs/heads/master"],
                   check=True)
    return shas
