"""Fleet: how a whole fleet of workers drains a queue, and what it asks of the git host.

    python benchmarks/fleet.py [--workers 8,32] [--jobs-per-worker 4] [--job-s 8] [--idle-s 60]
                               [--delay-ms 0,25] [--budget none,60/15] [--budget-window-s 60]

One smart-HTTP server on 127.0.0.1 (``git http-backend``), ``--workers`` processes of
``distribute worker --run fleet_jobs:sleep --idle-exit`` started at once on a queue of
``workers x --jobs-per-worker`` jobs that each sleep ``--job-s`` seconds. Reported:

* efficiency: the ideal drain (ceil(jobs / workers) x job time) over the measured drain (from the
  start of the processes until the last job's finish landed on master, start-up included: "drained
  s", to the second of its commit time); "exit s": until the last worker left (idle workers
  notice that nothing runs any more at their next look, after a back-off of up to ``--poll``);
* jobs/s, ref advertisements (``GET info/refs``) and HTTP requests per job;
* what the fleet asks of the host as a host counts it (one git operation: one ref advertisement):
  pushes per job, pushes per minute on average and in the busiest 60 s, reads (fetch, clone,
  ls-remote) per second on average and in the busiest 10 s (GitHub asks for at most 6 pushes a
  minute and 15 reads a second per repository); "later": the busiest windows of pushes and reads
  after the first push window (the workers start at once and cannot see one another before they
  push);
* CPU seconds per job of the workers and of the server's git processes (children's rusage);
* an idle fleet: the same workers with nothing queued or running (without ``--idle-exit``),
  after a start-up of 2 s per worker and ``--settle-s`` more (the idle back-off reaching its
  cap), left alone ``--idle-s`` seconds: HTTP requests per second.

``--budget P/R`` runs the workers with ``DISTRIBUTE_PUSHES_PER_MIN=P`` and
``DISTRIBUTE_READS_PER_S=R`` (the fleet-wide budget, see docs/protocol.md "Pacing"); ``none``
sets both to 0 (unlimited, what a loopback remote gets by default). With a list (``none,60/15``)
every row is measured once per budget, and a ``budget`` column comes first. The busiest windows
are those of the budget (``--budget-window-s``, 60 by default: pushes over 60 s, reads over 10 s;
a shorter one, passed on as ``DISTRIBUTE_BUDGET_WINDOW_S``, time-compresses the budget).

``--delay-ms N`` puts the workers behind ``DelayProxy`` (``tests/support/``), which delays
every chunk of data N ms in each direction (a round trip 2 x N ms longer: 25 gives the 50 ms of a
hosted forge on another continent; TCP and TLS handshakes are not modelled). With a list
(``0,25``) every row is measured once per delay, and a ``delay ms`` column comes first. The
queue is set up directly; the server's counters count the workers' requests all the same. The
server's listen backlog is 128, not Python's 5 (as in ``common.py``): with a burst of connections
the small backlog overflows, and behind the proxy a SYN-cookie connection may then be reset.

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
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from support import gitservers  # noqa: E402
from common import HTTP_BACKLOG, busiest, machine_line, table  # noqa: E402
from support.gitservers import DelayProxy, SmartHttpServer, make_bare  # noqa: E402

from distribute import init_remote  # noqa: E402


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def budget_env(budget: str, window_s: float) -> dict[str, str]:
    """The settings of ``--budget`` ``P/R`` (``none``: 0/0, unlimited) over ``window_s``."""
    pushes, _, reads = ("0/0" if budget == "none" else budget).partition("/")
    return {"DISTRIBUTE_PUSHES_PER_MIN": pushes, "DISTRIBUTE_READS_PER_S": reads or "0",
            "DISTRIBUTE_BUDGET_WINDOW_S": f"{window_s:g}"}


def start(url: str, tmp: Path, n: int, job_s: float, *opts: str,
          env_extra: dict[str, str] | None = None) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ, DISTRIBUTE_FLEET_JOB_S=str(job_s),
               PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
               **(env_extra or {}))
    logs = os.environ.get("FLEET_LOGS")  # a folder: each worker's --debug log kept there
    if logs:
        Path(logs).mkdir(parents=True, exist_ok=True)
        opts = ("--debug", *opts)
    return [subprocess.Popen([sys.executable, "-m", "distribute", "worker", url, "--run",
                              "fleet_jobs:sleep", "--name", f"f{i}", "--path", str(tmp / f"f{i}"),
                              *opts], env=env, stdout=subprocess.DEVNULL,
                             stderr=open(Path(logs) / f"f{i}.log", "wb") if logs  # noqa: SIM115
                             else subprocess.PIPE)
            for i in range(n)]


@contextmanager
def served(root: Path, delay_ms: float) -> Iterator[tuple[SmartHttpServer, str]]:
    """A smart-HTTP server for ``root`` and the workers' URL: direct, or through a DelayProxy."""
    make_bare(root)
    with SmartHttpServer(root) as server, ExitStack() as stack:
        url = server.url("remote.git")
        if delay_ms > 0:
            url = stack.enter_context(DelayProxy(server.port, delay_ms / 1000)).via(url)
        yield server, url


