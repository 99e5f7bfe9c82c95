"""The read-only status model: what the remote says about every job, the lock and the workers.

One fetch and one read of the ledger feed :func:`read_snapshot`; :func:`status_json` is the
``distribute status --json`` object (schema in ``docs/cli.md``); :func:`stale_jobs` is the display
rule for silent workers. Nothing here writes to the remote or the checkout.
"""
from __future__ import annotations

import time
from typing import Any, Optional

from .archive import all_done
from .coordination import Observer, describe_coordination
from .ledger import Entry, Ledger
from .protocol import (
    HEARTBEAT_PREFIX,
    LOCK_REF,
    ORIGIN_MASTER,
    TRACKING_PREFIX,
    WAIT_PREFIX,
    heartbeat_owner,
    job_stage,
    marker_holder,
    parse_utc,
    remote_ref,
)
from .repo import Clone

#: The window of the fleet's recent pushes that ``status`` shows (the host's: a minute).
ACTIVITY_WINDOW_S = 60.0
#: Commits a shallow copy fetches once to see the last minute of ``master`` (one read).
_DEEPEN = 500


def read_snapshot(clone: Clone, observer: Optional[Observer] = None) -> dict[str, Any]:
    """Fetch and describe the remote without touching the work tree.

    Returns ``{"ledger": Ledger, "lock": None or {"holder", "held_s"}, "heartbeats":
    {worker: age_s}, "master": sha}``. Ages come from the commit times of the lock and heartbeat
    values compared with this machine's clock: good for display, never used for decisions.
    With ``observer``, the coordination refs seen are also recorded there (lease clocks).
    """
    clone.fetch()
    if observer is not None:
        observer.update({remote_ref(r): sha
                         for r, sha in clone.local_refs(TRACKING_PREFIX).items()},
                        clone.unreachable_at)
    master = clone.resolve(ORIGIN_MASTER) or ORIGIN_MASTER
    ledger = Ledger.parse(lambda name: clone.show(master, name))
    ledger.done = all_done(clone, master, ledger.done)  # (the segments of done/ as well)
    return {"ledger": ledger, "master": master, **describe_coordination(clone)}


def host_activity(clone: Clone, master: str, now: Optional[float] = None,
                  window_s: float = ACTIVITY_WINDOW_S) -> dict[str, Any]:
    """The git host's budget and what the fleet pushed in the last ``window_s`` seconds, as far
    as one look at the remote tells (commit times against this machine's clock):
    ``{"budget": {...}, "window_s", "pushes_at_least", "workers_seen", "reads": None}``.

    ``pushes_at_least`` is a lower bound: two per hold that wrote ``master`` (a run of
    first-parent commits by one committer: taking the lock, then the push that moved ``master``
    and released it), one per request a hold answered (the waiter's push of its wait ref), one per
    coordination ref whose value was pushed in the window by its own worker (a lone heartbeat or
    a checkpoint, joining the line, a lock held now). Refs moved twice, refused pushes and
    holds that wrote nothing leave no trace. Reads leave none at all: ``reads`` is ``None``.
    """
    since = (time.time() if now is None else now) - window_s
    holds, answered, complete = _recent_holds(clone, master, since)
    if not complete and clone.is_shallow():  # (a command's new copy: the last commit only)
        clone.fetch(deepen=_DEEPEN)
        holds, answered, complete = _recent_holds(clone, master, since)
    refs = {remote_ref(t): sha for t, sha in clone.local_refs(TRACKING_PREFIX).items()}
    made = clone.times_and_subjects(sorted(set(refs.values())))
    moved, workers = 0, set()
    for ref, sha in refs.items():
        if ref.startswith(HEARTBEAT_PREFIX):
            workers.add(heartbeat_owner(ref)[0])
        elif ref.startswith(WAIT_PREFIX):
            workers.add(ref[len(WAIT_PREFIX):])
        when, subject = made.get(sha, (0.0, ""))
        if when < since:
            continue
        if ref.startswith(HEARTBEAT_PREFIX):  # (moved by a hold's push: counted with the hold)
            moved += subject.startswith("heartbeat ") and \
                marker_holder(subject) == heartbeat_owner(ref)[0]
        elif ref.startswith(WAIT_PREFIX) or ref == LOCK_REF:
            moved += 1
    budget = clone.pacer().budget
    return {"budget": {"pushes_per_min": budget.pushes_per_min or None,
                       "reads_per_s": budget.reads_per_s or None,
                       "window_s": budget.window_s, "source": budget.source},
            "window_s": window_s, "pushes_at_least": int(2 * holds) + answered + moved,
            "workers_seen": len(workers), "reads": None}


