"""The data behind ``distribute report`` (and ``distribute status``): one plain, JSON-ready dict.

It is built from one read of the remote — the snapshot :meth:`Worker.snapshot` returns (ledger,
lock, heartbeats) — and one pass over ``master``'s first-parent history (a single ``git log``):
the ``<w> took job X`` commits give each job's start, the ``<w> finished job X`` commits its end,
both stamped by the same worker's clock. No git command is run per job.

:func:`status_subset` turns the model into exactly the ``distribute status --json`` object.
Ages and rates compare time stamps written by the workers with this machine's clock: good for
display, never used for decisions.
"""
from __future__ import annotations

import logging
import math
import re
import statistics
import time
from collections import Counter, defaultdict
from itertools import chain
from typing import TYPE_CHECKING, Any, Optional

from ..protocol import ORIGIN_MASTER, format_utc, parse_utc
from ..redact import redact
from ..status import host_activity, stage_counts
from .history import History, read_history

if TYPE_CHECKING:  # types only
    from ..worker import Worker

log = logging.getLogger(__name__)

SCHEMA = 1
#: The keys of the ``status --json`` object and, per list, the fields of its entries.
STATUS_FIELDS: dict[str, tuple[str, ...]] = {
    "running": ("job", "worker", "since", "heartbeat_age_s", "attempt"),
    "done": ("job", "worker", "at"),
    "failed": ("job", "worker", "at", "reason", "attempt"),
}
#: "Throughput now": the last this many finishes over the time since the finish before them (or
#: the first claim) up to now, so it falls while nothing finishes.
RECENT_FINISHES = 50
#: Bucket widths of the timeline, seconds; the smallest giving at most MAX_BUCKETS is used.
BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
             43200, 86400, 7 * 86400)
MAX_BUCKETS = 120
MAX_DURATION_BINS = 30


def collect(worker: "Worker", remote: str = "", now: Optional[float] = None) -> dict[str, Any]:
    """Fetch once and build the model: :meth:`Worker.snapshot` plus :func:`read_history`."""
    snap = worker.snapshot()
    snap["host"] = host_activity(worker.clone, snap["master"])
    tip = worker.clone.resolve(ORIGIN_MASTER)
    history = read_history(worker.clone, tip)
    return build_model(snap, history, job_lease_s=worker.job_lease_s,
                       lock_lease_s=worker.lock_lease_s, remote=remote, now=now)


def iso(epoch: Optional[float]) -> Optional[str]:
    """``2024-01-02T03:04:05Z`` for an epoch time (:func:`~distribute.protocol.format_utc`),
    ``None`` for ``None``."""
    return None if epoch is None else format_utc(epoch)


