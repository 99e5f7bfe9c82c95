"""``distribute report`` on a big remote: 100 000 done jobs by default (target: <= 3 s).

    python benchmarks/report.py [--jobs 100000] [--workers 16] [--transport file] [--runs 3]

The remote is written directly with ``git fast-import`` (no job is run), as the library leaves it
after ``--jobs`` done jobs by ``--workers`` workers, each finishing a job and claiming the next in
one lock hold (``finish_job(next)``), with job times of 20-200 s and 0.5 % failures:

* ``master``'s first-parent history: ``initialise the distribute job ledger``, ``bench added N
  jobs``, then for each job ``<w> took job X`` and ``<w> finished job X`` (a ``--no-ff`` merge of
  the job branch) or ``<w> failed job X: <reason>``, in time order, committed by the worker at the
  simulated times; the claim commits rewrite ``running.txt``;
* a kept job branch ``<w>/<job>`` per job with one ``<w> update on job X`` commit;
* the tip holds the final ledger (``jobs.txt`` with ``--queued`` jobs, ``running.txt`` with one
  job per worker, ``done.txt``, ``failed.txt``) and ``updates/<job>/result.txt`` of every done job.

One shortcut: the commits before the tip carry the ledger files other than ``running.txt``
unchanged, and no ``updates/`` (the library rewrites ``done.txt`` and the ``updates/`` tree in each
of them, which makes writing such a remote quadratic). The report reads the tip's ledger and the
commits' times and subjects only, and fetches history as commits without trees, so the figures
do not depend on it. The remote is repacked with bitmaps, as a hosting service keeps it.

Measured: the command as a user runs it (``python -m distribute report URL -o FILE``, wall time):
the first run with an empty cache (slim clone + the one-time history fetch) and ``--runs`` runs
with the cache warm; then, in this process, the phases of one warm run.
"""
from __future__ import annotations

import argparse
import heapq
import os
import random
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BASE_ENV, Servers, du, git, machine_line, mb, median, table, workdir

FAIL_RATE = 0.005


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def simulate(jobs: int, workers: int, seed: int = 1) -> tuple[list[tuple], float]:
    """Events ``(time, kind, worker, job, reason)`` in time order, for ``jobs`` done jobs (plus
    failures) and one job still running per worker; and the total span in seconds."""
    rnd = random.Random(seed)
    heap: list[tuple[float, int, str]] = []
    events: list[tuple] = []
    names = [f"gpu-{k:02d}" for k in range(workers)]
    n = done = 0
    for k, w in enumerate(names):  # workers start a few seconds apart
        events.append((k * 3.0, "took", w, f"job-{n:06d}", ""))
        heapq.heappush(heap, (k * 3.0 + rnd.uniform(20, 200), n, w))
        n += 1
    while done < jobs:
        t, j, w = heapq.heappop(heap)
        if rnd.random() < FAIL_RATE:
            events.append((t, "failed", w, f"job-{j:06d}", f"ValueError: bad input in job-{j:06d}"))
        else:
            events.append((t, "finished", w, f"job-{j:06d}", ""))
            done += 1
        events.append((t, "took", w, f"job-{n:06d}", ""))
        heapq.heappush(heap, (t + rnd.uniform(20, 200), n, w))
        n += 1
    events.sort(key=lambda e: e[0])  # stable: a finish stays before the claim of the same hold
    return events, events[-1][0]