#: Events of one hold: closes (a batch's several), then maybe claims (a batch's several), with
#: what a claim does first (requeues of silent workers' jobs, rejections).
_IN_A_HOLD = ("finished", "failed", "gave-back", "requeued", "gave-up", "rejected", "took")


def _recent_holds(clone: Clone, master: str, since: float) -> tuple[float, int, bool]:
    """``(holds, requests answered, complete)`` on ``master``'s first-parent line since
    ``since`` (``complete``: the history read reaches back that far). A hold is a run of
    commits of one committer: a close, then maybe a claim (and what a claim does first), with
    the commits it made for waiters in line (they answer a request)."""
    out = clone.first_parent_log(master, "%ct%x1f%cn%x1f%(trailers:key=Distribute-Event,"
                                 "valueonly)%x1f%(trailers:key=Distribute-Answer,valueonly,"
                                 "separator=%x1d)", limit=2000, nul=True)
    records = [r.strip("\n").split("\x1f") for r in out.split("\0") if r.strip("\n")]
    recent = [r for r in records if len(r) == 4 and float(r[0]) >= since]
    holds, requests, last = 0.0, set[str](), ("", "")
    for _, committer, event, answers in reversed(recent):  # (oldest first)
        if answers.strip():
            requests.update(a.split()[0] for a in answers.split("\x1d") if a.strip())
            continue  # made for a waiter, in the hold of its committer
        event = event.strip()
        # (a batch: several closes, then several claims, in one hold; one committer's run of
        # ledger events counts once, which may merge two holds: still a lower bound)
        joins = committer == last[0] and event in _IN_A_HOLD and last[1] in _IN_A_HOLD
        holds += 0 if joins else 0.5 if event == "init" else 1  # (the first commit: no lock)
        last = (committer, event)
    return holds, len(requests), len(recent) < len(records) or len(records) >= 2000


def _age_of(utc: str) -> Optional[float]:
    """Seconds since a ledger time stamp (``2024-01-02T03:04:05Z``), ``None`` if unparsable."""
    then = parse_utc(utc)
    return None if then is None else max(0.0, time.time() - then)


def status_json(snap: dict[str, Any]) -> dict[str, Any]:
    """The ``status --json`` object built from :meth:`Worker.snapshot` (exact schema:
    ``docs/cli.md``)."""
    ledger, beats = snap["ledger"], snap["heartbeats"]
    return {
        "queued": list(ledger.queued),
        "running": [{"job": e.job, "worker": e.worker, "since": e.at,
                     "heartbeat_age_s": beats.get(e.worker), "attempt": e.attempt}
                    for e in ledger.running],
        "done": [{"job": e.job, "worker": e.worker, "at": e.at} for e in ledger.done],
        "failed": [{"job": e.job, "worker": e.worker, "at": e.at, "reason": e.reason,
                    "attempt": e.attempt} for e in ledger.failed],
        "lock": None if snap["lock"] is None else {"holder": snap["lock"]["holder"],
                                                   "held_s": snap["lock"]["held_s"]},
        "counts": {"queued": len(ledger.queued), "running": len(ledger.running),
                   "done": len(ledger.done), "failed": len(ledger.failed)},
        "fleet": snap.get("fleet"),
        "waiting": [{"job": job, "parents": list(ledger.parents[job])}
                    for job in ledger.waiting()],
        "stages": stage_counts(ledger),
        "host": snap.get("host"),
    }


STATES = ("queued", "waiting", "running", "done", "failed")


def stage_counts(ledger: Ledger) -> dict[str, dict[str, int]]:
    """``{stage: {"queued", "waiting", "running", "done", "failed": count}}`` over every job
    (stage: :func:`~distribute.protocol.job_stage`), stages in the order first seen."""
    stages: dict[str, dict[str, int]] = {}
    jobs = {"queued": ledger.queued, "waiting": ledger.waiting(),
            "running": [e.job for e in ledger.running], "done": [e.job for e in ledger.done],
            "failed": [e.job for e in ledger.failed]}
    for state in ("done", "failed", "running", "queued", "waiting"):
        for job in jobs[state]:
            counts = stages.setdefault(job_stage(job), dict.fromkeys(STATES, 0))
            counts[state] += 1
    return stages


def silence_of(entry: Entry, beats: dict[str, float]) -> Optional[float]:
    """Seconds the worker of a running job has been silent (heartbeat, else claim time)."""
    age = beats.get(entry.worker)
    return age if age is not None else _age_of(entry.at)


def stale_jobs(snap: dict[str, Any], job_lease_s: float) -> list[tuple[Entry, float]]:
    """Running jobs whose worker has been silent for a job lease or longer, by this clock."""
    out = []
    for entry in snap["ledger"].running:
        silent = silence_of(entry, snap["heartbeats"])
        if silent is not None and silent >= job_lease_s:
            out.append((entry, silent))
    return out
