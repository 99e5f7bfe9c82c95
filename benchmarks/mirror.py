"""The Hugging Face mirror at fleet scale: commits, requests and 429s per 1 000 jobs, live and by
catch-up, against the tests' Hub emulator with a scaled-down commit quota.

    python benchmarks/mirror.py [--workers 8] [--jobs 96] [--quota 12/30] [--budget 1200]
                                [--batch-files 50] [--batch-s 10] [--driver cli|loop]
                                [--catch-up 10000] [--pack 100]

Everything runs on 127.0.0.1: bare git remotes through ``file://`` and the fake Hub of
``tests/support/hubserver.py``, which counts every request it answers and refuses commits beyond
``--quota N/SECONDS`` with HTTP 429 and ``Retry-After`` (the real Hub's hourly commit quota,
scaled down). Three runs:

* **fleet**: ``--workers`` processes ``distribute worker --mirror hf --idle-exit`` drain ``--jobs``
  short jobs (one small file each) with a mirror budget of ``--budget`` commits per hour, then one
  ``distribute mirror`` catch-up: how many results the live mirror put on the Hub, in how many
  commits and requests, how many 429s, and what the catch-up had left to do;
* **catch-up**: ``catch_up`` of a remote of ``--catch-up`` done jobs (built with ``git
  fast-import``) into an empty repository, then once more with nothing new;
* **packed**: the same catch-up into a repository packed ``--pack`` jobs per tar shard.

Counts do not depend on the machine; seconds do (the fleet's also on how fast jobs finish).
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# The client's once-a-day user-agent registry lives in HF_HOME: seed a private one so that nothing
# here talks to huggingface.co or touches the user's cache.
_HF_HOME = tempfile.mkdtemp(prefix="distribute-bench-hf-home-")
Path(_HF_HOME, ".agent_harnesses.json").write_text('{"standardEnvVars": [], "harnesses": {}}')
os.environ["HF_HOME"] = _HF_HOME
atexit.register(shutil.rmtree, _HF_HOME, True)

from common import ROOT, machine_line, table  # noqa: E402  (puts tests/ and the library on sys.path)

from support import bigremote  # noqa: E402
from support.gitservers import make_bare  # noqa: E402
from support.hubserver import FakeHub  # noqa: E402

from distribute import hub, init_remote, worker_from_url  # noqa: E402

TOKEN = "hf_benchmarkToken0123456789"
IGNORED = {"agent-registry"}  # the client's user-agent lookup (not made: see HF_HOME above)
JOB_MODULE = "from pathlib import Path\n\ndef run(job, worker):\n" \
             "    Path(worker.job_dir, 'result.json').write_text('{\"job\": \"%s\"}\\n' % job)\n"
#: ``--driver loop``: the worker loop of ``distribute worker --mirror hf``, plus the flush a
#: stopping worker makes (``hub.flush_mirror``), for a CLI that does not call it yet.
LOOP_DRIVER = """import sys
from distribute import hub, worker_from_url
from distribute.loop import run_worker_loop
from mirrorjobs import run

url, path, name = sys.argv[1:4]
worker = worker_from_url(url, path, name)
try:
    run_worker_loop(worker, run, idle_exit=True, poll_s=1, after_finish=hub.mirror_after_finish)
    hub.flush_mirror(worker)
finally:
    worker.close()
