"""A mirroring worker process for tests/test_hub.py: ``python hub_worker.py URL PATH NAME``.

Drains the queue, mirroring each job right after its finish, then flushes; prints one line per
job (``COMMITTED``, ``PENDING`` or ``FAILED``, a tab, the job) and ``FLUSHED<TAB>True|False``.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from support.hubdata import run_jobs  # noqa: E402

from distribute import worker_from_url  # noqa: E402


def main() -> None:
    """Run one worker with the arguments of the command line."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    url, path, name = sys.argv[1:4]
    worker = worker_from_url(url, path, name, poll_max_s=0.1)
    try:
        for job, said in run_jobs(worker).items():
            if job == "<flush>":
                print(f"FLUSHED\t{said}", flush=True)
            else:
                state = "COMMITTED" if said else "PENDING" if said is None else "FAILED"
                print(f"{state}\t{job}", flush=True)
    finally:
        worker.close()


if __name__ == "__main__":
    main()
