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
from .protocol import ORIGIN_MASTER, TRACKING_PREFIX, job_stage, parse_utc, remote_ref
from .repo import Clone


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