"""
HEADERS = ["run", "jobs", "commits", "requests", "429s", "files/commit", "commits/1000 jobs",
           "requests/1000 jobs", "seconds"]


def requests(fake: FakeHub) -> int:
    return sum(1 for s in fake.seen if s.kind not in IGNORED)


def row(name: str, jobs: int, commits: list, reqs: int, refused: int, seconds: float) -> list:
    files = sum(len(c.changed) for c in commits)
    per = 1000 / jobs if jobs else 0
    return [name, jobs, len(commits), reqs, refused, f"{files / len(commits):.0f}" if commits else "-",
            f"{len(commits) * per:.1f}", f"{reqs * per:.1f}", f"{seconds:.1f}"]


def fleet(fake: FakeHub, root: Path, args: argparse.Namespace) -> list[list]:
    """Workers with live mirroring drain the queue; then one catch-up."""
    os.environ["HF_REPO_ID"] = repo = "bench/fleet"
    limit, window = (float(x) for x in args.quota.split("/"))
    fake.set_quota(int(limit), window)
    jobs = [f"job-{i:04d}" for i in range(args.jobs)]
    url = "file://" + str(make_bare(root / "fleet.git"))
    init_remote(url, jobs)
    (root / "mirrorjobs.py").write_text(JOB_MODULE)
    (root / "mirrordriver.py").write_text(LOOP_DRIVER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(ROOT)]),
               DISTRIBUTE_HF_COMMITS_PER_HOUR=str(args.budget),
               DISTRIBUTE_HF_BATCH_FILES=str(args.batch_files), DISTRIBUTE_HF_BATCH_S=str(args.batch_s))
    fake.reset_counts()
    started = time.perf_counter()
    if args.driver == "cli":
        commands = [[sys.executable, "-m", "distribute", "worker", url, "--run", "mirrorjobs:run",
                     "--idle-exit", "--poll", "1", "--mirror", "hf", "--name", f"w{i}", "--path",
                     str(root / f"w{i}")] for i in range(args.workers)]
    else:
        commands = [[sys.executable, str(root / "mirrordriver.py"), url, str(root / f"w{i}"), f"w{i}"]
                    for i in range(args.workers)]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for command in commands]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a worker failed:\n{err[-3000:]}")
    live_s = time.perf_counter() - started
    live, live_reqs, live_refused = fake.commits(repo), requests(fake), fake.refused()
    on_hub = sum(1 for p in fake.files(repo) if p.endswith("/result.json"))
    fake.reset_counts()
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "distribute.cli.hub", "mirror", url], env=env,
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"the catch-up failed:\n{run.stderr[-3000:]}")
    catch_s = time.perf_counter() - started
    after = fake.commits(repo)[len(live):]
    total = sum(1 for p in fake.files(repo) if p.endswith("/result.json"))
    print(f"fleet ({args.driver}): {args.workers} workers, {args.jobs} jobs, a quota of {limit:g} "
          f"commits per {window:g}s, a budget of {args.budget:g}/hour (one commit per "
          f"{3600 / args.budget:.1f}s), batches of {args.batch_files} files or {args.batch_s:g}s: "
          f"{on_hub} of {args.jobs} results on the Hub after the fleet, {total} after one catch-up")
    return [row(f"fleet, live ({args.workers} workers, {args.driver})", args.jobs, live, live_reqs,
                live_refused, live_s),
            row("fleet, then one catch-up", args.jobs - on_hub, after, requests(fake),
                fake.refused() - live_refused, catch_s)]


def catch_up(fake: FakeHub, root: Path, jobs: int, pack: int) -> list[list]:
    """A catch-up of ``jobs`` done jobs into an empty repository, then again with nothing new."""
    os.environ["HF_REPO_ID"] = repo = f"bench/catch-up-{pack}"
    os.environ["DISTRIBUTE_HF_COMMITS_PER_HOUR"] = "360000"  # (the quota is the fleet run's)
    fake.clear_quotas()
    bare = root / f"big-{pack}.git"
    bigremote.build(bare, jobs, queued=0)
    worker = worker_from_url(f"file://{bare}", root / f"big-{pack}", "bench")
    name = f"catch-up, {'tar shards of %d' % pack if pack else 'folders'}"
    try:
        fake.reset_counts()
        started = time.perf_counter()
        report = hub.catch_up(worker, pack=pack or None)
        first = row(name, jobs, fake.commits(repo), requests(fake), fake.refused(),
                    time.perf_counter() - started)
        assert report.uploaded_jobs == jobs, report
        files = list(fake.files(repo))
        entries = Counter(folder for folder, _ in {("/".join(p.split("/")[:i]), p.split("/")[i])
                                                   for p in files for i in range(p.count("/") + 1)})
        print(f"{name}: {len(files)} files in the repository, {entries['']} entries at its top, "
              f"at most {max(entries.values())} entries in a folder; "
              f"{max(len(c.changed) for c in fake.commits(repo))} files in the largest commit")
        fake.reset_counts()
        before = len(fake.commits(repo))
        started = time.perf_counter()
        hub.catch_up(worker)
        again = row(f"{name}, again (nothing new)", jobs, fake.commits(repo)[before:],
                    requests(fake), 0, time.perf_counter() - started)
    finally:
        worker.close()
    return [first, again]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=8, help="worker processes of the fleet run (8)")
    p.add_argument("--jobs", type=int, default=96, help="jobs of the fleet run (96)")
    p.add_argument("--quota", default="12/30", help="the emulator's commit quota, N/SECONDS (12/30)")
    p.add_argument("--budget", type=float, default=1200,
                   help="DISTRIBUTE_HF_COMMITS_PER_HOUR of the fleet (1200: 10 per 30 s)")
    p.add_argument("--batch-files", type=int, default=50, help="DISTRIBUTE_HF_BATCH_FILES (50)")
    p.add_argument("--batch-s", type=float, default=10, help="DISTRIBUTE_HF_BATCH_S (10)")
    p.add_argument("--catch-up", type=int, default=10_000, help="done jobs of the catch-up runs")
    p.add_argument("--pack", type=int, default=100, help="jobs per tar shard of the packed run")
    p.add_argument("--driver", choices=["cli", "loop"], default="cli",
                   help="fleet workers: `distribute worker --mirror hf` (cli), or the same loop "
                        "plus hub.flush_mirror when a worker stops (loop)")
    p.add_argument("--skip-fleet", action="store_true", help="only the catch-up runs")
    p.add_argument("--skip-catch-up", action="store_true", help="only the fleet run")
    args = p.parse_args()
    print(machine_line())
    rows = []
    with tempfile.TemporaryDirectory(prefix="distribute-bench-") as tmp, FakeHub(TOKEN) as fake:
        os.environ.update(HF_ENDPOINT=fake.url, HF_TOKEN=TOKEN, HF_HUB_DISABLE_PROGRESS_BARS="1",
                          DISTRIBUTE_HF_MAX_WAIT_S="600")
        root = Path(tmp)
        if not args.skip_fleet:
            rows += fleet(fake, root, args)
        if not args.skip_catch_up:
            rows += catch_up(fake, root, args.catch_up, 0)
            if args.pack:
                rows += catch_up(fake, root, args.catch_up, args.pack)
    print()
    print(table(HEADERS, rows))


if __name__ == "__main__":
    main()
