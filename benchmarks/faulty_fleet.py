"""A fleet whose pushes fail at random: how long the drain takes, and whether it stays exactly once.

    python benchmarks/faulty_fleet.py [--workers 12] [--jobs 150] [--seed 1]
                                      [--applied-then-dropped 0.10] [--dropped 0.05] [--busy 0.05]
                                      [--misreported 0.0] [--verify auto[,never...]]
                                      [--timeout 1800]

One smart-HTTP server on 127.0.0.1 (``git http-backend``) and ``--workers`` processes of
``distribute worker --idle-exit`` on ``--jobs`` jobs that sleep 0.2-0.6 s each, twice side by side:
without faults, then with the server failing push requests at random, drawn from ``--seed``
(``tests/support/faultyhttp.py``): a share applied and then the connection closed without an
answer, a share closed before the push reached the backend, a share answered ``ng <ref> failed``
for every ref (a host's busy ref transaction: git prints ``[remote rejected] (failed)``), and
with ``--misreported`` a share not applied yet answered ``ok`` for every ref (a host that
misreports: GitLab/Gitaly has answered success for atomic pushes whose ref updates all failed). The
workers are unchanged ``distribute worker`` processes. Reported per run: drain seconds, the ratio
to the fault-free drain, faults injected, and the invariants checked on the remote afterwards
(each job done exactly once, each result written by the worker its record names, nothing queued
or running, every worker exited 0 without a traceback, ``git fsck`` clean). Issue 23's target:
the faulted drain within 4x the fault-free one.

``--verify`` runs both drains once per ``DISTRIBUTE_VERIFY_PUSHES`` mode given (``never``: trust
every "ok", as before pushes were read back; ``auto``: read back, over HTTP), side by side (the
fault-free drain alone when every rate is 0), after timing one compare-and-swap push in each mode
(median of 20, and the reads it cost): the cost of the read-backs is the difference in push time,
in drain time and in reads per job (the host's count of fetches and ls-remotes, as it would bill
them).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from support.faultyhttp import FaultyHttpServer, PushFaultRates  # noqa: E402
from support.gitservers import make_bare  # noqa: E402
from support.invariants import check_remote  # noqa: E402
from support.simulation import Config  # noqa: E402

from distribute import init_remote  # noqa: E402
from distribute.repo import Clone, RefUpdate  # noqa: E402


def job(job: str, worker: Any) -> None:
    """The fleet's job: sleep 0.2-0.6 s, then write a result naming the worker and the job."""
    time.sleep(random.uniform(0.2, 0.6))
    Path(worker.job_dir, "result.txt").write_text(f"{worker.name} {job}\n")


def run(tmp: Path, workers: int, jobs: int, seed: int, rates: PushFaultRates,
        timeout: float = 1800, verify: str = "auto") -> dict[str, Any]:
    """One drain; its figures and the invariants that failed."""
    root = Path(tempfile.mkdtemp(dir=tmp, prefix=f"srv-{verify}-"))
    bare = make_bare(root)
    names = [f"job{i:03d}" for i in range(jobs)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(HERE), str(HERE.parent / "tests"), os.environ.get("PYTHONPATH")])),
        DISTRIBUTE_VERIFY_PUSHES=verify)
    with FaultyHttpServer(root, PushFaultRates(0, 0, 0), seed=seed) as server:
        url = server.url("remote.git")
        init_remote(url, names)
        server.rates = rates  # the set-up's pushes are not faulted
        reads_before = len(server.operations("read"))
        started = time.perf_counter()
        procs = []
        for i in range(workers):
            name = f"w{i:02d}"
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distribute", "worker", url, "--run", "faulty_fleet:job",
                 "--idle-exit", "--name", name, "--path", str(root / name)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        errors = []
        for proc in procs:
            try:
                errors.append(proc.communicate(
                    timeout=max(1.0, timeout - (time.perf_counter() - started)))[1].decode())
            except subprocess.TimeoutExpired:  # stuck: stopped, and counted as a violation
                proc.kill()
                errors.append("(stuck: killed at the timeout)\n" + proc.communicate()[1].decode())
        took = time.perf_counter() - started
        injected = server.injected
        reads = len(server.operations("read")) - reads_before
    violations = check_remote(bare, Config(seed, workers=workers, jobs=jobs), names)
    violations += [("worker exit", f"w{i:02d} exited {p.returncode}") for i, p in
                   enumerate(procs) if p.returncode != 0]
    violations += [("traceback", f"w{i:02d}") for i, err in enumerate(errors)
                   if "Traceback" in err]
    for i, proc in enumerate(procs):
        if proc.returncode != 0:
            print(f"w{i:02d} said: {errors[i][-1500:]}", file=sys.stderr)
    return {"took": took, "injected": injected, "violations": violations, "reads": reads}


