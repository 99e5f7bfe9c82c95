"""Prune: a remote the original design left behind, with a kept branch per done job, made lean.

    python benchmarks/prune.py [--transport file,http] [--branches 10000,20000] [--before N,...]

For each size, a remote in the first layout (flat ``updates/<slug>/``, one big ``done.txt``, a
branch per done job) is built in seconds with ``tests/support/bigremote.py``, then:

* **before** (sizes in ``--before``, on a copy of that remote): what the previous library's
  ``prune`` did, in plain git: pushes of 4 000 deletions, each ref named with its own
  ``--force-with-lease=<ref>:<sha>``, until every branch is gone or ``--before-limit`` seconds
  have passed (then the rest is extrapolated from the pace so far, marked ``~``);
* **after**: ``distribute upgrade`` then ``distribute prune`` (the command line, as a person runs
  them), each timed; then the refs and the ledger are checked (only master is left, ``done.txt``
  holds the recent records, the rest is in segments).

Printed side by side per size, with the ratio before / after. The machine's load is printed
first (a shared machine: run it alone).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import Servers, machine_line, table  # noqa: E402
from support import bigremote  # noqa: E402

from distribute.protocol import DONE_RECENT  # noqa: E402


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def before(url: str, bare: Path, work: Path, limit_s: float) -> tuple[float, int, bool]:
    """The previous library's branch deletion in plain git: ``(seconds, deleted, finished)``."""
    copy = work / "before-copy"
    git("init", "-q", str(copy))
    git("remote", "add", "origin", url, cwd=copy)
    git("fetch", "-q", "origin", "master", cwd=copy)
    refs = [line.split("\t") for line in git("ls-remote", "origin", "refs/heads/*",
                                              cwd=copy).splitlines()]
    refs = [(sha, ref) for sha, ref in refs if ref != "refs/heads/master"]
    started, deleted = time.perf_counter(), 0
    for start in range(0, len(refs), 4000):
        chunk = refs[start:start + 4000]
        subprocess.run(["git", "push", "--porcelain", "--atomic", "--no-verify", "--no-thin",
                        *(f"--force-with-lease={ref}:{sha}" for sha, ref in chunk), "origin",
                        *(f":{ref}" for _, ref in chunk)], cwd=copy, check=True,
                       capture_output=True)
        deleted += len(chunk)
        if time.perf_counter() - started > limit_s:
            break
    left = len(git("--git-dir", str(bare), "for-each-ref", "refs/heads/").splitlines()) - 1
    assert left == len(refs) - deleted, (left, len(refs), deleted)
    return time.perf_counter() - started, deleted, deleted == len(refs)


def after(url: str, bare: Path, env: dict[str, str], done: int) -> tuple[float, float]:
    """``distribute upgrade`` then ``prune``: their seconds; checks the remote afterwards."""
    times = []
    for command in ("upgrade", "prune"):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "distribute", command, url], env=env,
                             check=True, capture_output=True, text=True).stdout
        times.append(time.perf_counter() - started)
        print(f"  {command}: {out.strip()}", flush=True)
    heads = git("--git-dir", str(bare), "for-each-ref", "--format=%(refname)",
                "refs/heads/").split()
    assert heads == ["refs/heads/master"], heads[:5]
    recent = git("--git-dir", str(bare), "show", "master:done.txt").count("\n")
    segments = git("--git-dir", str(bare), "ls-tree", "--name-only", "master", "done/").split()
    assert DONE_RECENT <= recent < 2 * DONE_RECENT and recent + DONE_RECENT * len(segments) == done
    return times[0], times[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transport", default="file,http", help="file, daemon, http (file,http)")
    p.add_argument("--branches", default="10000,20000", help="sizes: done jobs, one branch each")
    p.add_argument("--before", default="10000,20000",
                   help="sizes at which to measure the previous library's way too ('' for none)")
    p.add_argument("--before-limit", type=float, default=300.0,
                   help="stop the previous way after this many seconds and extrapolate (300)")
    p.add_argument("--packed", action="store_true",
                   help="pack the remote's refs first (git gc does that on a real server)")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.branches.split(",") if x]
    old_sizes = {int(x) for x in args.before.split(",") if x}
    print(machine_line(), flush=True)
    rows = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="distribute-prune-")))
        servers = Servers(tmp / "srv", stack)
        for kind in args.transport.split(","):
            for size in sizes:
                name = f"flat{kind}{size}.git"
                bare = servers.root / name
                bigremote.build(bare, size, queued=20, layout=1, segmented=False, branches=True)
                if args.packed:
                    git("--git-dir", str(bare), "pack-refs", "--all", "--prune")
                old = ""
                if size in old_sizes:
                    shutil.copytree(bare, servers.root / f"old-{name}", symlinks=True)
                    url = servers.remote(kind, f"old-{name}", create=False).url
                    seconds, deleted, finished = before(url, servers.root / f"old-{name}",
                                                        tmp / f"w-{name}", args.before_limit)
                    estimate = seconds if finished else seconds * (size / deleted)
                    old = f"{'' if finished else '~'}{estimate:.0f} s"
                    print(f"{kind} {size}: before {old} ({deleted} deleted in {seconds:.0f} s)",
                          flush=True)
                env = dict(os.environ, DISTRIBUTE_CACHE_DIR=str(tmp / f"cache-{name}"))
                url = servers.remote(kind, name, create=False).url
                upgrade_s, prune_s = after(url, bare, env, size)
                ratio = "" if not old else f"{float(old.lstrip('~').split()[0]) / prune_s:.1f}"
                rows.append([kind, size, "packed" if args.packed else "loose", old,
                             f"{upgrade_s:.1f} s", f"{prune_s:.1f} s",
                             f"{upgrade_s + prune_s:.1f} s", ratio])
                print(table(["transport", "branches", "refs", "before: prune", "upgrade",
                             "prune", "upgrade + prune", "prune before / after"], rows),
                      flush=True)
    print(machine_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
