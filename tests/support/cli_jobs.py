"""Job functions for tests/test_cli.py, run by ``distribute worker --run cli_jobs:...``.

Each announces its state on stdout (the tests wait for those lines instead of sleeping).
"""
from __future__ import annotations

import time
from pathlib import Path


def write(job, worker):
    """Write ``result.txt``; jobs named ``boom...`` raise instead."""
    if job.startswith("boom"):
        raise ValueError(f"boom in {job}")
    Path(worker.job_dir, "result.txt").write_text(f"{job} by {worker.name}\n")


def block(job, worker):
    """Push a partial result, announce ``RUNNING <job>``, then never return."""
    Path(worker.job_dir, "partial.txt").write_text(f"{job} partial\n")
    worker.commit_update("partial result")
    print(f"RUNNING {job}", flush=True)
    while True:
        time.sleep(3600)


def wait_for_go(job, worker):
    """Announce ``RUNNING <job>``, return once the file ``go`` exists in the current directory."""
    print(f"RUNNING {job}", flush=True)
    deadline = time.monotonic() + 60
    while not Path("go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    Path(worker.job_dir, "result.txt").write_text(f"{job} after go\n")


def hold_lock(worker):
    """A next-job function that announces ``HOLDING`` and keeps the remote lock forever."""
    print("HOLDING", flush=True)
    while True:
        time.sleep(3600)


def busy(job, worker):
    """Push a partial result, announce ``RUNNING <job>``, then work in Python code forever (so an
    interruption lands at once); its ``finally`` writes ``interrupted.txt`` and pushes it."""
    Path(worker.job_dir, "partial.txt").write_text(f"{job} partial\n")
    worker.commit_update("partial result")
    print(f"RUNNING {job}", flush=True)
    try:
        while True:
            time.sleep(0.01)
    finally:
        Path(worker.job_dir, "interrupted.txt").write_text(f"{job} interrupted\n")
        worker.commit_update("interrupted")


def nap(job, worker):
    """Announce ``RUNNING <job>``, work for the milliseconds named by the job (``nap-250``), then
    write ``result.txt`` and return."""
    print(f"RUNNING {job}", flush=True)
    end = time.monotonic() + int(job.rsplit("-", 1)[1]) / 1000
    while time.monotonic() < end:
        time.sleep(0.01)
    Path(worker.job_dir, "result.txt").write_text(f"{job} napped\n")


def sized(job, worker):
    """Write ``result.txt``; a job named ``big-<n>mb`` also writes ``big.bin`` of n MB (at once,
    or ``ckpt-big-<n>mb``: pushing it as a checkpoint first)."""
    Path(worker.job_dir, "result.txt").write_text(f"{job} by {worker.name}\n")
    if "big-" in job:
        megabytes = int(job.split("big-")[1].removesuffix("mb"))
        Path(worker.job_dir, "big.bin").write_bytes(b"\1" * (megabytes << 20))
        if job.startswith("ckpt-"):
            worker.commit_update("checkpoint with a big file")