def build(bare: Path, jobs: int, workers: int, queued: int) -> tuple[float, int]:
    """Write the remote into the empty bare repo ``bare``; return (seconds, commits)."""
    started = time.perf_counter()
    events, span = simulate(jobs, workers)
    t0 = int(time.time() - span - 60)  # the last event a minute ago: a live run
    claimed = sum(1 for e in events if e[1] == "took")
    queue = [f"job-{i:06d}" for i in range(claimed + queued)]
    proc = subprocess.Popen(["git", "fast-import", "--quiet", "--depth=50"], cwd=bare,
                            stdin=subprocess.PIPE, env=BASE_ENV)
    out = proc.stdin
    assert out is not None

    def data(b: bytes) -> None:
        out.write(b"data %d\n%s\n" % (len(b), b))

    def commit(ref: str, mark: int, who: str, when: float, message: str) -> None:
        out.write(b"commit %s\nmark :%d\ncommitter %s <%s@distribute> %d +0000\n"
                  % (ref.encode(), mark, who.encode(), who.encode(), t0 + int(when)))
        data(message.encode())

    commit("refs/heads/master", 1, "distribute-init", -10, "initialise the distribute job ledger")
    for name in ("jobs.txt", "running.txt", "done.txt", "failed.txt"):
        out.write(b"M 100644 inline %s\n" % name.encode())
        data(b"")
    commit("refs/heads/master", 2, "cli-bench", -5, f"cli-bench added {len(queue)} jobs")
    out.write(b"from :1\nM 100644 inline jobs.txt\n")
    data("".join(j + "\n" for j in queue).encode())
    running: dict[str, tuple[str, float]] = {}  # worker -> (job, since)
    took_mark: dict[str, int] = {}
    done_lines, failed_lines = [], []
    prev, mark, commits = 2, 10, 2
    for i, (t, kind, w, job, reason) in enumerate(events):
        last = i == len(events) - 1
        if kind == "took":
            running[w] = (job, t)
            commit("refs/heads/master", mark, w, t, f"{w} took job {job}")
            out.write(b"from :%d\n" % prev)
            took_mark[job], prev, mark, commits = mark, mark, mark + 1, commits + 1
        else:
            del running[w]
            if kind == "finished":
                commit(f"refs/heads/{w}/{job}", mark, w, t - 1, f"{w} update on job {job}")
                out.write(b"from :%d\nM 100644 inline updates/%s/result.txt\n"
                          % (took_mark.pop(job), job.encode()))
                data(f"result of {job}\n".encode())
                commit("refs/heads/master", mark + 1, w, t, f"{w} finished job {job}")
                out.write(b"from :%d\nmerge :%d\n" % (prev, mark))
                done_lines.append(f"{job}\t{w}\t{_stamp(t0 + t)}\t1\n")
                prev, mark, commits = mark + 1, mark + 2, commits + 2
            else:
                took_mark.pop(job)
                commit("refs/heads/master", mark, w, t, f"{w} failed job {job}: {reason}")
                out.write(b"from :%d\n" % prev)
                failed_lines.append(f"{job}\t{w}\t{_stamp(t0 + t)}\t1\t{reason}\n")
                prev, mark, commits = mark, mark + 1, commits + 1
        out.write(b"M 100644 inline running.txt\n")
        data("".join(f"{j}\t{rw}\t{_stamp(t0 + s)}\t1\n"
                     for rw, (j, s) in sorted(running.items())).encode())
        if last:  # the tip: the whole final ledger and every done job's result
            for name, lines in (("jobs.txt", [j + "\n" for j in queue[claimed:]]),
                                ("done.txt", done_lines), ("failed.txt", failed_lines)):
                out.write(b"M 100644 inline %s\n" % name.encode())
                data("".join(lines).encode())
            for line in done_lines:
                job = line.split("\t", 1)[0]
                out.write(b"M 100644 inline updates/%s/result.txt\n" % job.encode())
                data(f"result of {job}\n".encode())
    out.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    git("--git-dir", str(bare), "pack-refs", "--all")
    git("--git-dir", str(bare), "repack", "-a", "-d", "-b", "-q")
    return time.perf_counter() - started, commits


def run_cli(url: str, cache: Path, out: Path, *extra: str) -> float:
    """Wall time of ``python -m distribute report URL -o OUT`` with the cache in ``cache``."""
    env = dict(os.environ, DISTRIBUTE_CACHE_DIR=str(cache))
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "distribute", "report", url, "-o", str(out),
                          *extra], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"distribute report failed: {res.stderr.strip()}")
    return elapsed


