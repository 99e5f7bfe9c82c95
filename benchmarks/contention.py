"""Contention: N worker processes drain one queue of empty jobs.

    python benchmarks/contention.py [--transport http] [--workers 1,2,4,8] [--jobs 120]
                                    [--delay-ms 0,25]
    python benchmarks/contention.py --workers 1,2,4,8,16,32 --jobs 400      # the issue's run

For each N, a fresh remote on 127.0.0.1 with ``--jobs`` queued jobs and N processes, each with
its own clone (made before the clock starts), running the loop

    job = w.get_next_job(queue_jobs_func)
    while job:
        job = w.finish_job(queue_jobs_func)

Reported per N: wall time from "go" to the last worker leaving, jobs/s, jobs per worker (min /
max: a worker with 0 jobs starved), lock acquisitions, lock waits (``ls-remote`` polls that saw
the lock held, the ``Worker._lock.waits`` counter) and rejected lock pushes per acquisition,
how busy the lock was (share of the wall time it was held, the median hold, and the median
time it stood free before being retaken by the releasing worker or taken by another one), the
holder's fetch and final atomic push (they slow down when the server is busy answering polls),
the time the workers spent in network and in local git processes per job, and CPU: seconds of
CPU used by the workers, their git processes and the server (``git daemon``'s children are not
counted) as a share of the machine's cores over the wall time (near 100 %: the machine is the
limit, not the protocol). ``DISTRIBUTE_POLL_MAX_S`` is passed through (``--poll``).

``--delay-ms N`` (http only) puts the workers behind ``DelayProxy`` (``tests/support/``), which
delays every chunk of data N ms in each direction (a round trip 2 x N ms longer; TCP and
TLS handshakes are not modelled). With a list (``0,25``) every row is measured once per delay,
and a ``delay ms`` column comes first.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from contextlib import ExitStack
from itertools import pairwise
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Remote,
    Servers,
    machine_line,
    median,
    ms,
    now,
    parse_transports,
    table,
    workdir,
)
from support.gitservers import DelayProxy

LOCK_REF = "refs/distribute/lock"


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(args: argparse.Namespace) -> int:
    import logging

    from distribute import queue_jobs_func, worker_from_url

    # warnings (lock broken, a waiter skipped as idle, ...) go to stderr, into the output
    logging.getLogger("distribute").setLevel(logging.WARNING)
    w = worker_from_url(args.url, Path(args.tmp) / args.name, args.name)
    stats = {"acquires": 0, "take_rejected": 0, "jobs": 0, "holds": [], "release_push": [],
             "fetch": []}
    lock, clone = w._lock, w.clone
    orig_acq, orig_push = lock.acquire, clone.push_result

    taken = [0.0]

    def acquire(*args, **kwargs):  # the library may pass (request, tip); may be served instead
        stats["acquires"] += 1
        orig_acq(*args, **kwargs)
        taken[0] = now()

    def push(updates, atomic=True):  # (push() goes through push_result() too)
        t = now()
        result = orig_push(updates, atomic)
        ok = result.applied
        if ok and any(u.ref == LOCK_REF and u.new is None for u in updates):
            stats["release_push"].append(now() - t)
        if not ok and any(u.ref == LOCK_REF and u.new and u.expect == "" for u in updates):
            stats["take_rejected"] += 1
        if ok and any(u.ref == LOCK_REF and u.new is None for u in updates):
            stats["holds"].append((taken[0], now()))  # lock held from take to release
        return result

    orig_run = clone._run
    stats.update(net=0.0, local=0.0, net_n=0, local_n=0)

    def run(argv, *rest, **kwargs):  # Clone._run(args, index=None, stdin=None)
        t = now()
        res = orig_run(argv, *rest, **kwargs)
        key = "net" if next((a for a in argv if not a.startswith("-") and "=" not in a), "") in (
            "push", "fetch", "ls-remote", "clone") else "local"
        stats[key] += now() - t
        stats[key + "_n"] += 1
        if "fetch" in argv:
            stats["fetch"].append(now() - t)
        return res

    lock.acquire, clone.push_result, clone._run = acquire, push, run
    waits0, calls0 = lock.waits, clone.network_calls
    stats.update(net=0.0, local=0.0, net_n=0, local_n=0)
    cpu0 = cpu_self() + cpu_children()
    print(json.dumps({"ready": cpu0}), flush=True)
    sys.stdin.readline()
    t0 = now()
    job = w.get_next_job(queue_jobs_func)
    while job is not None:
        stats["jobs"] += 1
        job = w.finish_job(queue_jobs_func)
    t1 = now()
    w.close()
    stats.update(t0=t0, t1=t1, waits=lock.waits - waits0, calls=clone.network_calls - calls0,
                 cpu=cpu_self() + cpu_children() - cpu0)
    print(json.dumps(stats), flush=True)
    return 0


def run(servers: Servers, kind: str, tmp: Path, workers: int, jobs: int, poll: str,
        delay_ms: float = 0) -> dict:
    from distribute import init_remote

    tag = f"{kind}-{workers}" + (f"-d{delay_ms:g}" if delay_ms else "")
    remote = servers.remote(kind, f"c-{tag}.git")
    remote.apply_env()  # init_remote runs git here (GIT_SSH_COMMAND for ssh)
    init_remote(remote.url, [f"job{i}" for i in range(jobs)])  # directly, never delayed
    if delay_ms <= 0:
        return measure(remote, remote.url, tmp / f"run-{tag}", workers, poll)
    port = urlsplit(remote.url).port
    assert port is not None
    with DelayProxy(port, delay_ms / 1000) as proxy:  # the workers' traffic, delayed
        return measure(remote, proxy.via(remote.url), tmp / f"run-{tag}", workers, poll)


def measure(remote: Remote, url: str, run_dir: Path, workers: int, poll: str) -> dict:
    """Start the workers on ``url`` (``remote``'s, or a proxy's), let them drain, sum it up."""
    env = dict(os.environ, **{k: v for k, v in remote.env.items() if k == "GIT_SSH_COMMAND"})
    if poll:
        env["DISTRIBUTE_POLL_MAX_S"] = poll
    run_dir.mkdir()
    procs = [subprocess.Popen([sys.executable, __file__, "--child", "--url", url,
                               "--tmp", str(run_dir), "--name", f"w{i:02d}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for i in range(workers)]
    setup_cpu = 0.0
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line.startswith("{"):
            raise SystemExit("a worker did not start")
        setup_cpu += json.loads(line)["ready"]
    cpu0 = cpu_self() + cpu_children()
    t0 = now()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline()
        if p.wait(timeout=3600) != 0 or not line:
            raise SystemExit("a worker failed")
        results.append(json.loads(line))
    wall = max(r["t1"] for r in results) - t0
    # everything ran below this process: the workers (reaped: their whole life, with their git
    # children) and the servers (http-backend, daemon children); less the workers' set-up
    cpu = cpu_self() + cpu_children() - cpu0 - setup_cpu
    per = [r["jobs"] for r in results]
    holds = sorted((a, b, i) for i, r in enumerate(results) for a, b in r["holds"])
    gaps_same = [n[0] - p[1] for p, n in pairwise(holds) if n[2] == p[2]]
    gaps_other = [n[0] - p[1] for p, n in pairwise(holds) if n[2] != p[2]]
    acq = sum(r["acquires"] for r in results)
    return {
        "workers": workers, "wall": wall, "jobs": sum(per), "rate": sum(per) / wall,
        "min": min(per), "max": max(per), "starved": sum(1 for n in per if n == 0),
        "acquires": acq, "waits": sum(r["waits"] for r in results) / acq,
        "rejected": sum(r["take_rejected"] for r in results) / acq,
        "calls": sum(r["calls"] for r in results) / max(1, sum(per)),
        "local": sum(r["local"] for r in results) / max(1, sum(per)),
        "local_n": sum(r["local_n"] for r in results) / max(1, sum(per)),
        "net": sum(r["net"] for r in results) / max(1, sum(per)),
        "busy": sum(b - a for a, b, _ in holds) / wall,
        "hold": median(b - a for a, b, _ in holds),
        "retake": len(gaps_same) / max(1, len(gaps_same) + len(gaps_other)),
        "gap_same": median(gaps_same), "gap_other": median(gaps_other),
        "fetch": median(x for r in results for x in r["fetch"]),
        "release_push": median(x for r in results for x in r["release_push"]),
        "cpu": cpu / (wall * (os.cpu_count() or 1)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transport", default="http",
                   help="comma-separated: file, daemon, http, ssh, ssh-reuse (http)")
    p.add_argument("--workers", default="1,2,4,8", help="worker counts (1,2,4,8; issue: up to 32)")
    p.add_argument("--jobs", type=int, default=120, help="queued empty jobs (120; issue: 400)")
    p.add_argument("--poll", default="", help="DISTRIBUTE_POLL_MAX_S for the workers (default 1.0)")
    p.add_argument("--delay-ms", default="0",
                   help="http only: added latency each way, ms; a list measures each (0; 0,25)")
    p.add_argument("--dir", help="keep remotes and copies in DIR")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--url", "--tmp", "--name"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    counts = [int(x) for x in args.workers.split(",")]
    kinds = parse_transports(args.transport)
    delays = [float(x) for x in args.delay_ms.split(",")]
    if any(d < 0 for d in delays):
        p.error("--delay-ms must be >= 0")
    if any(delays) and set(kinds) != {"http"}:
        p.error("--delay-ms applies to the http transport only (--transport http)")
    lead = ["delay ms"] if delays != [0] else []  # no column when only the default 0 is measured
    print(machine_line())
    print(f"{args.jobs} empty jobs, DISTRIBUTE_POLL_MAX_S="
          f"{args.poll or os.environ.get('DISTRIBUTE_POLL_MAX_S', '1.0 (default)')}")
    headers = lead + [
        "transport", "workers", "wall s", "jobs/s", "vs 1", "jobs min/max", "starved",
        "waits/acq", "lost takes/acq", "net calls/job", "net ms/job",
        "local git/job", "local ms/job", "lock busy", "hold ms", "fetch ms", "rel. push ms",
        "retakes", "gap same ms", "gap other ms", "CPU"]
    rows = []
    with workdir("bench-contention-", args.dir) as tmp, ExitStack() as stack:
        servers = Servers(tmp / "srv", stack)
        for kind, delay in ((k, d) for k in kinds for d in delays):
            base = None
            for n in counts:
                r = run(servers, kind, tmp, n, args.jobs, args.poll, delay)
                base = base or (r["rate"] if n == 1 else None)
                rows.append([f"{delay:g}"] * len(lead) + [
                             kind, n, f"{r['wall']:.1f}", f"{r['rate']:.2f}",
                             f"{r['rate'] / base:.2f}" if base else "-",
                             f"{r['min']}/{r['max']}", r["starved"], f"{r['waits']:.1f}",
                             f"{r['rejected']:.2f}", f"{r['calls']:.1f}", ms(r["net"]),
                             f"{r['local_n']:.0f}", ms(r["local"]), f"{r['busy']:.0%}",
                             ms(r["hold"]), ms(r["fetch"]), ms(r["release_push"]),
                             f"{r['retake']:.0%}", ms(r["gap_same"]),
                             ms(r["gap_other"]), f"{r['cpu']:.0%}"])
                print(table(headers, rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(headers, rows))
    print("\nnet / local: git processes that talked to the remote / local ones, per job, and the "
          "wall time\nthe workers spent in them (summed over workers)")
    print("lock busy: share of the wall time some worker held the lock; hold: median take -> "
          "release;\nfetch / rel. push: medians of the holder's fetch and of its final atomic push;\nretakes: share of holds that followed a hold by the same worker; gap same / "
          "other: median time the\nlock stood free between a release and the next take by the same"
          " / another worker")
    print("\ntargets: 8 workers >= 1.0 x the 1-worker rate; with 32 workers every worker gets jobs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