def build_model(snap: dict[str, Any], history: Optional[History] = None, *,
                job_lease_s: float = 600.0, lock_lease_s: float = 60.0, remote: str = "",
                now: Optional[float] = None) -> dict[str, Any]:
    """The report's data from a snapshot (``{"ledger", "lock", "heartbeats"}``) and the history.

    Keys: the ``status --json`` ones (``queued``, ``running``, ``done``, ``failed``, ``lock``,
    ``counts``; entries carry a few more fields) plus ``schema``, ``generated_at``, ``remote``,
    ``master``, ``leases``, ``progress``, ``throughput``, ``workers``, ``timeline``,
    ``durations``, ``history``, ``fleet`` (the spend ``distribute fleet`` recorded) and
    ``host`` (the git host's budget, the fleet's recent pushes: ``status``'s). See
    ``docs/report.md`` for each field.
    """
    now = time.time() if now is None else now
    history = history or History([], False, None)
    ledger, beats = snap["ledger"], snap["heartbeats"]
    done_starts, fail_starts, seen, took_by, first_start = _walk(history.commits, ledger)
    done_durations = [None if start is None or end is None else max(0, end - start)
                      for start, end in done_starts]
    fail_durations = [None if start is None or end is None else max(0, end - start)
                      for start, end in fail_starts]
    done = [{"job": e.job, "worker": e.worker, "at": e.at, "duration_s": d}
            for e, d in zip(ledger.done, done_durations)]
    failed = [{"job": e.job, "worker": e.worker, "at": e.at, "reason": e.reason,
               "attempt": e.attempt, "duration_s": d}
              for e, d in zip(ledger.failed, fail_durations)]
    running = []
    for e in ledger.running:
        since = parse_utc(e.at)
        beat = beats.get(e.worker)
        silent = beat if beat is not None else (None if since is None else max(0.0, now - since))
        running.append({"job": e.job, "worker": e.worker, "since": e.at,
                        "heartbeat_age_s": beat, "attempt": e.attempt,
                        "age_s": None if since is None else round(max(0.0, now - since), 1),
                        "stale": silent is not None and silent >= job_lease_s})
    lock = snap["lock"]
    counts = {"queued": len(ledger.queued), "running": len(ledger.running),
              "done": len(ledger.done), "failed": len(ledger.failed)}
    done_at = [parse_utc(e.at) for e in ledger.done]
    failed_at = [parse_utc(e.at) for e in ledger.failed]
    finishes = sorted(t for t in chain(done_at, failed_at) if t is not None)
    return {
        "schema": SCHEMA,
        "generated_at": iso(now),
        "remote": redact(remote),
        "master": {"commit": history.tip,
                   "committed_at": iso(history.commits[-1][0]) if history.commits else None},
        "leases": {"job_lease_s": job_lease_s, "lock_lease_s": lock_lease_s},
        "queued": list(ledger.queued),
        "running": running,
        "done": done,
        "failed": failed,
        "lock": None if lock is None else {"holder": lock["holder"], "held_s": lock["held_s"],
                                           "stale": lock["held_s"] >= lock_lease_s},
        "counts": counts,
        "progress": _progress(counts),
        "throughput": _throughput(finishes, first_start, counts, now),
        "workers": _workers(ledger, beats, done_durations, (done_at, failed_at), seen, took_by,
                            now),
        "timeline": _timeline(done_at, failed_at, finishes, counts, now),
        "durations": _durations([d for d in done_durations if d is not None]),
        "history": {"commits": len(history.commits), "complete": history.complete},
        "fleet": snap.get("fleet"),
        "waiting": [{"job": job, "parents": list(ledger.parents[job])}
                    for job in ledger.waiting()],
        "stages": stage_counts(ledger),
        "host": snap.get("host"),
    }


def status_subset(model: dict[str, Any]) -> dict[str, Any]:
    """Exactly the ``distribute status --json`` object, taken from the model."""
    out: dict[str, Any] = {"queued": list(model["queued"])}
    for key, fields in STATUS_FIELDS.items():
        out[key] = [{f: entry[f] for f in fields} for entry in model[key]]
    lock = model["lock"]
    out["lock"] = None if lock is None else {"holder": lock["holder"], "held_s": lock["held_s"]}
    out["counts"] = dict(model["counts"])
    out["fleet"] = model.get("fleet")
    out["waiting"] = [dict(w, parents=list(w["parents"])) for w in model["waiting"]]
    out["stages"] = {stage: dict(c) for stage, c in model["stages"].items()}
    out["host"] = model.get("host")
    return out


Span = tuple[Optional[int], Optional[int]]
#: What a finish that queued follow-up jobs adds to its subject (see ``protocol.finish_subject``).
_QUEUED_NOTE = re.compile(r" and queued \d+ jobs?$")


