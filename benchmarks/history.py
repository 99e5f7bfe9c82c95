"""History size: how long a new worker needs to be ready to claim on a remote with a long history.

    python benchmarks/history.py [--transport http] [--jobs 500] [--mb 50] [--trials 3]
    python benchmarks/history.py --jobs 5000 --mb 500                     # the issue's remote

Two remotes on 127.0.0.1, side by side: an *empty* one (a fresh ledger with 10 queued jobs) and a
*big* one built directly with ``git fast-import`` (no jobs are run): ``--jobs`` done jobs, each as
the library leaves it — a claim commit on ``master``, a job branch ``w<k>/<job>`` (kept) with
``updates/<job>/result.bin`` (random, incompressible: ``--mb`` in total) and ``log.txt``, and a
``--no-ff`` merge that moves the job to ``done.txt`` — plus 10 queued jobs. The big remote is
repacked with bitmaps, as a hosting service would keep it; both allow partial clone
(``uploadpack.allowFilter``).

Measured (medians of ``--trials``, fresh directory each time):

* ``worker_from_url`` with a new path: clone + first sync (fetch, checkout of ``master``) — the
  time until the worker can call ``get_next_job``; and its disk use (a slim copy since 9eb40c4,
  a full clone with ``DISTRIBUTE_SLIM_CLONE=0`` or with the library before it);
* ``worker_from_url`` on an existing copy (reuse: one fetch);
* claim + finish of a few empty jobs in the new copy: every sync checks out ``master`` and cleans
  the work tree, so a big checkout slows every cycle too;
* plain-git alternatives a worker could use instead, to show what each would save: the
  library's ``clone --no-checkout`` + checkout split in its two parts, a blob-less partial clone
  (``--filter=blob:none``) with a sparse checkout of the ledger files only, the same limited to
  ``master`` (``--single-branch``), and a shallow clone (``--depth 1``);
* claim + finish by the library in a full copy (``DISTRIBUTE_SLIM_CLONE=0``), in its own slim
  copy, and in a copy that plain git made as a blob-less partial clone
  (``worker_from_url`` reuses it), with another worker changing ``master`` between two cycles:
  a checkout then fetches the ledger blobs the other worker wrote on demand,
  one extra round trip per sync ("lazy fetches", counted from git's trace2 events), unless the
  clone's filter is changed to ``blob:limit=1m`` after cloning (removing it does not help: git
  writes ``blob:none`` back on the next fetch);
* per-command cost on each remote: ``ls-remote 'refs/distribute/*'`` and a no-op fetch of
  ``master`` (the job branches make the ref advertisement large when the protocol cannot filter it).

Target: ready-to-claim on the big remote <= 2 x the empty remote.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    BASE_ENV,
    Remote,
    Servers,
    du,
    git,
    machine_line,
    mb,
    median,
    ms,
    parse_transports,
    table,
    timed,
    workdir,
)

QUEUED = 10
WORKERS = 4


def build_big(bare: Path, jobs: int, total_mb: float, seed_queue: int = QUEUED) -> float:
    """Write the history of ``jobs`` finished jobs into the empty bare repo ``bare``; seconds."""
    started = time.perf_counter()
    size = max(1, int(total_mb * 1e6 / max(1, jobs)))
    proc = subprocess.Popen(["git", "-c", "pack.compression=1", "fast-import", "--quiet",
                             "--depth=50"], cwd=bare, stdin=subprocess.PIPE, env=BASE_ENV)
    out = proc.stdin
    assert out is not None
    t = 1_700_000_000

    def data(b: bytes) -> None:
        out.write(b"data %d\n" % len(b))
        out.write(b)
        out.write(b"\n")

    def stamp(line: str) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(line))  # type: ignore[arg-type]

    # the done.txt revisions first, one after the other, so that fast-import stores them as deltas
    done = b""
    for i in range(jobs):
        done += f"job-{i:05d}\tw{i % WORKERS}\t{stamp(t + 10 * i + 5)}\t1\n".encode()
        out.write(b"blob\nmark :%d\n" % (1_000_000 + i))
        data(done)
    # initial ledger
    queue = [f"job-{i:05d}" for i in range(jobs + seed_queue)]
    out.write(b"commit refs/heads/master\nmark :1\n")
    out.write(b"committer init <init@distribute> %d +0000\n" % t)
    data(b"initialise the distribute job ledger")
    for name in ("running.txt", "done.txt", "failed.txt"):
        out.write(b"M 100644 inline %s\n" % name.encode())
        data(b"")
    out.write(b"M 100644 inline jobs.txt\n")
    data("".join(f"{j}\n" for j in queue[:50]).encode())  # jobs are added as they come
    prev = 1
    for i in range(jobs):
        job, worker, when = queue[i], f"w{i % WORKERS}", t + 10 * i
        who = f"{worker} <{worker}@distribute>".encode()
        took, branch, merge = 10 * i + 10, 10 * i + 11, 10 * i + 12
        out.write(b"commit refs/heads/master\nmark :%d\ncommitter %s %d +0000\n" % (took, who, when))
        data(f"{worker} took job {job}".encode())
        out.write(b"from :%d\nM 100644 inline jobs.txt\n" % prev)
        data("".join(f"{j}\n" for j in queue[i + 1:i + 51]).encode())
        out.write(b"M 100644 inline running.txt\n")
        data(f"{job}\t{worker}\t{stamp(when)}\t1\n".encode())
        out.write(b"blob\nmark :%d\n" % (2_000_000 + i))
        data(os.urandom(size))
        log = f"worked on {job}\n".encode()
        out.write(b"commit refs/heads/%s/%s\nmark :%d\ncommitter %s %d +0000\n"
                  % (worker.encode(), job.encode(), branch, who, when + 3))
        data(f"{worker} update on job {job}".encode())
        out.write(b"from :%d\n" % took)
        out.write(b"M 100644 :%d updates/%s/result.bin\n" % (2_000_000 + i, job.encode()))
        out.write(b"M 100644 inline updates/%s/log.txt\n" % job.encode())
        data(log)
        out.write(b"commit refs/heads/master\nmark :%d\ncommitter %s %d +0000\n"
                  % (merge, who, when + 5))
        data(f"{worker} finished job {job}".encode())
        out.write(b"from :%d\nmerge :%d\n" % (took, branch))
        out.write(b"M 100644 :%d updates/%s/result.bin\n" % (2_000_000 + i, job.encode()))
        out.write(b"M 100644 inline updates/%s/log.txt\n" % job.encode())
        data(log)
        out.write(b"M 100644 :%d done.txt\nM 100644 inline running.txt\n" % (1_000_000 + i))
        data(b"")
        prev = merge
    out.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    git("--git-dir", str(bare), "repack", "-a", "-d", "-b", "-q")
    return time.perf_counter() - started


def ready_time(url: str, path: Path, name: str, cycles: int = 0) -> tuple[float, int, float]:
    """Seconds for ``worker_from_url`` to return (clone + first sync), the copy's disk use, and
    the median claim + finish of ``cycles`` empty jobs in that copy (NaN if none)."""
    import logging

    from distribute import queue_jobs_func, worker_from_url

    logging.getLogger("distribute").setLevel(logging.ERROR)  # empty jobs: "discarded updates/"
    t = time.perf_counter()
    w = worker_from_url(url, path, name)
    elapsed = time.perf_counter() - t
    disk = du(path)
    times = []
    for _ in range(cycles):
        t = time.perf_counter()
        if w.get_next_job(queue_jobs_func) is None:
            break
        w.finish_job()
        times.append(time.perf_counter() - t)
    w.close()
    return elapsed, disk, median(times)


def reuse_time(url: str, path: Path, name: str) -> float:
    from distribute import worker_from_url

    t = time.perf_counter()
    w = worker_from_url(url, path, name)
    elapsed = time.perf_counter() - t
    w.close()
    return elapsed


def plain_variants(remote: Remote, tmp: Path) -> dict[str, tuple[float, int]]:
    """Seconds and disk use of plain-git ways to get a copy ready for a claim."""
    env, url, res = remote.env, remote.url, {}
    ledger = ["jobs.txt", "running.txt", "done.txt", "failed.txt"]

    def fresh(tag: str) -> Path:
        d = tmp / tag
        shutil.rmtree(d, ignore_errors=True)
        return d

    def sparse_clone(tag: str, *opts: str) -> tuple[float, int]:
        d = fresh(tag)
        t = timed(lambda: (git("clone", "-q", *opts, "--sparse", "--no-checkout", url, str(d),
                               env=env),
                           git("sparse-checkout", "set", "--cone", cwd=d, env=env),
                           git("checkout", "-q", "--detach", "origin/master", cwd=d, env=env)))
        assert all((d / f).exists() for f in ledger)
        return t, du(d)

    d = fresh("v-full")
    t_clone = timed(git, "clone", "-q", "--no-checkout", url, str(d), env=env)
    res["clone --no-checkout (library before 9eb40c4)"] = (t_clone, du(d))
    t_co = timed(git, "checkout", "-q", "--detach", "origin/master", cwd=d, env=env)
    res["  + checkout of master (library's sync)"] = (t_co, du(d))
    res["blob:none + sparse ledger checkout"] = sparse_clone("v-blobless", "--filter=blob:none")
    res["  same, --single-branch master"] = sparse_clone(
        "v-blobless-single", "--filter=blob:none", "--single-branch", "--branch", "master")
    res["shallow --depth 1 + sparse, single branch"] = sparse_clone(
        "v-shallow", "--depth", "1", "--single-branch", "--branch", "master")
    res["shallow + blob:none + sparse, single branch"] = sparse_clone(
        "v-shallow-blobless", "--depth", "1", "--filter=blob:none", "--single-branch", "--branch",
        "master")
    return res


def command_costs(remote: Remote, tmp: Path, n: int = 10) -> dict[str, float]:
    """Medians of ls-remote of the coordination refs and of a no-op fetch of master, v2 and v0."""
    d = tmp / f"cmd-{remote.path.name}"
    if not d.exists():
        git("clone", "-q", "--no-checkout", "--filter=blob:none", "--single-branch", remote.url,
            str(d), env=remote.env)
    out = {}
    for proto in ("2", "0"):
        a = ["-c", f"protocol.version={proto}"]
        ls = [timed(git, *a, "ls-remote", "origin", "refs/distribute/*", cwd=d, env=remote.env)
              for _ in range(n)]
        fe = [timed(git, *a, "fetch", "-q", "origin", "+refs/heads/master:refs/remotes/origin/master",
                    cwd=d, env=remote.env) for _ in range(n)]
        out[f"v{proto} ls-remote"], out[f"v{proto} fetch"] = median(ls), median(fe)
    return out


def partial_cycles(servers: Servers, kind: str, tmp: Path, jobs: int) -> list[list[str]]:
    """Claim + finish with the library in a copy made by plain git (full or blob-less partial
    clone) and reused by ``worker_from_url``, while another worker (full clone) claims and
    finishes a job between two cycles: what a partial clone costs per cycle today."""
    import logging

    from distribute import init_remote, queue_jobs_func, worker_from_url

    logging.getLogger("distribute").setLevel(logging.ERROR)  # empty jobs: "discarded updates/"
    rows, base = [], None
    for tag, what in (("full", "full clone (DISTRIBUTE_SLIM_CLONE=0)"),
                      ("slim", "the library's own new copy (slim)"),
                      ("blobless", "--filter=blob:none clone"),
                      ("limit", "blob:none, then filter blob:limit=1m")):
        r = servers.remote(kind, f"cyc-{tag}.git")
        git("--git-dir", str(r.path), "config", "uploadpack.allowFilter", "true")
        r.apply_env()
        init_remote(r.url, [f"j{i}" for i in range(2 * jobs)])
        path = tmp / f"cyc-{kind}-{tag}"
        if tag in ("blobless", "limit"):
            git("clone", "-q", "--filter=blob:none", "--no-checkout", r.url, str(path), env=r.env)
            if tag == "limit":  # later fetches bring small blobs (the ledger) along
                git("config", "remote.origin.partialclonefilter", "blob:limit=1m", cwd=path)
        # the library's new copies are slim unless DISTRIBUTE_SLIM_CLONE=0
        os.environ["DISTRIBUTE_SLIM_CLONE"] = "0" if tag == "full" else "1"
        try:
            w = worker_from_url(r.url, path, f"cyc-{tag}")
        finally:
            os.environ.pop("DISTRIBUTE_SLIM_CLONE", None)
        other = worker_from_url(r.url, tmp / f"cyc-{kind}-{tag}-other", f"other-{tag}")
        trace = tmp / f"trace-{kind}-{tag}.json"  # trace2 events show the on-demand fetches
        w.clone._env["GIT_TRACE2_EVENT"] = str(trace)

        def lazy(trace: Path = trace) -> int:
            text = trace.read_text() if trace.exists() else ""
            return sum(1 for line in text.splitlines()
                       if '"child_start"' in line and '"fetch"' in line and '"--stdin"' in line)
        p0, n0, l0, times = w.clone.processes, w.clone.network_calls, lazy(), []
        for _ in range(jobs):
            other.get_next_job(queue_jobs_func)  # another worker changes master in between
            other.finish_job()
            t = time.perf_counter()
            w.get_next_job(queue_jobs_func)
            w.finish_job()
            times.append(time.perf_counter() - t)
        other.close()
        cyc = median(times)
        base = base or cyc
        rows.append([what, ms(cyc), f"{(w.clone.processes - p0) / jobs:.0f}",
                     f"{(w.clone.network_calls - n0) / jobs:.0f}",
                     f"{(lazy() - l0) / jobs:.1f}", f"{cyc / base:.2f}"])
        w.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transport", default="http",
                   help="comma-separated: file, daemon, http, ssh, ssh-reuse (http)")
    p.add_argument("--jobs", type=int, default=500, help="done jobs in the big remote (500)")
    p.add_argument("--mb", type=float, default=50, help="MB of result files in total (50)")
    p.add_argument("--trials", type=int, default=3, help="fresh clones per remote (3)")
    p.add_argument("--cycle-jobs", type=int, default=15,
                   help="claim + finish cycles per copy kind in the partial-clone section (15)")
    p.add_argument("--dir", help="keep remotes and copies in DIR")
    args = p.parse_args(argv)
    from distribute import init_remote

    print(machine_line())
    with workdir("bench-history-", args.dir) as tmp, ExitStack() as stack:
        servers = Servers(tmp / "srv", stack)
        kinds = parse_transports(args.transport)
        empty0 = servers.remote(kinds[0], "empty.git")
        big0 = servers.remote(kinds[0], "big.git")
        init_remote(empty0.url, [f"q-{i}" for i in range(QUEUED)])
        built = build_big(big0.path, args.jobs, args.mb)
        for bare in (empty0.path, big0.path):
            git("--git-dir", str(bare), "config", "uploadpack.allowFilter", "true")
        commits = git("--git-dir", str(big0.path), "rev-list", "--count", "--all").strip()
        refs = len(git("--git-dir", str(big0.path), "for-each-ref").splitlines())
        print(f"big remote: {args.jobs} done jobs, {commits} commits, {refs} refs, "
              f"{mb(du(big0.path))} MB on disk (built in {built:.1f}s); empty remote "
              f"{mb(du(empty0.path))} MB")
        for kind in kinds:
            empty, big = servers.remote(kind, "empty.git"), servers.remote(kind, "big.git")
            empty.apply_env()
            results: dict[str, list] = {"empty": [], "big": []}
            reuse: dict[str, list] = {"empty": [], "big": []}
            for trial in range(args.trials):
                for label, r in (("empty", empty), ("big", big)):
                    path = tmp / f"w-{kind}-{label}-{trial}"
                    results[label].append(ready_time(r.url, path, f"bench{trial}",
                                                     QUEUED // args.trials))
                    reuse[label].append(reuse_time(r.url, path, f"bench{trial}"))
                    shutil.rmtree(path)
            e_t = median(x[0] for x in results["empty"])
            b_t = median(x[0] for x in results["big"])
            e_d, b_d = results["empty"][0][1], results["big"][0][1]
            e_c = median(x[2] for x in results["empty"] if not math.isnan(x[2]))
            b_c = median(x[2] for x in results["big"] if not math.isnan(x[2]))
            print(f"\n{kind}: worker_from_url, new copy (medians of {args.trials})")
            print(table(["remote", "ready s", "disk MB", "reuse s", "claim+finish ms"], [
                ["empty", f"{e_t:.2f}", mb(e_d), f"{median(reuse['empty']):.2f}", ms(e_c)],
                ["big", f"{b_t:.2f}", mb(b_d), f"{median(reuse['big']):.2f}", ms(b_c)]]))
            print(f"ratio big / empty, ready to claim: {b_t / e_t:.2f}  (target <= 2)")
            print(f"ratio big / empty, disk:           {b_d / e_d:.1f}")
            print(f"ratio big / empty, reuse:          "
                  f"{median(reuse['big']) / median(reuse['empty']):.2f}")
            print(f"ratio big / empty, claim + finish: {b_c / e_c:.2f}")
            rows = []
            for label, r in (("empty", empty), ("big", big)):
                for what, (secs, disk) in plain_variants(r, tmp).items():
                    rows.append([label, what, f"{secs:.2f}", mb(disk)])
            print(f"\n{kind}: plain git ways to a copy with the ledger checked out")
            print(table(["remote", "how", "s", "disk MB"], rows))
            secs = {(row[0], row[1]): float(row[2]) for row in rows}
            print("ratios big / empty remote, same method (plain git):")
            for what in dict.fromkeys(row[1] for row in rows):
                if not what.startswith("  +"):
                    print(f"  {what.strip():46} {secs[('big', what)] / secs[('empty', what)]:6.2f}")
            costs = {label: command_costs(r, tmp) for label, r in (("empty", empty), ("big", big))}
            print(f"\n{kind}: per-command cost, ms (medians of 10)")
            print(table(["remote", "v2 ls-remote", "v0 ls-remote", "v2 fetch", "v0 fetch"],
                        [[label, ms(c["v2 ls-remote"]), ms(c["v0 ls-remote"]),
                          ms(c["v2 fetch"]), ms(c["v0 fetch"])] for label, c in costs.items()]))
            if args.cycle_jobs:
                print(f"\n{kind}: claim + finish of an empty job by the library in a copy made "
                      f"outside it (medians of {args.cycle_jobs})")
                print(table(["copy", "claim+finish ms", "git procs", "net calls",
                             "lazy fetches", "vs full"],
                            partial_cycles(servers, kind, tmp, args.cycle_jobs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
