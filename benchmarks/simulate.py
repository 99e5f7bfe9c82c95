"""The protocol under a seeded fault plan, seed after seed (issue 23's simulation).

    python benchmarks/simulate.py --seed 123 [--workers 4 --jobs 12]   # replay one, with its log
    python benchmarks/simulate.py --seeds 0..999                         # a range
    python benchmarks/simulate.py --count 5000 --start 0                 # the same, by count

Each seed makes a bare ``file://`` remote, queues ``--jobs`` jobs and runs ``--workers`` in-process
workers on it to the end, while a fault plan drawn from the seed refuses, drops, answers "failed"
to, answers "ok" without running (misreports: on such a seed the workers read their pushes back),
stalls and kills their git calls behind the fault seam (``distribute/repo/faults.py``). Then
the invariants are checked on the remote: each job done exactly once or failed as designed, each
result on master by the worker its record names, nothing queued or running, no worker told "no
job" unless its next-job function said so, no worker crashed or hung, ``git fsck`` clean. See
``tests/support/simulation.py``.

Prints one block per failing seed (the violations and the one command that replays it) and a
summary: seeds run, faults injected by kind, violations by invariant, seeds/s. ``--seed`` prints
the seed's captured log too and keeps its remote in ``--keep DIR`` if given. Exits 1 if any seed
failed.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.simulation import run_seeds  # noqa: E402


def _seeds(args: argparse.Namespace) -> list[int]:
    if args.seed is not None:
        return [args.seed]
    if args.seeds:
        first, _, last = args.seeds.partition("..")
        return list(range(int(first), int(last or first) + 1))
    return list(range(args.start, args.start + args.count))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--seed", type=int, help="replay one seed, printing its log")
    parser.add_argument("--seeds", help="a range of seeds, A..B (both included)")
    parser.add_argument("--count", type=int, default=100, help="seeds to run (default 100)")
    parser.add_argument("--start", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--workers", type=int, default=4, help="workers per seed (default 4)")
    parser.add_argument("--jobs", type=int, default=12, help="jobs per seed (default 12)")
    parser.add_argument("--no-faults", action="store_true", help="run without a fault plan")
    parser.add_argument("--no-kills", action="store_true", help="faults, but no worker killed")
    parser.add_argument("--stagger", type=float, default=0.0,
                        help="seconds between two workers' starts (default 0: all at once)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds before a seed's run counts as a hang (default 60)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="seeds run at once, each in a process of its own (default 1)")
    parser.add_argument("--every", type=int, default=500,
                        help="print the summary so far every N seeds (default 500)")
    parser.add_argument("--keep", type=Path, help="with --seed: run in DIR and keep it")
    parser.add_argument("--logs", type=Path, help="write each failing seed's log to DIR/seed-N.log")
    args = parser.parse_args()
    faults: collections.Counter[str] = collections.Counter()
    violations: collections.Counter[str] = collections.Counter()
    failed: list[int] = []
    calls = ran = 0
    started = time.monotonic()
    seeds = _seeds(args)
    keep = args.keep if args.seed is not None else None
    for result in run_seeds(seeds, 1 if keep else args.parallel, workers=args.workers,
                            jobs=args.jobs, faults_on=not args.no_faults, kills=not args.no_kills,
                            timeout_s=args.timeout, keep=keep, stagger_s=args.stagger):
        seed = result.seed
        faults.update(result.faults)
        violations.update({name for name, _ in result.violations})
        calls += result.git_calls
        if args.seed is not None:
            print(result.log)
            print(f"seed {seed}: {result.duration_s:.1f}s, faults {dict(result.faults)}, "
                  f"{result.git_calls} git calls")
        if not result.ok:
            failed.append(seed)
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                (args.logs / f"seed-{seed}.log").write_text(
                    result.log + "\n" + result.message() + "\n", encoding="utf-8")
            print(result.message(), flush=True)
        ran += 1
        if ran % args.every == 0 or ran == len(seeds):
            took = time.monotonic() - started
            print(f"seeds run: {ran} of {len(seeds)} ({ran / took:.2f} seeds/s, {took:.0f}s); "
                  f"failed: {len(failed)}{' ' + str(failed[:50]) if failed else ''}")
            print(f"git calls: {calls}; faults injected: {sum(faults.values())} "
                  + str(dict(sorted(faults.items()))))
            print("violations by invariant (seeds): "
                  + (str(dict(violations.most_common())) if violations else "none"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