def _walk(commits: list[tuple[int, str]], ledger: Any
          ) -> tuple[list[Span], list[Span], dict[str, int], dict[str, int], Optional[int]]:
    """One pass over the history: (start, end) of each done and failed entry, each committer's
    last commit time, how many jobs each worker took, and the time of the first claim.

    A job's start is the time of the last ``<w> took job X`` before the ``<w> finished job X``
    (or ``failed job X: reason``) commit that matches the ledger entry; subjects are matched whole
    against the ones the library writes, so job strings need no parsing.
    """
    fails: dict[str, list[int]] = {}  # (the few failures: their subjects hold a reason)
    for i, e in enumerate(ledger.failed):
        fails.setdefault(f"{e.worker} failed job {e.job}: {e.reason[:200]}", []).append(i)
    failed: list[Span] = [(None, None)] * len(ledger.failed)
    spans: dict[str, Span] = {}
    starts: dict[str, int] = {}
    seen: dict[str, int] = {}
    took: dict[str, int] = {}
    first: Optional[int] = None
    for t, subject in commits:
        worker, _, rest = subject.partition(" ")
        seen[worker] = t
        if rest.startswith("took job "):
            starts[subject] = t
            took[worker] = took.get(worker, 0) + 1
            if first is None:
                first = t
        elif rest.startswith("finished job "):
            subject = _QUEUED_NOTE.sub("", subject)
            rest = subject.partition(" ")[2]
            spans[subject] = (starts.pop(f"{worker} took job {rest[13:]}", None), t)
        elif fails and rest.startswith("failed job ") and fails.get(subject):
            i = fails[subject].pop(0)
            failed[i] = (starts.pop(f"{worker} took job {ledger.failed[i].job}", None), t)
    none: Span = (None, None)
    done = [spans.get(f"{e.worker} finished job {e.job}", none) for e in ledger.done]
    return done, failed, seen, took, first


def _progress(counts: dict[str, int]) -> dict[str, Any]:
    total = sum(counts.values())
    finished = counts["done"] + counts["failed"]
    return {"total": total, "finished": finished,
            "percent": round(100.0 * finished / total, 1) if total else None}


def _throughput(finishes: list[int], first_start: Optional[int], counts: dict[str, int],
                now: float) -> dict[str, Any]:
    """Overall rate (finishes / time from the first claim to the last finish), the rate now (the
    last finishes up to this moment) and the ETA of what is queued or running at the rate now."""
    overall = now_rate = eta = window = None
    if finishes:
        begin = min(first_start or finishes[0], finishes[0])
        span = finishes[-1] - begin
        overall = len(finishes) / span if span > 0 else None
        recent = finishes[-RECENT_FINISHES:]  # finished in (begin, now]:
        begin = (finishes[-RECENT_FINISHES - 1] if len(finishes) > RECENT_FINISHES
                 else min(first_start or finishes[0], finishes[0]))
        window = max(1.0, now - begin)
        now_rate = len(recent) / window
    left = counts["queued"] + counts["running"]
    if left and now_rate and counts["running"]:
        eta = left / now_rate
    return {"overall_per_s": _round(overall, 4), "now_per_s": _round(now_rate, 4),
            "now_window_s": _round(window, 1), "eta_s": _round(eta, 1),
            "first_claim_at": iso(first_start),
            "last_finish_at": iso(finishes[-1]) if finishes else None}


