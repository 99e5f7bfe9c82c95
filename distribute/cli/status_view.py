"""What ``distribute status`` shows: the JSON object, the text report, the progress line."""
from __future__ import annotations

import time
from collections import Counter
from typing import Any, Optional

from ..status import stale_jobs, status_json

BAR_WIDTH = 30


def _fmt_s(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def progress_line(counts: dict[str, int], rate: Optional[float] = None) -> str:
    """``[#####-----]  50% of 20 jobs ended: 9 done · 1 failed · 4 running · 6 queued · 0.80
    jobs/s · ETA 12s``: the bar and the percentage count the jobs that have ended (done or
    failed)."""
    total = sum(counts.values())
    if not total:
        return "no jobs yet: `distribute add` queues some"
    finished = counts["done"] + counts["failed"]
    filled = int(BAR_WIDTH * finished / total)
    pct = 100 * finished / total
    line = (f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {pct:3.0f}% of {total} "
            f"job{'' if total == 1 else 's'} ended: {counts['done']} done · "
            f"{counts['failed']} failed · {counts['running']} running · "
            f"{counts['queued']} queued")
    if counts.get("waiting"):
        line += f" · {counts['waiting']} waiting"
    if rate is not None:
        left = counts["queued"] + counts["running"]
        line += f" · {rate:.2f} jobs/s"
        if left and rate > 0:
            line += f" · ETA {_fmt_s(left / rate)}"
    return line


class RateMeter:
    """Jobs finished per second since the first observation (for ``--watch`` and the demo)."""

    def __init__(self) -> None:
        self.first: Optional[tuple[float, int]] = None

    def update(self, counts: dict[str, int]) -> Optional[float]:
        finished = counts["done"] + counts["failed"]
        now = time.monotonic()
        if self.first is None:
            self.first = (now, finished)
            return None
        elapsed = now - self.first[0]
        return (finished - self.first[1]) / elapsed if elapsed > 0 else None


def cost_line(fleet: dict[str, Any]) -> str:
    """``$1.2345 spent (of $5 budget) · $0.1029 per done job · projected $2.0580 · 3 nodes at
    $1.0800/h`` from the spend ``distribute fleet`` recorded on the remote."""
    def money(value: Any) -> str:
        return "?" if value is None else f"${float(value):.4f}"

    budget = f" (of {money(fleet.get('budget'))} budget)" if fleet.get("budget") else ""
    nodes = sum(int(n) for n in (fleet.get("nodes") or {}).values())
    return (f"{money(fleet.get('spent'))} spent{budget} · {money(fleet.get('per_done_job'))} per "
            f"done job · projected {money(fleet.get('projected'))} · {nodes} node"
            f"{'' if nodes == 1 else 's'} at {money(fleet.get('dph'))}/h (fleet, "
            f"{fleet.get('at', '?')})")


def host_line(host: dict[str, Any]) -> str:
    """``>= 14 pushes in the last 60 s (of 6 a minute) · 3 workers seen · reads: no trace on the
    remote (budget 15/s) · GitHub's published limits``: what the fleet asked of the git host
    lately (a lower bound, see :func:`distribute.status.host_activity`) against its budget."""
    budget = host["budget"]
    pushes, reads = budget["pushes_per_min"], budget["reads_per_s"]
    per_window = f"{pushes * host['window_s'] / 60:g} allowed" if pushes else "no push budget"
    return (f">= {host['pushes_at_least']} pushes in the last {host['window_s']:g} s "
            f"({per_window}) · {host['workers_seen']} workers seen · reads: no trace on the "
            f"remote ({f'budget {reads:g}/s' if reads else 'no read budget'}) · {budget['source']}")


def status_text(snap: dict[str, Any], remote: str, job_lease_s: float,
                lock_lease_s: float) -> str:
    """The human-readable status report."""
    data = status_json(snap)
    ledger, beats, counts = snap["ledger"], snap["heartbeats"], data["counts"]
    lines = [f"remote:  {remote}",
             "jobs:    " + " · ".join(f"{counts[k]} {k}" for k in
                                      ("queued", "running", "done", "failed")),
             f"         {progress_line(counts)}"]
    stages = data["stages"]
    if data["waiting"] or set(stages) - {""}:
        width = max(len(stage or "(none)") for stage in stages)
        lines += [f"{'stages:' if i == 0 else '':<9}{stage or '(none)':<{width}}  "
                  f"{progress_line(c)}" for i, (stage, c) in enumerate(stages.items())]
    lock = snap["lock"]
    lines.append("lock:    free" if lock is None else
                 f"lock:    held by {lock['holder']} for {_fmt_s(lock['held_s'])}"
                 + (" (older than the lock lease: `distribute unlock --force` breaks it)"
                    if lock["held_s"] >= lock_lease_s else ""))
    if snap.get("host"):
        lines.append("host:    " + host_line(snap["host"]))
    if snap.get("fleet"):
        lines.append("cost:    " + cost_line(snap["fleet"]))
    done_by = Counter(e.worker for e in ledger.done)
    failed_by = Counter(e.worker for e in ledger.failed)
    running_by: dict[str, list[str]] = {}
    for e in ledger.running:
        running_by.setdefault(e.worker, []).append(e.job)
    stale = {e.job for e, _ in stale_jobs(snap, job_lease_s)}
    workers = sorted(set(done_by) | set(failed_by) | set(running_by))
    if workers:
        width = max(6, *(len(w) for w in workers))
        lines += ["", f"{'worker':<{width}}  {'done':>5}  {'failed':>6}  {'heartbeat':>9}  "
                      "current job"]
        for w in workers:
            jobs = running_by.get(w, [])
            current = ", ".join(j + (" (STALE)" if j in stale else "") for j in jobs) or "-"
            beat = _fmt_s(beats.get(w)) if jobs else "-"
            lines.append(f"{w:<{width}}  {done_by[w]:>5}  {failed_by[w]:>6}  {beat:>9}  {current}")
    if stale:
        lines += ["", f"stale: {', '.join(sorted(stale))} — no heartbeat for a job lease "
                      f"({_fmt_s(job_lease_s)}); workers requeue them, or run "
                      "`distribute requeue --stale`"]
    if ledger.queued:
        shown = ledger.queued[:5]
        more = f" … and {len(ledger.queued) - 5} more" if len(ledger.queued) > 5 else ""
        lines += ["", "next:    " + ", ".join(shown) + more]
    if ledger.failed:
        lines += ["", "failed:"]
        lines += [f"  {e.job}  ({e.worker}, attempt {e.attempt}, {e.at}): {e.reason}"
                  for e in ledger.failed[-10:]]
        if len(ledger.failed) > 10:
            lines.append(f"  … {len(ledger.failed) - 10} earlier failures (see --json)")
    return "\n".join(lines)
