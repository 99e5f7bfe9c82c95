"""Time an empty job's claim + finish against one `git fetch` + one `git push` on the same remote.

    python benchmarks/cycle.py [--transport file|daemon|http] [--jobs 30]

Both are measured in the same run, on the same machine, against a fresh remote on 127.0.0.1, one
cycle then one fetch + push in turn (a change in the machine's load hits both alike); the ratio
is what counts (absolute figures depend on the machine).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.gitservers import GitDaemon, SmartHttpServer, make_bare  # noqa: E402

from distribute import init_remote, queue_jobs_func, worker_from_url  # noqa: E402

ENV = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b",
           GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")


def remote_url(kind: str, root: Path, stack: ExitStack) -> str:
    make_bare(root)
    if kind == "file":
        return "file://" + str(root / "remote.git")
    server = GitDaemon(root) if kind == "daemon" else SmartHttpServer(root)
    stack.enter_context(server)
    return server.url("remote.git")


def git(*args: str, cwd: Path) -> None:
    # the library talks protocol v0 over git:// (v2 stalls ~40 ms there): measure the floor alike
    subprocess.run(["git", "-c", "protocol.version=0", *args], cwd=cwd, env=ENV, check=True,
                   capture_output=True)


class Floor:
    """Plain git in a plain clone of the remote, on a branch of its own: one fetch that brings
    nothing new (its own branch), and one commit + push, per :meth:`step`."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.clone = tmp / "floor"
        git("clone", "-q", url, str(self.clone), cwd=tmp)
        git("checkout", "-q", "-b", "floor", cwd=self.clone)
        (self.clone / "f.txt").write_text("start")
        git("add", "f.txt", cwd=self.clone)
        git("commit", "-qm", "start", cwd=self.clone)
        git("push", "-q", "origin", "HEAD:refs/heads/floor", cwd=self.clone)
        self.fetches: list[float] = []
        self.pushes: list[float] = []

    def step(self) -> None:
        i = len(self.fetches)
        t = time.perf_counter()
        git("fetch", "-q", "origin", "floor", cwd=self.clone)  # (the worker moves master)
        self.fetches.append(time.perf_counter() - t)
        (self.clone / "f.txt").write_text(str(i))
        t = time.perf_counter()
        git("commit", "-qam", f"c{i}", cwd=self.clone)
        git("push", "-q", "origin", "HEAD:refs/heads/floor", cwd=self.clone)
        self.pushes.append(time.perf_counter() - t)


def cycles(url: str, tmp: Path, n: int, floor: Floor) -> tuple[float, float, float, int]:
    """Median seconds of claim, of finish, of both; network calls per cycle. A step of the
    ``floor`` follows each cycle, so that a change in the machine's load hits both alike."""
    worker = worker_from_url(url, tmp / "worker", "bench")
    claims, finishes = [], []
    calls, procs = worker.clone.network_calls, worker.clone.processes
    for _ in range(n):
        t = time.perf_counter()
        worker.get_next_job(queue_jobs_func)
        claims.append(time.perf_counter() - t)
        t = time.perf_counter()
        worker.finish_job()
        finishes.append(time.perf_counter() - t)
        floor.step()
    per_cycle = (worker.clone.network_calls - calls) // n
    print(f"git processes per cycle: {(worker.clone.processes - procs) / n:.1f}")
    worker.close()
    both = [c + f for c, f in zip(claims, finishes)]
    return (statistics.median(claims), statistics.median(finishes), statistics.median(both),
            per_cycle)


def combined_cycles(url: str, tmp: Path, n: int) -> float:
    """Median seconds per job when each finish claims the next job in the same lock hold."""
    init_remote(url)  # no-op: already initialised
    worker = worker_from_url(url, tmp / "worker2", "bench2")
    worker.update_master(lambda ledger, root: (ledger.queued.extend(f"next{i}" for i in range(n)),
                                               ledger.write(root, queue=True), "add jobs")[-1])
    job = worker.get_next_job(queue_jobs_func)
    times = []
    while job is not None:
        t = time.perf_counter()
        job = worker.finish_job(queue_jobs_func)
        times.append(time.perf_counter() - t)
    worker.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", choices=["file", "daemon", "http"], default="file")
    parser.add_argument("--jobs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        tmp = Path(d)
        url = remote_url(args.transport, tmp / "srv", stack)
        init_remote(url, [f"job{i}" for i in range(args.jobs)])
        floor = Floor(url, tmp)
        claim, finish, cycle, calls = cycles(url, tmp, args.jobs, floor)
        combined = combined_cycles(url, tmp, args.jobs)
        fetch, push = statistics.median(floor.fetches), statistics.median(floor.pushes)
    ms = lambda s: f"{s * 1000:8.1f}"  # noqa: E731
    print(f"transport: {args.transport}, medians of {args.jobs}")
    print(f"{'operation':34} {'ms':>8}")
    for label, value in [("git fetch (nothing new)", fetch), ("commit + git push", push),
                         ("claim (get_next_job)", claim), ("finish (finish_job)", finish),
                         ("claim + finish", cycle),
                         ("finish_job(next_job_func): per job", combined)]:
        print(f"{label:34} {ms(value)}")
    print(f"network git calls per cycle: {calls}")
    print(f"ratio cycle / (fetch + push):     {cycle / (fetch + push):.2f}")
    print(f"ratio cycle / 2 x (fetch + push): {cycle / (2 * (fetch + push)):.2f}")
    print(f"ratio combined / (fetch + push):  {combined / (fetch + push):.2f}")


if __name__ == "__main__":
    main()