def _workers(ledger: Any, beats: dict[str, float], done_durations: list[Optional[int]],
             finished_at: tuple[list[Optional[int]], list[Optional[int]]], seen: dict[str, int],
             took: dict[str, int], now: float) -> list[dict[str, Any]]:
    """The leaderboard: one row per worker that took, finished or failed a job, most done first."""
    rows: dict[str, dict[str, Any]] = {}
    times: dict[str, list[int]] = defaultdict(list)
    last: dict[str, float] = {}

    def row(name: str) -> dict[str, Any]:
        if name not in rows:
            rows[name] = {"worker": name, "done": 0, "failed": 0, "took": took.get(name, 0),
                          "current": []}
        return rows[name]

    def saw(name: str, when: Optional[float]) -> None:
        if when is not None and when > last.get(name, float("-inf")):
            last[name] = when

    for name, n in Counter(e.worker for e in ledger.done).items():
        row(name)["done"] = n
    for e, d in zip(ledger.done, done_durations):
        if d is not None:
            times[e.worker].append(d)
    for e, t in zip(ledger.done, finished_at[0]):
        if t is not None and t > last.get(e.worker, -1):
            last[e.worker] = t
    for e, t in zip(ledger.failed, finished_at[1]):
        row(e.worker)["failed"] += 1
        saw(e.worker, t)
    for e in ledger.running:
        row(e.worker)["current"].append(e.job)
        saw(e.worker, parse_utc(e.at))
    for name in took:
        row(name)
    for name, r in rows.items():
        saw(name, seen.get(name))
        beat = beats.get(name) if r["current"] else None
        if beat is not None:
            saw(name, now - beat)
        r["heartbeat_age_s"] = beat
        r["median_s"] = _round(statistics.median(times[name]), 1) if times[name] else None
        r["last_seen"] = iso(last.get(name))
        r["last_seen_age_s"] = _round(max(0.0, now - last[name]), 1) if name in last else None
    return sorted(rows.values(), key=lambda r: (-r["done"], r["failed"], r["worker"]))


def _timeline(done_at: list[Optional[int]], failed_at: list[Optional[int]], finishes: list[int],
              counts: dict[str, int], now: float) -> dict[str, Any]:
    """Finished jobs per bucket (done and failed apart), the bucket chosen to fit the span."""
    if not finishes:
        return {"bucket_s": None, "start": None, "done": [], "failed": []}
    end = max(finishes[-1], now) if counts["queued"] + counts["running"] else finishes[-1]
    span = max(1.0, end - finishes[0])
    size = next((b for b in BUCKETS_S if span / b < MAX_BUCKETS),
                math.ceil(span / MAX_BUCKETS / 86400) * 86400)  # (a clock years off)
    start = int(finishes[0] // size * size)
    n = int((end - start) // size) + 1
    series: dict[str, list[int]] = {"done": [0] * n, "failed": [0] * n}
    for key, stamps in (("done", done_at), ("failed", failed_at)):
        bars = series[key]
        for i, c in Counter((t - start) // size for t in stamps if t is not None).items():
            bars[min(n - 1, max(0, int(i)))] += c
    return {"bucket_s": size, "start": iso(start), **series}


def _durations(values: list[int]) -> dict[str, Any]:
    """Summary and histogram of the done jobs' durations (seconds); far outliers share the last
    bin (``open_end``)."""
    if not values:
        return {"count": 0, "median_s": None, "mean_s": None, "p90_s": None, "max_s": None,
                "bin_s": None, "bins": [], "open_end": False}
    values = sorted(values)
    n = len(values)
    p90, p99 = values[min(n - 1, int(0.9 * n))], values[min(n - 1, int(0.99 * n))]
    top = values[-1] if values[-1] <= 2 * max(p99, 1) else p99
    width = _nice_width(max(top, 1) / MAX_DURATION_BINS)
    bins = int(top // width) + 1
    counts = [0] * bins
    for i, c in Counter(v // width for v in values).items():
        counts[min(bins - 1, int(i))] += c
    return {"count": n, "median_s": _round((values[(n - 1) // 2] + values[n // 2]) / 2, 1),
            "mean_s": _round(sum(values) / n, 1), "p90_s": p90, "max_s": values[-1],
            "bin_s": width, "bins": counts, "open_end": values[-1] >= bins * width}


def _nice_width(raw: float) -> int:
    """The smallest of 1, 2, 5, 10, 15, 30, 60, ... seconds at least ``raw``."""
    for width in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800,
                  86400):
        if width >= raw:
            return width
    return int(raw) + 1


def _round(value: Optional[float], digits: int) -> Optional[float]:
    return None if value is None else round(value, digits)