def push_cost(tmp: Path, modes: list[str], pushes: int = 20) -> None:
    """Time one compare-and-swap push of a scratch ref (created, then deleted: ``pushes`` in all)
    in each verification mode, against a fault-free smart-HTTP server; print the median and the
    reads each push cost the host."""
    root = Path(tempfile.mkdtemp(dir=tmp, prefix="push-cost-"))
    make_bare(root)
    with FaultyHttpServer(root, PushFaultRates(0, 0, 0)) as server:
        init_remote(server.url("remote.git"), ["j"])
        clone = Clone.clone(server.url("remote.git"), root / "copy")
        head = clone.resolve("origin/master") or ""
        for mode in dict.fromkeys(modes):
            os.environ["DISTRIBUTE_VERIFY_PUSHES"] = mode
            reads, times = len(server.operations("read")), []
            for i in range(pushes):
                update = RefUpdate("refs/heads/scratch", None if i % 2 else head,
                                   expect=head if i % 2 else "")
                started = time.perf_counter()
                assert clone.push([update])
                times.append((time.perf_counter() - started) * 1000)
            print(f"DISTRIBUTE_VERIFY_PUSHES={mode}: one push over loopback HTTP "
                  f"{statistics.median(times):.0f} ms (median of {pushes}), "
                  f"{(len(server.operations('read')) - reads) / pushes:.1f} reads per push",
                  flush=True)
        os.environ.pop("DISTRIBUTE_VERIFY_PUSHES", None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--jobs", type=int, default=150)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--applied-then-dropped", type=float, default=0.10)
    p.add_argument("--dropped", type=float, default=0.05)
    p.add_argument("--busy", type=float, default=0.05)
    p.add_argument("--misreported", type=float, default=0.0,
                   help="share of pushes not applied yet answered ok")
    p.add_argument("--verify", default="auto",
                   help="DISTRIBUTE_VERIFY_PUSHES of the workers; several, comma-separated: "
                        "both drains once per mode")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds a drain may take; workers still running then are stopped")
    args = p.parse_args()
    faulted = PushFaultRates(args.applied_then_dropped, args.dropped, args.busy, args.misreported)
    ok = True
    drains = [PushFaultRates(0, 0, 0)] + ([faulted] if faulted != PushFaultRates(0, 0, 0) else [])
    with tempfile.TemporaryDirectory(prefix="faulty-fleet-") as tmp:
        push_cost(Path(tmp), args.verify.split(","))
        for verify in args.verify.split(","):
            base = None
            for rates in drains:
                result = run(Path(tmp), args.workers, args.jobs, args.seed, rates, args.timeout,
                             verify)
                base = base or result["took"]
                pushes = sum(result["injected"].values())
                print(f"DISTRIBUTE_VERIFY_PUSHES={verify}, faults {rates}:\n  {args.workers} "
                      f"workers x {args.jobs} jobs drained in {result['took']:.1f} s "
                      f"({result['took'] / base:.2f}x the fault-free run); {pushes} pushes "
                      f"({pushes / args.jobs:.2f}/job), {result['reads']} reads "
                      f"({result['reads'] / args.jobs:.2f}/job), injected "
                      f"{dict(result['injected'])}; violations: "
                      f"{result['violations'] or 'none'}", flush=True)
                ok = ok and not result["violations"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
