"""Next-job functions for the serving tests: module-level and combinable, so that a holder runs
them for workers in line (their identity is ``module:qualname``); and :func:`write_result`, a job
for ``distribute worker --run jobfuncs:write_result``."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Optional

from distribute import combinable, queue_jobs_func
from distribute.ledger import Ledger

_numbers = itertools.count(1)


@combinable
def retry_failed_once(worker: Any) -> Optional[str]:
    """The queue's next job, else a failed job that was not retried yet (retries are noted in
    ``retried.txt``, committed with the claim): a function that gives failed jobs a second go."""
    job = queue_jobs_func(worker)
    if job is not None:
        return job
    root = Path(worker.path)
    notes = root / "retried.txt"
    retried = set(notes.read_text().split()) if notes.exists() else set()
    ledger = Ledger.read(root)
    for entry in ledger.failed:
        if entry.job not in retried and ledger.running_entry(entry.job) is None:
            notes.write_text("".join(f"{j}\n" for j in sorted(retried | {entry.job})))
            return entry.job
    return None


@combinable
def always_a_job() -> str:
    """There is always work: a fresh job each call (like ``random_jobs_func``, but readable)."""
    return f"fresh-{next(_numbers):03d}"


def write_result(job: str, worker: Any) -> None:
    """A job: write ``result.txt`` naming the worker and the job (what the invariants check)."""
    Path(worker.job_dir, "result.txt").write_text(f"{worker.name} {job}\n", encoding="utf-8")
