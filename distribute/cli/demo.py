"""``distribute demo`` and ``examples/quickstart.py``: the whole thing on one machine, with git
only.

A bare remote in a directory, 20 jobs, 4 worker processes (``python -m distribute worker``) that
drain the queue with :func:`square_job`, progress while they work, then the status and the story.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ..connect import add_jobs, init_remote, worker_from_url
from ..repo import Clone
from ..settings import seconds_setting
from ..status import status_json
from ..worker import Worker
from .commands import story
from .common import UsageError, add_command, say
from .status_view import RateMeter, progress_line, status_text

DEFAULT_RUN = "distribute.cli.demo:square_job"
HELP = "the quickstart: a local remote, 20 jobs, 4 worker processes"
EPILOG = "examples:\n  distribute demo\n  distribute demo --dir /tmp/demo --jobs 40 --workers 6"


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add the ``demo`` command (``func`` = :func:`cmd_demo`) to ``subparsers``."""
    p = add_command(subparsers, "demo", HELP, cmd_demo, parents, epilog=EPILOG)
    p.add_argument("--dir", metavar="DIR", help="keep everything in DIR (default: a temp dir)")
    p.add_argument("--jobs", type=int, default=20, metavar="N", help="number of jobs (20)")
    p.add_argument("--workers", type=int, default=4, metavar="N", help="worker processes (4)")


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the quickstart."""
    if args.jobs < 1 or args.workers < 1:
        raise UsageError("--jobs and --workers want positive numbers")
    return run_demo(args.dir, jobs=args.jobs, workers=args.workers)


def square_job(job: str, worker: Worker) -> None:
    """The demo's job function: ``task-07`` → ``updates/task-07/result.txt`` saying ``7² = 49``."""
    number = int(job.rsplit("-", 1)[-1])
    time.sleep(seconds_setting("DISTRIBUTE_DEMO_JOB_S"))  # pretend to work
    Path(worker.job_dir or ".", "result.txt").write_text(
        f"{job}: {number}² = {number * number} (computed by {worker.name})\n", encoding="utf-8")


def make_bare_remote(path: Path) -> str:
    """Create an empty bare repository at ``path`` (HEAD → master) and return its file:// URL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Clone.init_bare(path)
    return path.resolve().as_uri()


def run_demo(directory: Optional[str] = None, jobs: int = 20, workers: int = 4,
             run: str = DEFAULT_RUN, pythonpath: Optional[str] = None, poll_s: float = 0.5) -> int:
    """Run the quickstart; return 0 when every job is done.

    ``directory`` keeps everything (remote, workers' copies, logs) for a look afterwards; without
    it a temporary directory is used and removed at the end. ``run`` is the workers' ``--run``
    function; ``pythonpath`` is added to their import path (for a job module outside the package).
    """
    started = time.monotonic()
    tmp = None if directory else tempfile.mkdtemp(prefix="distribute-demo-")
    base = Path(directory or tmp or ".").resolve()
    try:
        base.mkdir(parents=True, exist_ok=True)
        if (base / "remote.git").exists():
            say(f"error: {base / 'remote.git'} exists already; give an empty --dir")
            return 1
        url = make_bare_remote(base / "remote.git")
        say(f"1. made an empty bare remote: {url}")
        init_remote(url)
        names = [f"task-{i:02d}" for i in range(1, jobs + 1)]
        watcher = worker_from_url(url, base / "watcher", "demo-cli")
        try:
            add_jobs(watcher, names)
            say(f"2. initialised the ledger and added {jobs} jobs ({names[0]} … {names[-1]})")
            procs = _start_workers(url, base, workers, run, pythonpath, poll_s)
            say(f"3. started {workers} worker processes: python -m distribute worker {url} "
                f"--run {run} --idle-exit   (logs in {base / 'logs'})")
            _watch(watcher, procs)
            codes = [p.wait() for p in procs]
            snap = watcher.snapshot()
            say(f"\n$ distribute status {url}")
            say(status_text(snap, url, watcher.job_lease_s, watcher.lock_lease_s))
            say(f"\n$ distribute log {url}")
            say(story(watcher, 10 * jobs))
        finally:
            watcher.close()
        counts = status_json(snap)["counts"]
        ok = counts["done"] == jobs and not any(codes)
        for i, code in enumerate(codes):
            if code:
                log_file = base / "logs" / f"worker-{i + 1}.log"
                say(f"\nworker-{i + 1} exited with {code}; the end of its log:\n"
                    + log_file.read_text(encoding="utf-8", errors="replace")[-2000:])
        say(f"\n{'OK' if ok else 'NOT OK'}: {counts['done']}/{jobs} jobs done by {workers} "
            f"workers in {time.monotonic() - started:.1f}s"
            + ("" if tmp else f"; everything is kept in {base}"))
        return 0 if ok else 1
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _start_workers(url: str, base: Path, n: int, run: str, pythonpath: Optional[str],
                   poll_s: float) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    env.setdefault("DISTRIBUTE_POLL_MAX_S", "0.2")  # short lock back-off: many workers, one CPU
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    (base / "logs").mkdir(exist_ok=True)
    procs = []
    for i in range(1, n + 1):
        with open(base / "logs" / f"worker-{i}.log", "wb") as log_file:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distribute", "worker", url, "--run", run,
                 "--path", str(base / "workers" / f"worker-{i}"), "--name", f"worker-{i}",
                 "--idle-exit", "--poll", str(poll_s)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                cwd=str(base)))
    return procs


def _watch(watcher: Worker, procs: list[subprocess.Popen[bytes]]) -> None:
    """Print a progress line whenever the counts change, until every worker has exited."""
    meter, last, tty = RateMeter(), None, sys.stdout.isatty()
    while True:
        running = any(p.poll() is None for p in procs)
        counts = status_json(watcher.snapshot())["counts"]
        line = progress_line(counts, meter.update(counts))
        if tty or counts != last:
            sys.stdout.write(("\r" + line + "\033[K") if tty else (line + "\n"))
            sys.stdout.flush()
            last = counts
        if not running:
            break
        time.sleep(0.5)
    if tty:
        sys.stdout.write("\n")