def drain(workers: int, per_worker: int, job_s: float, tmp: Path, delay_ms: float = 0,
          budget: str = "none", window_s: float = 60.0) -> list[object]:
    tag = f"{workers}" + (f"-d{delay_ms:g}" if delay_ms else "") + \
        ("" if budget == "none" else "-b" + budget.replace("/", "-"))
    root = tmp / f"srv{tag}"
    root.mkdir()
    with served(root, delay_ms) as (server, url):
        jobs = workers * per_worker
        init_remote(server.url("remote.git"), [f"job{i:04d}" for i in range(jobs)])  # direct
        req0, adv0, cpu0 = server.requests, server.advertisements, children_cpu()
        ops0 = {kind: len(server.operations(kind)) for kind in ("push", "read")}
        started, wall, begun = time.perf_counter(), time.time(), time.monotonic()
        procs = start(url, tmp / f"run{tag}", workers, job_s, "--idle-exit",
                      env_extra=budget_env(budget, window_s))
        for proc in procs:
            _, err = proc.communicate(timeout=3600)
            if proc.returncode != 0:
                raise SystemExit(f"a worker failed: {(err or b'').decode()[-2000:]}")
        took = time.perf_counter() - started
        last = subprocess.run(["git", "--git-dir", str(root / "remote.git"), "log", "-1",
                               "--format=%ct", "master"], capture_output=True, text=True)
        drained = min(took, float(last.stdout.strip()) + 0.5 - wall)  # (commit times: seconds)
        ideal = math.ceil(jobs / workers) * job_s
        requests, ads = server.requests - req0, server.advertisements - adv0
        cpu = children_cpu() - cpu0  # workers and the git processes they and the server ran
        pushes, reads = (server.operations(kind)[ops0[kind]:] for kind in ("push", "read"))
        return [workers, jobs, f"{job_s:g}", f"{drained:.1f}", f"{took:.1f}", f"{ideal:g}",
                f"{ideal / drained:.2f}", f"{jobs / drained:.2f}", f"{ads / jobs:.1f}",
                f"{requests / jobs:.1f}", f"{cpu / jobs:.2f}", f"{len(pushes) / jobs:.2f}",
                f"{len(pushes) * 60 / took:.0f}", busiest(pushes, window_s),
                f"{len(reads) / took:.1f}", busiest(reads, window_s / 6),
                busiest([at for at in pushes if at >= begun + window_s], window_s),
                busiest([at for at in reads if at >= begun + window_s], window_s / 6)]


def idle(workers: int, idle_s: float, tmp: Path, delay_ms: float = 0,
         settle_s: float | None = None) -> list[object]:
    tag = f"{workers}" + (f"-d{delay_ms:g}" if delay_ms else "")
    root = tmp / f"idle{tag}"
    root.mkdir()
    with served(root, delay_ms) as (server, url):
        init_remote(server.url("remote.git"), [])
        procs = start(url, tmp / f"idlerun{tag}", workers, 0)
        # start-up (every worker clones and looks once), then the idle back-off reaches its cap
        time.sleep(max(20.0, 2.0 * workers) + (settle_s if settle_s is not None else 64.0))
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
    p.add_argument("--idle-s", type=float, default=60, help="idle-fleet window (60 s; 0: skip)")
    p.add_argument("--settle-s", type=float, default=64,
                   help="idle fleet: wait this long after start-up before the window (64 s: "
                        "the back-off from 1 s reaches DISTRIBUTE_POLL_S's default 60 s)")
    p.add_argument("--idle-only", action="store_true", help="measure the idle fleet only")
    p.add_argument("--delay-ms", default="0",
                   help="added latency each way, ms; a list measures each (0; e.g. 0,25)")
    p.add_argument("--budget", default="none",
                   help="PUSHES_PER_MIN/READS_PER_S for the fleet, or none; a list measures "
                        "each (none; e.g. none,60/15)")
    p.add_argument("--budget-window-s", type=float, default=60.0,
                   help="the budget's window (60: pushes over 60 s, reads over 10 s)")
    args = p.parse_args(argv)
    budgets = args.budget.split(",")
    sizes = [int(x) for x in args.workers.split(",")]
    lengths = [float(x) for x in args.job_s.split(",")]
    lengths += [lengths[-1]] * (len(sizes) - len(lengths))
    delays = [float(x) for x in args.delay_ms.split(",")]
    if any(d < 0 for d in delays):
        p.error("--delay-ms must be >= 0")
    # as in common.py: Python's backlog of 5 overflows when many workers connect at once
    gitservers.ThreadingHTTPServer.request_queue_size = HTTP_BACKLOG
    shown = delays != [0]  # the "delay ms" column, unless only the default 0 is measured
    budgeted = budgets != ["none"]  # the "budget" column, likewise
    first = ["delay ms"] if shown else []
    window = args.budget_window_s

    def lead(delay: float) -> list[object]:
        return [f"{delay:g}"] if shown else []

    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="distribute-fleet-") as d:
        tmp = Path(d)
        if not args.idle_only:
            rows = [lead(delay) + ([budget] if budgeted else [])
                    + drain(n, args.jobs_per_worker, s, tmp, delay, budget, window)
                    for delay in delays for budget in budgets for n, s in zip(sizes, lengths)]
            print(table(first + (["budget"] if budgeted else [])
                        + ["workers", "jobs", "job s", "drained s", "exit s", "ideal s",
                           "efficiency", "jobs/s", "ref ads/job", "requests/job", "CPU s/job",
                           "pushes/job", "pushes/min", f"busiest {window:g} s", "reads/s",
                           f"busiest {window / 6:g} s", "later: pushes", "reads"], rows),
                  flush=True)
        if args.idle_s > 0:
            print(table(first + ["idle workers", "window s", "requests", "requests/s"],
                        [lead(delay) + idle(n, args.idle_s, tmp, delay, args.settle_s)
                         for delay in delays for n in sizes]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
