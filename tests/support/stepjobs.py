"""A checkpointed job for the resume and fleet tests: ``distribute worker --run stepjobs:steps``.

It is the pattern the docs show: read the progress file the last checkpoint left in the job's
directory, continue from there, checkpoint (``commit_update``) after every step. Each start is
noted in ``starts.txt`` (``attempt step worker``) so the tests can tell where every attempt began;
``STEPS`` (8) and ``STEP_S`` (0.2) set the work. It prints ``START``/``STEP`` lines as it goes.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def steps(job: str, worker: Any) -> None:
    """Run the job's steps from its last checkpoint to ``STEPS``, checkpointing each."""
    total = int(os.environ.get("STEPS", "8"))
    pause = float(os.environ.get("STEP_S", "0.2"))
    folder = Path(worker.job_dir)
    progress = folder / "progress.txt"
    step = int(progress.read_text()) if progress.exists() else 0
    with open(folder / "starts.txt", "a", encoding="utf-8") as starts:
        starts.write(f"{worker.attempt} {step} {worker.name}\n")
    print(f"START {job} attempt {worker.attempt} step {step}", flush=True)
    while step < total:
        time.sleep(pause)
        step += 1
        progress.write_text(f"{step}\n")
        worker.commit_update(f"{job}: step {step}")
        print(f"STEP {job} {step}", flush=True)
    (folder / "result.txt").write_text(f"{job} done by {worker.name}\n")
