"""The commands that inspect or edit the ledger: init, add, status, requeue, unlock, log, config.

``add_jobs`` is :func:`distribute.connect.add_jobs` (kept importable from here).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Optional, Sequence

from .. import config
from ..connect import add_jobs, initialise, requeue_jobs
from ..coordination import break_lock
from ..exceptions import DistributeError
from ..protocol import COORD_PREFIX, ORIGIN_MASTER, check_job
from ..redact import redact
from ..status import host_activity, status_json
from ..worker import Worker
from .common import (
    UsageError,
    add_command,
    add_remote_argument,
    cache_worker,
    plural,
    read_job_file,
    resolve_remote,
    say,
    split_remote_and_jobs,
)
from .status_view import RateMeter, progress_line, status_text

URL = "file:///srv/jobs.git"
EXAMPLES = {
    "init": f"example:\n  distribute init {URL} --jobs jobs.txt",
    "add": f"examples:\n  distribute add {URL} job-1 job-2\n"
           f"  distribute add {URL} merge:all --after proc:1 --after proc:2\n"
           f"  seq 100 | distribute add {URL} --file -\n"
           "  DISTRIBUTE_REMOTE=... distribute add job-3   # jobs only, the remote from the "
           "setting",
    "status": f"examples:\n  distribute status {URL}\n  distribute status {URL} --json\n"
              f"  distribute status {URL} --watch 5      # refresh every 5s, Ctrl-C to stop",
    "requeue": f"examples:\n  distribute requeue {URL} job-7 job-9   # running or failed jobs\n"
               f"  distribute requeue {URL} --stale         # jobs of silent workers\n"
               f"  distribute requeue {URL} job-7 --resume  # from its last checkpoint",
    "unlock": f"examples:\n  distribute unlock {URL}            # who holds the lock?\n"
              f"  distribute unlock {URL} --force    # break it (its holder is dead)",
    "log": f"example:\n  distribute log {URL} -n 50",
    "config": "example:\n  distribute config --env-file prod.env",
}


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``init``, ``add``, ``status``, ``requeue``, ``unlock``, ``log`` and ``config``."""
    def add(name: str, help_: str, func: Any, usage: Optional[str] = None
            ) -> argparse.ArgumentParser:
        return add_command(subparsers, name, help_, func, parents, epilog=EXAMPLES[name],
                           usage=usage)

    p = add("init", "create the job ledger on the remote's master (an empty bare repo is fine)",
            cmd_init)
    add_remote_argument(p)
    p.add_argument("--jobs", metavar="FILE",
                   help="seed jobs.txt with the lines of FILE (- = stdin)")
    p = add("add", "append jobs to the queue (duplicates are reported and skipped)", cmd_add,
            usage="distribute add [REMOTE] [JOB ...] [--file FILE|-] [--after PARENT ...] "
                  "[--allow-duplicates]")
    p.add_argument("words", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--file", metavar="FILE", help="add the lines of FILE (- = stdin)")
    p.add_argument("--allow-duplicates", action="store_true",
                   help="also add jobs that are queued, waiting, running or done")
    p.add_argument("--after", action="append", default=[], metavar="PARENT",
                   help="the jobs wait until job PARENT is done (repeat for more parents; a "
                        "failed parent fails them without running)")
    p = add("status", "show queued / running / done / failed jobs, the workers and the lock",
            cmd_status)
    add_remote_argument(p)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (schema in docs/cli.md)")
    p.add_argument("--watch", type=float, metavar="SECONDS",
                   help="refresh every SECONDS, with rate and ETA, until Ctrl-C")
    p = add("requeue", "put running or failed jobs back at the head of the queue", cmd_requeue,
            usage="distribute requeue [REMOTE] (--stale | JOB ... [--resume])")
    p.add_argument("words", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--stale", action="store_true",
                   help="requeue running jobs whose worker's heartbeat this machine has seen "
                        "unchanged for a job lease (earlier status/requeue runs count)")
    p.add_argument("--wait", action="store_true",
                   help="with --stale: watch until each running job is stale or alive")
    p.add_argument("--resume", action="store_true",
                   help="the named jobs' next attempt starts from the last checkpoint of the "
                        "attempt that ran (commit_update); without it they start fresh (--stale "
                        "jobs always resume)")
    p = add("unlock", "show who holds the remote lock; --force breaks it", cmd_unlock)
    add_remote_argument(p)
    p.add_argument("--force", action="store_true", help="break the lock whoever holds it")
    p = add("log", "the story of the jobs: master's history, oldest first", cmd_log)
    add_remote_argument(p)
    p.add_argument("-n", type=int, default=30, metavar="N", help="show the last N events (30)")
    p = add("config", "show every setting, its value (secrets masked) and its source", cmd_config)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_init(args: argparse.Namespace) -> int:
    """Create the ledger on the remote's master, optionally seeding jobs.txt."""
    url = resolve_remote(args.remote)
    jobs = [check_job(j) for j in read_job_file(args.jobs)] if args.jobs else []
    done = initialise(url, jobs)
    where = ("" if done.namespace == COORD_PREFIX else f"; the host takes only branches and tags, "
             f"so its coordination refs live under {done.namespace} (recorded on master)")
    if done.created:
        say(f"initialised the job ledger on {url}" + (f" with {plural(len(jobs), 'job')}"
                                                       if jobs else "") + where)
        return 0
    if jobs:
        raise DistributeError(f"{redact(url)} already has a job ledger, so the {len(jobs)} jobs "
                              "were not added; use `distribute add` to queue them")
    say(f"{url} already has a job ledger" + (where if done.recorded else "; nothing changed"))
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    """Append jobs from the command line and/or a file to the queue."""
    url, jobs = split_remote_and_jobs(args.words)
    if args.file:
        jobs += read_job_file(args.file)
    if not jobs:
        raise UsageError("no jobs given: name them after REMOTE or use --file FILE (- for stdin)")
    jobs = [check_job(j) for j in jobs]
    with cache_worker(url) as worker:
        added, skipped = add_jobs(worker, jobs, args.allow_duplicates,
                                  after=[check_job(p) for p in args.after])
    say(f"added {plural(len(added), 'job')} to {url}"
        + (f" after {', '.join(args.after)}" if args.after else ""))
    for job, why in skipped:
        say(f"skipped duplicate job {job} ({why}); --allow-duplicates adds it anyway")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Show the ledger: counts, workers, stale jobs, the lock; ``--watch`` keeps refreshing."""
    url = resolve_remote(args.remote)
    with cache_worker(url) as worker:
        if args.watch is None:
            _show_status(worker, url, args.json)
            return 0
        if args.watch <= 0:
            raise UsageError("--watch wants a positive number of seconds")
        meter, tty = RateMeter(), sys.stdout.isatty()
        try:
            while True:
                if tty and not args.json:
                    sys.stdout.write("\033[H\033[J")
                _show_status(worker, url, args.json, meter)
                if not args.json and not tty:
                    print(flush=True)
                time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0


def _show_status(worker: Worker, url: str, as_json: bool, meter: Optional[RateMeter] = None
                 ) -> None:
    snap = worker.snapshot()
    snap["host"] = host_activity(worker.clone, snap["master"])
    if as_json:
        print(redact(json.dumps(status_json(snap), ensure_ascii=False)), flush=True)
        return
    text = status_text(snap, redact(url), worker.job_lease_s, worker.lock_lease_s)
    if meter is not None:
        counts = status_json(snap)["counts"]
        text += "\n\n" + progress_line(counts, meter.update(counts))
    say(text)


def cmd_requeue(args: argparse.Namespace) -> int:
    """Put running or failed jobs back at the head of the queue."""
    url, jobs = split_remote_and_jobs(args.words)
    if not args.stale and not jobs:
        raise UsageError("nothing to requeue: name the jobs after REMOTE (requeue REMOTE job-7 "
                         "job-9), or pass --stale for the running jobs of silent workers")
    if args.stale and jobs:
        raise UsageError(f"--stale picks the jobs itself; leave out the job names "
                         f"({', '.join(jobs[:3])}{' …' if len(jobs) > 3 else ''})")
    if args.wait and not args.stale:
        raise UsageError("--wait goes with --stale")
    with cache_worker(url) as worker:
        result = requeue_jobs(worker, jobs, stale=args.stale, wait=args.wait,
                              resume=args.resume)
        lease, attempts = worker.job_lease_s, worker.max_attempts
    for job, age in sorted(result.not_stale_yet.items()):
        say(f"job {job}: its worker's heartbeat has been seen unchanged for {age:.0f}s of the "
            f"{lease:g}s job lease (from this machine); run again later, or with --wait")
    if args.stale and not result.requeued and not result.failed:
        say(f"no stale jobs (no running job's heartbeat stayed the same for {lease:g}s)")
    for job in result.requeued:
        say(f"requeued job {job}" + (" (its worker was silent for a job lease)"
                                     if args.stale else " (resumes)" if args.resume else ""))
    for job in result.failed:
        say(f"job {job} went to failed.txt: it used its {attempts} attempts")
    if result.refused:
        raise DistributeError("; ".join(f"job {job} is {why}" for job, why in result.refused))
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    """Show the lock's holder; with --force, break the lock."""
    url = resolve_remote(args.remote)
    with cache_worker(url) as worker:
        if not args.force:
            lock = worker.snapshot()["lock"]
            if lock is None:
                say("the lock is free")
                return 0
            raise DistributeError(f"the lock is held by {lock['holder']} for {lock['held_s']}s; "
                                  "run with --force to break it (only if that holder is dead)")
        holder = break_lock(worker.clone)
    if holder is None:
        say("the lock was free; nothing to do")
    else:
        say(f"broke the lock held by {holder}")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    """The master history, oldest first: one line per claim, finish, failure, requeue."""
    url = resolve_remote(args.remote)
    if args.n <= 0:
        raise UsageError("-n wants a positive number")
    with cache_worker(url) as worker:
        say(story(worker, args.n))
    return 0


def story(worker: Worker, n: int) -> str:
    """The last ``n`` commits of master (first parents only), oldest first, with their times."""
    worker.clone.fetch(deepen=n)
    out = worker.clone.first_parent_log(ORIGIN_MASTER, "%ct %s", limit=n, reverse=True, nul=True)
    lines = []
    for record in out.split("\0"):
        stamp, _, subject = record.strip("\n").partition(" ")
        if stamp.isdigit():
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(stamp)))
            lines.append(f"{when}  {subject}")
    return "\n".join(lines)


def cmd_config(args: argparse.Namespace) -> int:
    """Print every setting, its value (secrets masked) and where it comes from."""
    settings = config.get_settings()
    if args.json:
        print(json.dumps(settings), flush=True)
        return 0
    width = max(len(k) for k in settings)
    for key, value in settings.items():
        say(f"{key:<{width}}  {value if value is not None else '(unset)'}"
            f"  [{config.setting_source(key)}]")
    return 0
