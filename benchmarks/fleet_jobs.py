"""The job of ``benchmarks/fleet.py``: sleep ``DISTRIBUTE_FLEET_JOB_S`` seconds, write a result."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def sleep(job: str, worker: Any) -> None:
    time.sleep(float(os.environ.get("DISTRIBUTE_FLEET_JOB_S", "2")))
    Path(worker.job_dir, "result.txt").write_text(f"{job} by {worker.name}\n")
