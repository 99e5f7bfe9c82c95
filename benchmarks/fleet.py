"""Fleet: how a whole fleet of workers drains a queue, and what it asks of the git host.

    python benchmarks/fleet.py [--workers 8,32] [--jobs-per-worker 4] [--job-s 8] [--idle-s 30]

One smart-HTTP server on 127.0.0.1 (``git http-backend``), ``--workers`` processes of
``distribute worker --run fleet_jobs:sleep --idle-exit`` started at once on a queue of
``workers x --jobs-per-worker`` jobs that each sleep ``--job-s`` seconds. Reported:

* efficiency: the ideal drain (ceil(jobs / workers) x job time) over the measured drain (from the
  start of the processes until the last one exits, start-up included);
* jobs/s, ref advertisements (``GET info/refs``) and HTTP requests per job;
* CPU seconds per job of the workers and of the server's git processes (children's rusage);
* an idle fleet: the same workers with nothing queued or running, left alone ``--idle-s``
  seconds (without ``--idle-exit``) after a start-up of 2 s per worker: HTTP requests per second.

Targets (issue "Fleet"): 32 workers on 8-s jobs: efficiency >= 0.6, <= 10 ref advertisements per
job; 8 workers on 2-s jobs: efficiency >= 0.8; an idle fleet of 32: <= 1 request per second.
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import machine_line, table  # noqa: E402
from gitservers import SmartHttpServer, make_bare  # noqa: E402

from distribute import init_remote  # noqa: E402


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def start(url: str, tmp: Path, n: int, job_s: float, *opts: str) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ, DISTRIBUTE_FLEET_JOB_S=str(job_s),
               PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    return [subprocess.Popen([sys.executable, "-m", "distribute", "worker", url, "--run",
                              "fleet_jobs:sleep", "--name", f"f{i}", "--path", str(tmp / f"f{i}"),
                              *opts], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for i in range(n)]


def drain(workers: int, per_worker: int, job_s: float, tmp: Path) -> list[object]:
    root = tmp / f"srv{workers}"
    root.mkdir()
    make_bare(root)
    with SmartHttpServer(root) as server:
        url = server.url("remote.git")
        jobs = workers * per_worker
        init_remote(url, [f"job{i:04d}" for i in range(jobs)])
        req0, adv0, cpu0 = server.requests, server.advertisements, children_cpu()
        started = time.perf_counter()
        procs = start(url, tmp / f"run{workers}", workers, job_s, "--idle-exit")
        for proc in procs:
            _, err = proc.communicate(timeout=3600)
            if proc.returncode != 0:
                raise SystemExit(f"a worker failed: {err.decode()[-2000:]}")
        took = time.perf_counter() - started
        ideal = math.ceil(jobs / workers) * job_s
        requests, ads = server.requests - req0, server.advertisements - adv0
        cpu = children_cpu() - cpu0  # workers and the git processes they and the server ran
        return [workers, jobs, f"{job_s:g}", f"{took:.1f}", f"{ideal:.0f}", f"{ideal / took:.2f}",
                f"{jobs / took:.2f}", f"{ads / jobs:.1f}", f"{requests / jobs:.1f}",
                f"{cpu / jobs:.2f}"]


def idle(workers: int, idle_s: float, tmp: Path) -> list[object]:
    root = tmp / f"idle{workers}"
    root.mkdir()
    make_bare(root)
    with SmartHttpServer(root) as server:
        url = server.url("remote.git")
        init_remote(url, [])
        procs = start(url, tmp / f"idlerun{workers}", workers, 0)
        time.sleep(max(20.0, 2.0 * workers))  # start-up: every worker clones and looks once
        req0 = server.requests
        time.sleep(idle_s)
        requests = server.requests - req0
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=120)
        return [workers, f"{idle_s:g}", requests, f"{requests / idle_s:.2f}"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="8,32", help="fleet sizes (8,32)")
    p.add_argument("--jobs-per-worker", type=int, default=4)
    p.add_argument("--job-s", default="2,8", help="job length per fleet size, seconds (2,8)")
    p.add_argument("--idle-s", type=float, default=30, help="idle-fleet window (30 s; 0: skip)")
    p.add_argument("--idle-only", action="store_true", help="measure the idle fleet only")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.workers.split(",")]
    lengths = [float(x) for x in args.job_s.split(",")]
    lengths += [lengths[-1]] * (len(sizes) - len(lengths))
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="distribute-fleet-") as d:
        tmp = Path(d)
        if not args.idle_only:
            rows = [drain(n, args.jobs_per_worker, s, tmp) for n, s in zip(sizes, lengths)]
            print(table(["workers", "jobs", "job s", "drain s", "ideal s", "efficiency", "jobs/s",
                         "ref ads/job", "requests/job", "CPU s/job"], rows), flush=True)
        if args.idle_s > 0:
            print(table(["idle workers", "window s", "requests", "requests/s"],
                        [idle(n, args.idle_s, tmp) for n in sizes]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
