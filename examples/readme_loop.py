"""The README loop, once with each built-in next-job function.

``queue_jobs_func`` takes jobs from ``jobs.txt`` until it is empty; ``random_jobs_func`` makes up a
fresh job id each time (so that loop runs a fixed number of rounds). Run it against your own remote
or, without arguments, against a throw-away bare repository::

    python examples/readme_loop.py [REMOTE]

On a remote whose ledger exists already, the three jobs are queued after the jobs already there
(and the queue loop then drains all of them).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import distribute
from distribute.cli.demo import make_bare_remote
from distribute.connect import add_jobs


def work_on(worker: distribute.Worker, job: str) -> None:
    """What a job does: write into ``worker.job_dir``; checkpoint with ``commit_update``."""
    out = Path(worker.job_dir or ".")
    (out / "log.txt").write_text(f"started {job}\n", encoding="utf-8")
    worker.commit_update()  # the job branch now has the log, even if we die
    (out / "result.txt").write_text(f"result of {job}\n", encoding="utf-8")


def queue_loop(url: str, path: Path) -> list[str]:
    """Drain ``jobs.txt``."""
    worker = distribute.worker_from_url(url, path, "queue-worker")
    done = []
    try:
        while True:
            job = worker.get_next_job(distribute.queue_jobs_func)
            if job is None:
                break
            try:
                work_on(worker, job)
            except Exception as exc:  # the job failed: say why in failed.txt, keep going
                worker.fail_job(f"{type(exc).__name__}: {exc}")
                continue
            worker.finish_job()  # merge updates/<job>/ into master, mark the job done
            done.append(job)
    finally:
        worker.close()
    return done


def random_loop(url: str, path: Path, rounds: int = 3) -> list[str]:
    """Run ``rounds`` jobs with made-up ids (e.g. seeds of a simulation)."""
    worker = distribute.worker_from_url(url, path, "random-worker")
    done = []
    try:
        for _ in range(rounds):
            job = worker.get_next_job(distribute.random_jobs_func)
            if job is None:
                break
            work_on(worker, job)
            worker.finish_job()
            done.append(job)
    finally:
        worker.close()
    return done


def seed(url: str, jobs: list[str], path: Path) -> None:
    """Initialise the ledger with ``jobs``, or queue them if the remote has one already."""
    if distribute.init_remote(url, jobs):
        print(f"initialised the ledger on {url} with {len(jobs)} jobs")
        return
    worker = distribute.worker_from_url(url, path, "readme-seeder")
    try:
        added, skipped = add_jobs(worker, jobs)
    finally:
        worker.close()
    print(f"{url} has a ledger already: queued {added or 'nothing'}"
          + "".join(f"; skipped {job} ({why})" for job, why in skipped))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("remote", nargs="?", metavar="REMOTE",
                   help="a remote of yours (default: a throw-away bare repository)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="distribute-readme-") as tmp:
        url = args.remote or make_bare_remote(Path(tmp) / "remote.git")
        seed(url, ["alpha", "beta", "gamma"], Path(tmp) / "s")
        print("queue_jobs_func: ", queue_loop(url, Path(tmp) / "q"))
        print("random_jobs_func:", random_loop(url, Path(tmp) / "r"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
