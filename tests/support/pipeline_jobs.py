"""The job function of tests/test_pipeline.py's fleet, run by ``distribute worker --run
pipeline_jobs:run --stage ...``: split → three proc jobs → merge, per version.

``proc:v2-1`` records a follow-up and then raises (the follow-up must never be queued). The
worker named by ``PIPE_VICTIM`` announces ``RUNNING <job>`` on its first job and never returns
(the test SIGKILLs it).
"""
from __future__ import annotations

import os
import time
from pathlib import Path


def run(job, worker):
    """Run one job of any stage."""
    stage, _, name = job.partition(":")
    out = Path(worker.job_dir)
    if worker.name == os.environ.get("PIPE_VICTIM"):
        print(f"RUNNING {job}", flush=True)
        while True:
            time.sleep(3600)
    if stage == "split":
        procs = [f"proc:{name}-{i}" for i in range(3)]
        for proc in procs:
            worker.then(proc)
        worker.then(f"merge:{name}", after=procs)
    elif stage == "proc":
        if job == "proc:v2-1":
            worker.then("never:queued")
            raise ValueError(f"{job} always fails")
        (out / "out.txt").write_text(f"{job}\n")
    elif stage == "merge":
        (out / "merged.txt").write_text("".join(
            Path(path, "out.txt").read_text() for parent, path in worker.inputs.items()
            if parent.startswith("proc:")))
