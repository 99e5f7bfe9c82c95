"""A fleet whose pushes fail at random: how long the drain takes, and whether it stays exactly once.

    python benchmarks/faulty_fleet.py [--workers 12] [--jobs 150] [--seed 1]
                                      [--applied-then-dropped 0.10] [--dropped 0.05] [--busy 0.05]

One smart-HTTP server on 127.0.0.1 (``git http-backend``) and ``--workers`` processes of
``distribute worker --idle-exit`` on ``--jobs`` jobs that sleep 0.2-0.6 s each, twice side by side:
without faults, then with every worker's pushes faulted at random behind the fault seam
(``distribute/repo/faults.py``): a share applied and then the connection dropped (the answer is
lost), a share dropped before the server saw it, a share answered ``[remote rejected] (failed)``
for every ref (a host's busy ref transaction). Each worker draws its faults from ``--seed`` and its
name. Reported per run: drain seconds, the ratio to the fault-free drain, faults injected, and the
invariants checked on the remote afterwards (each job done exactly once, each result written by
the worker its record names, nothing queued or running, every worker exited 0 without a traceback,
``git fsck`` clean). Issue 23's target: the faulted drain within 4x the fault-free one.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from support.faultplan import HUNG_UP, busy_answer  # noqa: E402
from support.gitservers import SmartHttpServer, make_bare  # noqa: E402
from support.invariants import check_remote  # noqa: E402
from support.simulation import Config  # noqa: E402

from distribute import init_remote  # noqa: E402
from distribute.repo import faults  # noqa: E402


def job(job: str, worker: Any) -> None:
    """The fleet's job: sleep 0.2-0.6 s, then write a result naming the worker and the job."""
    time.sleep(random.uniform(0.2, 0.6))
    Path(worker.job_dir, "result.txt").write_text(f"{worker.name} {job}\n")


class PushFaults:
    """Faults on this process's pushes, drawn from a seed; counts written to a file at exit."""

    def __init__(self, seed: str, rates: tuple[float, float, float], counts: Path) -> None:
        self.rng, self.rates, self.counts = random.Random(seed), rates, counts
        self.seen: collections.Counter[str] = collections.Counter()
        self.mutex = threading.Lock()

    def around(self, process: Any, args: list[str], run: Callable[[], Any]) -> Any:
        if faults.command_of(args) != "push":
            return run()
        applied_then_dropped, dropped, busy = self.rates
        with self.mutex:
            draw = self.rng.random()
            kind = ("applied-then-dropped" if draw < applied_then_dropped else
                    "dropped" if draw < applied_then_dropped + dropped else
                    "busy" if draw < applied_then_dropped + dropped + busy else "none")
            self.seen[kind] += 1
            self.counts.write_text(json.dumps(self.seen))
        if kind == "applied-then-dropped":
            run()
            return 128, "", HUNG_UP[0]
        if kind == "dropped":
            return 128, "", HUNG_UP[0]
        if kind == "busy":
            return 1, busy_answer(args), "error: failed to push some refs\n"
        return run()


def worker_main(argv: list[str]) -> int:
    """``faulty_fleet.py --worker SEED A D B COUNTS -- <distribute worker arguments>``."""
    seed, after, before, busy, counts = argv[:5]
    name = argv[argv.index("--name") + 1]
    faults.install(PushFaults(f"{seed}:{name}", (float(after), float(before), float(busy)),
                              Path(counts)))
    from distribute.cli import main
    return main(argv[6:])


def run(tmp: Path, workers: int, jobs: int, seed: int, rates: tuple[float, float, float],
        ) -> dict[str, Any]:
    """One drain; its figures and the invariants that failed."""
    root = tmp / f"srv-{'-'.join(map(str, rates))}"
    root.mkdir()
    bare = make_bare(root)
    names = [f"job{i:03d}" for i in range(jobs)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(HERE), str(HERE.parent / "tests"), os.environ.get("PYTHONPATH")])))
    with SmartHttpServer(root) as server:
        url = server.url("remote.git")
        init_remote(url, names)
        started = time.perf_counter()
        procs = []
        for i in range(workers):
            name, counts = f"w{i:02d}", root / f"w{i:02d}.faults.json"
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--worker", str(seed), *map(str, rates), str(counts),
                 "--", "worker", url, "--run", "faulty_fleet:job", "--idle-exit", "--name", name,
                 "--path", str(root / name)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        errors = [proc.communicate(timeout=1800)[1].decode() for proc in procs]
        took = time.perf_counter() - started
    injected: collections.Counter[str] = collections.Counter()
    for counts in root.glob("*.faults.json"):
        injected.update(json.loads(counts.read_text()))
    violations = check_remote(bare, Config(seed, workers=workers, jobs=jobs), names)
    violations += [("worker exit", f"w{i:02d} exited {p.returncode}") for i, p in
                   enumerate(procs) if p.returncode != 0]
    violations += [("traceback", f"w{i:02d}") for i, err in enumerate(errors)
                   if "Traceback" in err]
    for i, proc in enumerate(procs):
        if proc.returncode != 0:
            print(f"w{i:02d} said: {errors[i][-1500:]}", file=sys.stderr)
    return {"took": took, "injected": injected, "violations": violations}


def main() -> int:
    if sys.argv[1:2] == ["--worker"]:
        return worker_main(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--jobs", type=int, default=150)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--applied-then-dropped", type=float, default=0.10)
    p.add_argument("--dropped", type=float, default=0.05)
    p.add_argument("--busy", type=float, default=0.05)
    args = p.parse_args()
    faulted = (args.applied_then_dropped, args.dropped, args.busy)
    ok = True
    with tempfile.TemporaryDirectory(prefix="faulty-fleet-") as tmp:
        base = None
        for rates in ((0.0, 0.0, 0.0), faulted):
            result = run(Path(tmp), args.workers, args.jobs, args.seed, rates)
            base = base or result["took"]
            pushes = sum(result["injected"].values())
            print(f"faults {rates}: {args.workers} workers x {args.jobs} jobs drained in "
                  f"{result['took']:.1f} s ({result['took'] / base:.2f}x the fault-free run); "
                  f"{pushes} pushes, injected {dict(result['injected'])}; violations: "
                  f"{result['violations'] or 'none'}", flush=True)
            ok = ok and not result["violations"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
