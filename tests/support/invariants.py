"""The simulation's invariants, checked from outside on the bare remote with plain git."""
from __future__ import annotations

import collections
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from distribute.ledger import Entry, split_lines
from distribute.protocol import DONE_DIR, job_branch, job_path

if TYPE_CHECKING:  # pragma: no cover
    from support.simulation import Config

#: The reason of a job that fails by design (see ``support.simulation``).
DESIGNED = "SimulatedFailure: fails on its first run"


def git(bare: Path, *args: str) -> tuple[int, str]:
    """Run git on the bare remote; ``(status, stdout)``."""
    done = subprocess.run(["git", "--git-dir", str(bare), *args], capture_output=True, text=True)
    return done.returncode, done.stdout + (done.stderr if done.returncode else "")


def master_file(bare: Path, path: str) -> Optional[str]:
    """A file of ``master``, or ``None``."""
    status, out = git(bare, "show", f"master:{path}")
    return out if status == 0 else None


def records(bare: Path, name: str) -> list[Entry]:
    """The records of a ledger file on ``master``."""
    return [Entry.parse(line) for line in split_lines(master_file(bare, name))]


def done_records(bare: Path) -> list[Entry]:
    """Every done record: the segments under ``done/`` (oldest first), then ``done.txt``."""
    status, listing = git(bare, "ls-tree", "-r", "--name-only", f"master:{DONE_DIR}")
    names = split_lines(listing) if status == 0 else []  # (no done/ yet)
    found: list[Entry] = []  # (done/000999.txt, then done/001/001000.txt …: by number)
    for name in sorted(names, key=lambda n: int(n.rsplit("/", 1)[-1][:-4])):
        found += [Entry.parse(line) for line in
                  split_lines(master_file(bare, f"{DONE_DIR}/{name}"))]
    return found + records(bare, "done.txt")


def check_remote(bare: Path, config: "Config", jobs: list[str]) -> list[tuple[str, str]]:
    """The invariants of a finished run, as ``[(invariant, detail)]`` (empty: all hold):

    * each job done exactly once, or failed (as designed: on its first run under the plain
      queue, or after ``max_attempts`` requeues) and not done; no other job;
    * nothing queued; nothing running (every worker has ended);
    * each done job's ``result.txt`` on master names the worker its done record names;
    * failures keep no branch: a job that failed as designed has no branch of that attempt left
      (nor a renamed twin), and each failure's commit on master (``Distribute-Event: failed``,
      for a designed failure) has the failed attempt's tip as its second parent, holding the
      ``result.txt`` the job wrote; a failed record's tip is that commit's;
    * ``git fsck`` clean.
    """
    found: list[tuple[str, str]] = []
    done = done_records(bare)
    failed = records(bare, "failed.txt")
    running = records(bare, "running.txt")
    queued = split_lines(master_file(bare, "jobs.txt"))
    times = collections.Counter(e.job for e in done)
    failed_jobs = collections.Counter(e.job for e in failed)
    for job in jobs:
        if times[job] > 1:
            found.append(("done more than once", f"{job} done {times[job]} times: "
                          + ", ".join(e.worker for e in done if e.job == job)))
        if times[job] and failed_jobs[job]:
            found.append(("done and failed", f"{job}"))
        if not times[job] and not failed_jobs[job] and job not in queued and \
                not any(e.job == job for e in running):
            found.append(("job lost", f"{job} is nowhere in the ledger"))
    for entry in failed:
        if entry.job not in jobs:
            continue
        designed = entry.reason == DESIGNED and entry.job in config.fail_once and \
            not config.retrying
        gave_up = entry.reason.endswith("attempts") and "gave up after" in entry.reason
        if not (designed or gave_up):
            found.append(("failed not as designed", f"{entry.job} by {entry.worker}: "
                          f"{entry.reason}"))
    extra = sorted({e.job for e in done + failed + running} - set(jobs))
    if extra:
        found.append(("unknown job", ", ".join(extra)))
    if queued:
        found.append(("left queued", ", ".join(queued)))
    if running:
        found.append(("left running", ", ".join(f"{e.job} on {e.worker}" for e in running)))
    for entry in done:
        result = master_file(bare, f"{job_path(entry.job)}/result.txt")
        if result is None or result.split() != [entry.worker, entry.job]:
            found.append(("result not by its worker", f"{entry.job} done by {entry.worker}; "
                          f"result.txt: {result!r}"))
    found += _kept_failures(bare, failed)
    status, out = git(bare, "fsck", "--strict", "--no-dangling")
    if status != 0:
        found.append(("fsck", out.strip()[:500]))
    return found


def _kept_failures(bare: Path, failed: list[Entry]) -> list[tuple[str, str]]:
    """The invariants of failures keeping their commits in master's history, not on branches."""
    found: list[tuple[str, str]] = []
    _, heads = git(bare, "for-each-ref", "--format=%(refname)", "refs/heads/")
    for entry in failed:
        if entry.reason != DESIGNED:
            continue
        branch = f"refs/heads/{job_branch(entry.worker, entry.job, entry.attempt)}"
        left = [ref for ref in heads.split() if ref == branch or (
            ref.startswith(branch + "-") and len(ref) == len(branch) + 7)]
        if left:
            found.append(("failed branch left", f"{entry.job}: {', '.join(left)}"))
    _, log = git(bare, "log", "--first-parent", "--format=%H %P%x09%s", "master")
    tips: dict[str, str] = {}
    for line in log.splitlines():
        commits, _, subject = line.partition("\t")
        if " failed job " not in subject or DESIGNED not in subject:
            continue
        _, *parents = commits.split()
        job = subject.split(" failed job ", 1)[1].split(":", 1)[0]
        worker = subject.split(" ", 1)[0]
        if len(parents) != 2:
            found.append(("failure keeps no tip", f"{subject[:120]}: parents {parents}"))
            continue
        tips.setdefault(job, parents[1])
        result = git(bare, "show", f"{parents[1]}:{job_path(job)}/result.txt")[1]
        if result.split() != [worker, job]:
            found.append(("kept tip without the job's result", f"{subject[:120]}: {result!r}"))
    for entry in failed:
        if entry.reason == DESIGNED and entry.tip != tips.get(entry.job):
            found.append(("failed record names another tip", f"{entry.job}: {entry.tip!r}, "
                          f"master's history: {tips.get(entry.job)!r}"))
    return found