def phases(url: str, cache: Path) -> list[list[str]]:
    """One run in this process, phase by phase (the library's own calls)."""
    import json

    os.environ["DISTRIBUTE_CACHE_DIR"] = str(cache)
    from distribute.cli.common import cache_worker
    from distribute.protocol import ORIGIN_MASTER
    from distribute.report import build_model, read_history, render

    rows = []

    def step(what: str, fn):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        value = fn()
        rows.append([what, f"{time.perf_counter() - t:.2f}"])
        return value

    context = cache_worker(url)
    worker = step("open the copy (clone, or fetch; checkout of master)", context.__enter__)
    try:
        snap = step("snapshot: fetch, ledger, lock, heartbeats", worker.snapshot)
        tip = worker.clone.resolve(ORIGIN_MASTER)
        history = step("history (cold: fetch + full pass; warm: kept + new)",
                       lambda: read_history(worker.clone, tip))
        model = step("build the model", lambda: build_model(
            snap, history, job_lease_s=worker.job_lease_s, lock_lease_s=worker.lock_lease_s,
            remote=url))
        page = step("render the page", lambda: render(model))
        text = step("JSON (--json)", lambda: json.dumps(model, ensure_ascii=False))
    finally:
        context.__exit__(None, None, None)
    rows.append(["page size / JSON size, KB", f"{len(page.encode()) / 1e3:.0f} / "
                                              f"{len(text.encode()) / 1e3:.0f}"])
    rows.append(["commits read", str(model["history"]["commits"])])
    known = sum(1 for d in model["done"] if d["duration_s"] is not None)
    rows.append(["done jobs with a duration", f"{known} of {len(model['done'])}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=100_000, help="done jobs (100000)")
    p.add_argument("--workers", type=int, default=16, help="workers (16)")
    p.add_argument("--queued", type=int, default=1000, help="jobs left in the queue (1000)")
    p.add_argument("--transport", default="file", help="file, daemon or http (file)")
    p.add_argument("--runs", type=int, default=3, help="warm runs (3)")
    p.add_argument("--dir", help="keep the remote and the cache in DIR")
    args = p.parse_args(argv)
    print(machine_line())
    with workdir("bench-report-", args.dir) as tmp, ExitStack() as stack:
        servers = Servers(tmp / "srv", stack)
        remote = servers.remote(args.transport, "big.git")
        if not (remote.path / "packed-refs").exists():  # (else: kept from an earlier --dir run)
            secs, commits = build(remote.path, args.jobs, args.workers, args.queued)
            refs = len(git("--git-dir", str(remote.path), "for-each-ref").splitlines())
            print(f"remote: {args.jobs} done jobs by {args.workers} workers, {commits} commits, "
                  f"{refs} refs, {mb(du(remote.path))} MB; built in {secs:.1f}s")
        cache = tmp / "cache"
        for old in (cache, tmp / "cache-cold"):  # (a kept --dir: the first runs are cold again)
            shutil.rmtree(old, ignore_errors=True)
        out = tmp / "report.html"
        cold = run_cli(remote.url, cache, out)
        copy = next(d for d in cache.iterdir() if d.is_dir())
        warm = [run_cli(remote.url, cache, out) for _ in range(args.runs)]
        as_json = run_cli(remote.url, cache, tmp / "report.json", "--json")
        print(f"\n{args.transport}: distribute report, wall time in seconds")
        print(table(["run", "s"], [
            ["first, empty cache (slim clone + history fetch, once)", f"{cold:.2f}"],
            [f"warm cache (median of {args.runs})", f"{median(warm):.2f}"],
            ["warm cache, --json", f"{as_json:.2f}"],
        ]))
        print(f"cached copy: {mb(du(copy))} MB; page {out.stat().st_size / 1e3:.0f} KB")
        cold_rows = phases(remote.url, tmp / "cache-cold")
        warm_rows = phases(remote.url, cache)
        print("\nphases of one run in this process, s")
        print(table(["phase", "cold", "warm"],
                    [[c[0], c[1], w[1]] for c, w in zip(cold_rows, warm_rows)]))
        print(f"\ntarget: warm run <= 3 s: {'met' if median(warm) <= 3 else 'NOT met'} "
              f"({median(warm):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
