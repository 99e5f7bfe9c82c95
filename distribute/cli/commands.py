"""The commands that inspect or edit the ledger: init, add, status, requeue, unlock, log, config.

``add_jobs`` is :func:`distribute.connect.add_jobs` (kept importable from here).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

from .. import config
from ..connect import add_jobs, carry_attempts, init_remote
from ..coordination import break_lock
from ..exceptions import DistributeError
from ..ledger import Ledger
from ..protocol import (ORIGIN_MASTER, REQUEUED, TRACKING_PREFIX, check_job, commit_message,
                        heartbeat_ref, remote_ref)
from ..redact import redact
from ..worker import Worker
from .common import (cache_worker, plural, read_job_file, resolve_remote, say,
                     split_remote_and_jobs, UsageError)
from .status_view import RateMeter, progress_line, status_json, status_text


def cmd_init(args: argparse.Namespace) -> int:
    """Create the ledger on the remote's master, optionally seeding jobs.txt."""
    url = resolve_remote(args.remote)
    jobs = [check_job(j) for j in read_job_file(args.jobs)] if args.jobs else []
    if init_remote(url, jobs):
        say(f"initialised the job ledger on {url}" + (f" with {plural(len(jobs), 'job')}"
                                                       if jobs else ""))
        return 0
    if jobs:
        raise DistributeError(f"{redact(url)} already has a job ledger, so the {len(jobs)} jobs "
                              "were not added; use `distribute add` to queue them")
    say(f"{url} already has a job ledger; nothing changed")
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
        added, skipped = add_jobs(worker, jobs, args.allow_duplicates)
    say(f"added {plural(len(added), 'job')} to {url}")
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
        if args.stale:
            return _requeue_stale(worker, args.wait)
        return _requeue_named(worker, jobs)


def _requeue_stale(worker: Worker, wait: bool) -> int:
    """Requeue running jobs whose worker's heartbeat this machine has seen unchanged for a job
    lease (the rule workers use: monotonic clocks, never commit times). Observations of earlier
    commands on the same cached clone count; with ``wait``, watch until every running job is
    either stale or alive."""
    lease, started = worker.job_lease_s, time.monotonic()
    while True:
        ledger = worker.snapshot()["ledger"]  # fetch, and update the lease clocks
        ages = _heartbeat_silences(worker, ledger)
        pending = {job: age for job, age in ages.items()
                   if time.monotonic() - started <= age < lease}
        if not pending or not wait:
            break
        time.sleep(min(5.0, max(0.2, lease - max(pending.values()))))
    for job, age in sorted(pending.items()):
        say(f"job {job}: its worker's heartbeat has been seen unchanged for {age:.0f}s of the "
            f"{lease:g}s job lease (from this machine); run again later, or with --wait")
    back: list[str] = []
    gave_up: list[str] = []

    def edit(ledger: Ledger, root: Path) -> Optional[str]:
        back.clear()
        gave_up.clear()
        silences = _heartbeat_silences(worker, ledger)
        for entry in list(ledger.running):
            if silences.get(entry.job, 0.0) < lease:
                continue
            why = f"{entry.worker} silent for {silences[entry.job]:.0f}s"
            (back if ledger.requeue(entry.job, worker.max_attempts, why) else gave_up).append(
                entry.job)
        if not back and not gave_up:
            return None
        ledger.write(root, queue=True)
        return commit_message(worker.name, REQUEUED,
                              f"{worker.name} requeued {plural(len(back) + len(gave_up), 'stale job')}"
                              f" ({', '.join(back + gave_up)[:200]})")

    worker.update_master(edit)
    if not back and not gave_up:
        say(f"no stale jobs (no running job's heartbeat stayed the same for {lease:g}s)")
    for job in back:
        say(f"requeued job {job} (its worker was silent for a job lease)")
    for job in gave_up:
        say(f"job {job} went to failed.txt: it used its {worker.max_attempts} attempts")
    return 0


def _heartbeat_silences(worker: Worker, ledger: Ledger) -> dict[str, float]:
    """``{job: seconds its worker's heartbeat has been seen unchanged}`` for the running jobs."""
    refs = {remote_ref(r): sha for r, sha in worker.clone.local_refs(TRACKING_PREFIX).items()}
    out = {}
    for entry in ledger.running:
        ref = heartbeat_ref(entry.worker, entry.session)
        out[entry.job] = worker.observer.unchanged_for(ref, refs.get(ref))
    return out


def _requeue_named(worker: Worker, jobs: list[str]) -> int:
    """Put ``jobs`` (running or failed) at the head of the queue, in the order given."""
    back: list[str] = []
    problems: list[str] = []

    def edit(ledger: Ledger, root: Path) -> Optional[str]:
        back.clear()
        problems.clear()
        for job in jobs:
            failed = [e for e in ledger.failed if e.job == job]
            if ledger.running_entry(job) is not None:
                ledger.requeue(job, sys.maxsize, "requeued by hand")  # (at the head)
            elif failed:
                carry_attempts(ledger, job)
                ledger.failed = [e for e in ledger.failed if e.job != job]
                ledger.queued.insert(0, job)
            elif job in ledger.queued:
                problems.append(f"job {job} is already queued")
                continue
            elif ledger.is_done(job):
                problems.append(f"job {job} is done; a done job cannot run again")
                continue
            else:
                problems.append(f"job {job} is not in the ledger")
                continue
            back.append(job)
        if not back:
            return None
        # each went to the head on its own, so the last one is first: restore the given order
        ledger.queued[:len(back)] = back
        ledger.write(root, queue=True)
        if len(back) == 1:
            return commit_message(worker.name, REQUEUED, f"{worker.name} requeued job {back[0]}",
                                  back[0])
        return commit_message(worker.name, REQUEUED,
                              f"{worker.name} requeued {len(back)} jobs ({', '.join(back)[:200]})")

    worker.update_master(edit)
    for job in back:
        say(f"requeued job {job}")
    if problems:
        raise DistributeError("; ".join(problems))
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
    return worker.clone.git("log", "--first-parent", "--reverse", f"-n{n}",
                            "--date=format-local:%Y-%m-%d %H:%M:%S", "--format=%cd  %s",
                            ORIGIN_MASTER)


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
