"""Count Hub commits and HTTP requests for mirroring N jobs of F files, live and by catch-up.

    python benchmarks/mirror.py [--jobs 50] [--files 3] [--batch 25 ...]

Everything runs on 127.0.0.1: a bare git remote through ``file://`` and the fake Hub of
``tests/hubserver.py``, which counts every request it answers (the real ``huggingface_hub`` client
talks to it). "Live" is one worker draining the queue and calling ``mirror_after_finish`` after
each ``finish_job``; "catch-up" runs the same jobs without mirroring, then ``catch_up`` once per
batch size, then once more to show what a run with nothing to do costs. The counts do not depend
on the machine; the seconds do.
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gitservers import make_bare  # noqa: E402
from hubserver import FakeHub  # noqa: E402

from distribute import hub, init_remote, queue_jobs_func, worker_from_url  # noqa: E402

TOKEN = "hf_benchmarkToken0123456789"
IGNORED = {"agent-registry"}  # the client's user-agent lookup (not made: see HF_HOME above)


def run_jobs(url: str, path: Path, files: int, live: bool) -> float:
    """Drain the queue; return the seconds spent in mirror_after_finish (all True, or it raises)."""
    worker = worker_from_url(url, path, "bench-1")
    spent = 0.0
    try:
        while (job := worker.get_next_job(queue_jobs_func)) is not None:
            job_dir = Path(worker.job_dir or "")
            for i in range(files):
                (job_dir / f"part-{i}.txt").write_text(f"{job} part {i}\n" * 20)
            worker.finish_job()
            if live:
                started = time.perf_counter()
                if not hub.mirror_after_finish(worker, job):
                    raise SystemExit(f"job {job} was not mirrored")
                spent += time.perf_counter() - started
    finally:
        worker.close()
    return spent


def counts(fake: FakeHub, repo: str, before: int = 0) -> tuple[int, int, str]:
    """(new commits, requests, requests by endpoint) since the last ``reset_counts``."""
    kinds = Counter(s.kind for s in fake.seen if s.kind not in IGNORED)
    detail = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    return len(fake.commits(repo)) - before, sum(kinds.values()), detail


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=50, help="jobs to run (50)")
    p.add_argument("--files", type=int, default=3, help="files each job writes (3)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 10, 25, 50],
                   help="catch-up batch sizes to measure (1 10 25 50)")
    args = p.parse_args()
    jobs = [f"job-{i:03d}" for i in range(args.jobs)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="distribute-bench-") as tmp, FakeHub(TOKEN) as fake:
        os.environ.update(HF_ENDPOINT=fake.url, HF_TOKEN=TOKEN, HF_HUB_DISABLE_PROGRESS_BARS="1")
        root = Path(tmp)

        repo = os.environ["HF_REPO_ID"] = "bench/live"
        url = "file://" + str(make_bare(root / "live"))
        init_remote(url, jobs)
        fake.reset_counts()
        seconds = run_jobs(url, root / "live-copy", args.files, live=True)
        rows.append(("live (one commit per job)", *counts(fake, repo), seconds))

        url = "file://" + str(make_bare(root / "later"))
        init_remote(url, jobs)
        run_jobs(url, root / "later-copy", args.files, live=False)
        worker = worker_from_url(url, root / "later-copy", "bench-1")
        try:
            for batch in args.batch:
                repo = os.environ["HF_REPO_ID"] = f"bench/catch-up-{batch}"
                fake.reset_counts()
                started = time.perf_counter()
                report = hub.catch_up(worker, batch=batch)
                seconds = time.perf_counter() - started
                assert report.uploaded_jobs == args.jobs, report
                rows.append((f"catch-up, --batch {batch}", *counts(fake, repo), seconds))
            fake.reset_counts()
            before = len(fake.commits(repo))
            started = time.perf_counter()
            hub.catch_up(worker, batch=args.batch[-1])
            rows.append(("catch-up again (nothing new)", *counts(fake, repo, before),
                         time.perf_counter() - started))
        finally:
            worker.close()
    print(f"{args.jobs} jobs x {args.files} files, fake Hub on 127.0.0.1\n")
    print(f"{'run':32} {'commits':>7} {'requests':>8} {'seconds':>8}  requests by endpoint")
    for name, commits, requests, detail, seconds in rows:
        print(f"{name:32} {commits:>7} {requests:>8} {seconds:>8.2f}  {detail}")


if __name__ == "__main__":
    main()
