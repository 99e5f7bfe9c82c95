"""A Whetlab-style loop: an experiment object suggests parameters, workers report results.

``whetlab_make_next_jobs_func(worker, experiment)`` turns any object with Whetlab's protocol
(``suggest``, ``get_by_result_id``, ``update``, ``pending``, ``cancel``) into a next-job function.
The job string is the suggestion's ``result_id``; jobs whose worker died come back from
``jobs.txt`` first, and pending suggestions nobody runs any more are cancelled.

Here the experiment is a small random search for the ``x`` minimising ``(x - 0.3)**2``, kept in
this process. With a real Whetlab-like service every worker would talk to the same experiment::

    python examples/whetlab_loop.py [REMOTE]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Optional

import distribute
from distribute.cli.demo import make_bare_remote


class Suggestion(dict):  # type: ignore[type-arg]
    """A parameter set; Whetlab's jobs are dicts with a ``result_id`` attribute."""

    result_id: int


class RandomSearch:
    """The experiment: random suggestions in [lo, hi], results kept in memory."""

    def __init__(self, lo: float = 0.0, hi: float = 1.0, seed: int = 7) -> None:
        self.lo, self.hi = lo, hi
        self.rng = random.Random(seed)
        self.jobs: dict[int, Suggestion] = {}
        self.results: dict[int, float] = {}
        self.cancelled: set[int] = set()

    def suggest(self) -> Suggestion:
        job = Suggestion(x=round(self.rng.uniform(self.lo, self.hi), 4))
        job.result_id = len(self.jobs) + 1
        self.jobs[job.result_id] = job
        return job

    def get_by_result_id(self, result_id: str) -> Suggestion:
        return self.jobs[int(result_id)]

    def update(self, job: Suggestion, value: float) -> None:
        self.results[job.result_id] = value

    def pending(self) -> list[Suggestion]:
        return [j for rid, j in self.jobs.items()
                if rid not in self.results and rid not in self.cancelled]

    def cancel(self, job: Suggestion) -> None:
        self.cancelled.add(job.result_id)

    def best(self) -> Optional[tuple[Suggestion, float]]:
        if not self.results:
            return None
        rid = min(self.results, key=self.results.__getitem__)
        return self.jobs[rid], self.results[rid]


def objective(x: float) -> float:
    """The expensive function being tuned."""
    return (x - 0.3) ** 2


def run(url: str, path: Path, rounds: int = 8) -> RandomSearch:
    experiment = RandomSearch()
    worker = distribute.worker_from_url(url, path, "whetlab-worker")
    next_job = distribute.whetlab_make_next_jobs_func(worker, experiment)
    try:
        for _ in range(rounds):
            job = worker.get_next_job(next_job)
            if job is None:
                break
            params = experiment.get_by_result_id(job)
            value = objective(params["x"])
            Path(worker.job_dir or ".", "result.json").write_text(
                json.dumps({"params": params, "value": value}) + "\n", encoding="utf-8")
            experiment.update(params, value)
            worker.finish_job()
    finally:
        worker.close()
    return experiment


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("remote", nargs="?", metavar="REMOTE",
                   help="a remote of yours (default: a throw-away bare repository)")
    p.add_argument("--rounds", type=int, default=8, help="trials to run (8)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="distribute-whetlab-") as tmp:
        url = args.remote or make_bare_remote(Path(tmp) / "remote.git")
        distribute.init_remote(url)  # (a ledger that exists already is kept)
        experiment = run(url, Path(tmp) / "w", args.rounds)
        best = experiment.best()
        if best is None:
            print("no trial ran")
            return 1
        print(f"{len(experiment.results)} trials; best x={best[0]['x']} "
              f"(objective {best[1]:.5f}, result_id {best[0].result_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
