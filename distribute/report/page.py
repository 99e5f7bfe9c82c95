"""``distribute report``'s page: the model of :mod:`distribute.report.model` as one HTML file.

:func:`render` is a pure function of the model: inline CSS, inline SVG charts, no script, and no
``src`` or ``href`` at all, so the page opens from a file or any static host and fetches nothing
(its Content-Security-Policy forbids it too). Every text from the remote — job strings, worker
names, reasons — is untrusted: it goes through :func:`text`, which masks secrets and escapes it.
"""
from __future__ import annotations

import html
import logging
import math
import time
from typing import Any, Optional, Sequence

from ..protocol import parse_utc
from ..redact import redact

log = logging.getLogger(__name__)

COLORS = {"done": "#2da44e", "failed": "#cf222e", "running": "#d29922", "queued": "#8c959f",
          "accent": "#0969da"}
#: How many rows the page shows at most (everything is in ``--json``).
LIMITS = {"failed": 50, "queued": 20, "running": 100, "recent": 15, "workers": 200}
CSS = """
:root{--fg:#1f2328;--muted:#59636e;--bg:#fff;--card:#f6f8fa;--line:#d1d9e0}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--fg);background:var(--bg);margin:0 auto;max-width:1120px;padding:20px 24px}
h1{font-size:22px;margin:0}h2{font-size:16px;margin:26px 0 8px;border-bottom:1px solid var(--line);
padding-bottom:4px}.sub,.note,footer{color:var(--muted)}.sub{margin:2px 0 14px}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px;
border-top:4px solid var(--c)}.card b{display:block;font-size:30px;line-height:1.2}
.card span{color:var(--muted)}
.bar{display:flex;height:14px;border-radius:7px;overflow:hidden;background:var(--card);
margin:14px 0 6px;border:1px solid var(--line)}.bar div{height:100%}
.stats{display:flex;flex-wrap:wrap;gap:6px 22px;margin:4px 0}.stats b{font-size:16px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td.job{word-break:break-all}tr.stale td{background:#fff8c5}
.badge{display:inline-block;padding:0 6px;border-radius:9px;font-size:11px;font-weight:600;
color:#fff;background:var(--c)}.mini{display:inline-block;height:8px;background:#2da44e;
border-radius:4px;vertical-align:middle;margin-right:6px}
.two{display:grid;grid-template-columns:2fr 1fr;gap:24px}ol{margin:0;padding-left:22px}
ol li{word-break:break-all}svg{width:100%;height:auto;display:block}
svg text{font-size:11px;fill:#59636e}.legend span{margin-right:14px}
.dot{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;
vertical-align:-1px;background:var(--c)}footer{margin-top:30px;border-top:1px solid var(--line);
padding-top:8px;font-size:12px}code{font-size:12px}
"""


def text(value: object) -> str:
    """Untrusted text made safe for HTML: secrets masked (:func:`redact`), then escaped."""
    return html.escape(redact("" if value is None else value), quote=True)


def duration(seconds: Optional[float]) -> str:
    """``42 s``, ``3 m 05 s``, ``2 h 03 m``, ``3 d 04 h``; ``–`` for unknown."""
    if seconds is None:
        return "–"
    s = float(seconds)
    if s < 10 and s != int(s):
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s // 60:.0f} m {s % 60:02.0f} s"
    if s < 86400:
        return f"{s // 3600:.0f} h {s % 3600 // 60:02.0f} m"
    return f"{s // 86400:.0f} d {s % 86400 // 3600:02.0f} h"


def rate(per_s: Optional[float]) -> str:
    """Jobs per second, minute or hour, whichever reads best."""
    if not per_s:
        return "–" if per_s is None else "0 jobs/min"
    if per_s >= 1:
        return f"{per_s:.2f} jobs/s"
    if per_s * 60 >= 1:
        return f"{per_s * 60:.1f} jobs/min"
    return f"{per_s * 3600:.1f} jobs/h"


def stamp(utc: Optional[str]) -> str:
    """``2024-05-01 12:00:03 UTC`` from a model time."""
    return "–" if not utc else text(utc.replace("T", " ").replace("Z", " UTC"))


def render(model: dict[str, Any], refresh_s: Optional[float] = None) -> str:
    """The whole page. ``refresh_s`` adds ``<meta http-equiv="refresh">`` (for ``--watch``)."""
    counts = model["counts"]
    where = model.get("remote") or "remote"
    head = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">",
        f'<meta http-equiv="refresh" content="{max(1, math.ceil(refresh_s))}">'
        if refresh_s else "",
        f"<title>jobs: {counts['done']} done, {counts['running']} running · {text(where)}"
        f"</title><style>{CSS}</style></head><body>",
        f'<header><h1>Jobs report</h1><p class="sub">{text(where)} · generated '
        f"{stamp(model.get('generated_at'))}</p></header>",
    ]
    body = [_headline(model), _stages(model), _timeline(model), _durations(model), _workers(model),
            _running(model), _failed(model), _queue_and_lock(model), _recent(model),
            _footer(model)]
    return "\n".join(part for part in head + body if part) + "\n</body></html>\n"


def _headline(model: dict[str, Any]) -> str:
    counts, progress, tp = model["counts"], model["progress"], model["throughput"]
    cards = "".join(
        f'<div class="card" style="--c:{COLORS[k]}"><b id="count-{k}">{counts[k]}</b>'
        f"<span>{k}</span></div>" for k in ("queued", "running", "done", "failed"))
    total = progress["total"]
    segments = "".join(
        f'<div style="width:{100 * counts[k] / total:.3f}%;background:{COLORS[k]}" '
        f'title="{counts[k]} {k}"></div>'
        for k in ("done", "failed", "running", "queued") if total and counts[k])
    if not total:
        stats = ('<p class="note" id="empty">no jobs yet: <code>distribute add</code> '
                 'queues some</p>')
    else:
        eta = tp["eta_s"]
        eta_text = duration(eta) if eta is not None else (
            "done" if not counts["queued"] + counts["running"] else "– (no job finishing now)")
        stats = (f'<div class="stats"><span><b id="progress">{progress["percent"]:.1f} %</b> '
                 f'finished ({progress["finished"]} of {total})</span>'
                 f'<span>now <b id="rate-now">{rate(tp["now_per_s"])}</b></span>'
                 f'<span>overall <b id="rate-overall">{rate(tp["overall_per_s"])}</b></span>'
                 f'<span>ETA <b id="eta">{eta_text}</b></span></div>')
    note = ('<p class="note">“now”: the last finishes up to this moment; overall: from the first '
            "claim to the last finish; the ETA divides what is queued or running by the rate "
            "now.</p>" if total else "")
    return (f'<section class="cards">{cards}</section><div class="bar">{segments}</div>'
            f"{stats}{note}{_cost(model.get('fleet'))}{_host(model.get('host'))}")


def _host(host: Any) -> str:
    """What the fleet pushed lately (a lower bound) against the git host's budget."""
    if not isinstance(host, dict) or not isinstance(host.get("budget"), dict):
        return ""
    budget = host["budget"]
    pushes, reads = budget.get("pushes_per_min"), budget.get("reads_per_s")
    return (f'<div class="stats" id="host"><span>git host: at least '
            f'<b>{text(host.get("pushes_at_least"))}</b> pushes in the last '
            f'{text(host.get("window_s"))} s</span><span>budget <b>'
            f'{text(f"{pushes:g}/min" if pushes else "unlimited")}</b> pushes, <b>'
            f'{text(f"{reads:g}/s" if reads else "unlimited")}</b> reads '
            f'({text(budget.get("source"))})</span></div>')


def _cost(fleet: Any) -> str:
    """The fleet's spend (cost so far, per done job, projection), if a fleet recorded one."""
    if not isinstance(fleet, dict):
        return ""

    def money(key: str) -> str:
        value = fleet.get(key)
        return "–" if not isinstance(value, (int, float)) else f"${value:.4f}"

    budget = f" of {money('budget')} budget" if fleet.get("budget") else ""
    return (f'<div class="stats" id="cost"><span>cost so far <b>{money("spent")}</b>{budget}'
            f'</span><span>per done job <b>{money("per_done_job")}</b></span>'
            f'<span>projected <b>{money("projected")}</b></span>'
            f'<span>now <b>{money("dph")}/h</b></span></div>')


def _bars_svg(series: Sequence[tuple[str, Sequence[int]]], labels: Sequence[str],
              tips: Sequence[str], chart_id: str) -> str:
    """A bar chart (series stacked bottom to top) as inline SVG, with a tooltip per bar."""
    width, height, left, bottom, top = 960, 220, 40, 24, 10
    n = len(series[0][1])
    totals = [sum(s[1][i] for s in series) for i in range(n)]
    peak = max(totals or [0])
    ymax = _nice_ceiling(peak)
    plot_w, plot_h = width - left - 8, height - top - bottom
    step = plot_w / max(1, n)
    out = [f'<svg id="{chart_id}" viewBox="0 0 {width} {height}" role="img">']
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        out.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#d1d9e0" stroke-width="1"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{ymax * frac:g}</text>")
    for i in range(n):
        if not totals[i]:
            continue
        x, y = left + i * step, top + plot_h
        rects = []
        for color, values in series:
            h = plot_h * values[i] / ymax
            if h > 0:
                y -= h
                rects.append(f'<rect x="{x + 0.5:.2f}" y="{y:.2f}" '
                             f'width="{max(1.0, step - 1):.2f}" height="{h:.2f}" fill="{color}"/>')
        out.append(f"<g><title>{html.escape(tips[i])}</title>{''.join(rects)}</g>")
    for pos, label in zip((0, 0.5, 1), labels):
        anchor = {0: "start", 0.5: "middle", 1: "end"}[pos]
        out.append(f'<text x="{left + plot_w * pos:.1f}" y="{height - 6}" '
                   f'text-anchor="{anchor}">{html.escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _timeline(model: dict[str, Any]) -> str:
    tl = model["timeline"]
    head = "<h2>Jobs finished over time</h2>"
    if not tl["bucket_s"]:
        return (f'<section>{head}<p class="note" id="timeline-empty">no job has finished yet</p>'
                '</section>')
    size, done, failed = tl["bucket_s"], tl["done"], tl["failed"]
    start = parse_utc(tl["start"]) or 0  # (written by the model: never malformed)
    unit = _bucket_name(size)
    days = len(done) * size > 86400  # (then every label needs its date)
    fmt = ("%Y-%m-%d" if size >= 86400 else "%m-%d %H:%M" if days else
           "%H:%M:%S" if size < 60 else "%H:%M")
    when = [time.strftime(fmt, time.gmtime(start + i * size)) for i in range(len(done) + 1)]
    day = time.strftime("%Y-%m-%d ", time.gmtime(start)) if size < 86400 and not days else ""
    tips = [f"{when[i]} UTC: {done[i]} done, {failed[i]} failed" for i in range(len(done))]
    labels = [f"{day}{when[0]} UTC", when[len(done) // 2], when[len(done)]]
    chart = _bars_svg([(COLORS["done"], done), (COLORS["failed"], failed)], labels, tips,
                      "chart-timeline")
    return (f'<section>{head}<p class="legend"><span><i class="dot" style="--c:{COLORS["done"]}">'
            f'</i>done</span><span><i class="dot" style="--c:{COLORS["failed"]}"></i>failed</span>'
            f"<span class=\"note\">per {unit}</span></p>{chart}</section>")


def _durations(model: dict[str, Any]) -> str:
    d = model["durations"]
    head = "<h2>Job durations</h2>"
    if not d["count"]:
        return f'<section>{head}<p class="note" id="durations-empty">no durations yet (a job\'s ' \
               "start comes from its claim commit on master)</p></section>"
    width, bins = d["bin_s"], d["bins"]
    edge = [duration(i * width) for i in range(len(bins) + 1)]
    tips = [f"{edge[i]} – {edge[i + 1]}: {c} jobs" for i, c in enumerate(bins)]
    if d["open_end"]:
        tips[-1] = f"≥ {edge[-2]}: {bins[-1]} jobs"
    labels = ["0", edge[len(bins) // 2], ("≥ " + edge[-2]) if d["open_end"] else edge[-1]]
    chart = _bars_svg([(COLORS["accent"], bins)], labels, tips, "chart-durations")
    return (f'<section>{head}<p class="stats"><span>median <b id="median">{duration(d["median_s"])}'
            f'</b></span><span>mean <b>{duration(d["mean_s"])}</b></span><span>90 % under '
            f'<b>{duration(d["p90_s"])}</b></span><span>longest <b>{duration(d["max_s"])}</b>'
            f'</span><span class="note">{d["count"]} done jobs, from claim to finish</span></p>'
            f"{chart}</section>")


def _table(table_id: str, headers: Sequence[str], rows: Sequence[str], empty: str) -> str:
    if not rows:
        return f'<p class="note" id="{table_id}-empty">{empty}</p>'
    cells = "".join(f'<th class="n">{h[1:]}</th>' if h.startswith("#") else f"<th>{h}</th>"
                    for h in headers)
    return f'<table id="{table_id}"><thead><tr>{cells}</tr></thead><tbody>{"".join(rows)}' \
           "</tbody></table>"


def _stages(model: dict[str, Any]) -> str:
    """Progress per stage (the text before a job's first ``:``), when jobs have stages."""
    stages = model.get("stages") or {}
    if not model.get("waiting") and not set(stages) - {""}:
        return ""
    rows = []
    for stage, c in stages.items():
        total = sum(c.values())
        ended = c["done"] + c["failed"]
        bar = f'<i class="mini" style="width:{60 * ended / max(total, 1):.0f}px"></i>'
        rows.append(f'<tr><td class="job">{text(stage or "(none)")}</td>'
                    f'<td class="n">{bar}{100 * ended / max(total, 1):.0f} %</td>'
                    + "".join(f'<td class="n">{c[k]}</td>' for k in
                              ("done", "failed", "running", "queued", "waiting")) + "</tr>")
    return '<section><h2>Stages</h2>' + _table(
        "stages", ["stage", "#ended", "#done", "#failed", "#running", "#queued", "#waiting"],
        rows, "no jobs yet") + "</section>"


def _workers(model: dict[str, Any]) -> str:
    workers = model["workers"][:LIMITS["workers"]]
    best = max([w["done"] for w in workers] + [1])
    rows = []
    for rank, w in enumerate(workers, 1):
        bar = f'<i class="mini" style="width:{60 * w["done"] / best:.0f}px"></i>'
        current = ", ".join(text(j) for j in w["current"]) or "–"
        seen = f"{duration(w['last_seen_age_s'])} ago" if w["last_seen_age_s"] is not None else "–"
        beat = f"{duration(w['heartbeat_age_s'])} ago" if w["heartbeat_age_s"] is not None else "–"
        rows.append(f'<tr><td class="n">{rank}</td><td class="worker">{text(w["worker"])}</td>'
                    f'<td class="n">{bar}{w["done"]}</td><td class="n">{w["failed"]}</td>'
                    f'<td class="n">{duration(w["median_s"])}</td><td>{seen}</td>'
                    f'<td>{beat}</td><td class="job">{current}</td></tr>')
    more = len(model["workers"]) - len(workers)
    tail = f'<p class="note">… and {more} more workers (see --json)</p>' if more > 0 else ""
    return "<section><h2>Workers</h2>" + _table(
        "workers", ["#", "worker", "#done", "#failed", "#median job", "last seen", "heartbeat",
                    "current job"], rows, "no worker has taken a job yet") + tail + "</section>"


def _running(model: dict[str, Any]) -> str:
    lease = model["leases"]["job_lease_s"]
    rows = []
    for r in model["running"][:LIMITS["running"]]:
        beat = "none" if r["heartbeat_age_s"] is None else f"{duration(r['heartbeat_age_s'])} ago"
        flag = (f' <span class="badge" style="--c:{COLORS["failed"]}">STALE</span>'
                if r["stale"] else "")
        rows.append(f'<tr class="{"stale" if r["stale"] else "ok"}"><td class="job">'
                    f'{text(r["job"])}{flag}</td><td>{text(r["worker"])}</td>'
                    f'<td class="n">{r["attempt"]}</td><td>{duration(r["age_s"])}</td>'
                    f'<td>{beat}</td></tr>')
    note = (f'<p class="note">STALE: no heartbeat for a job lease ({duration(lease)}); the next '
            "worker to take the lock requeues it, or run <code>distribute requeue --stale</code>"
            "</p>" if any(r["stale"] for r in model["running"]) else "")
    return "<section><h2>Running</h2>" + _table(
        "running", ["job", "worker", "#attempt", "running for", "heartbeat"], rows,
        "nothing is running") + note + "</section>"


def _failed(model: dict[str, Any]) -> str:
    failed = model["failed"]
    shown = sorted(failed, key=lambda f: f["at"], reverse=True)[:LIMITS["failed"]]
    rows = [f'<tr><td class="job">{text(f["job"])}</td><td>{text(f["worker"])}</td>'
            f'<td class="n">{f["attempt"]}</td><td>{stamp(f["at"])}</td>'
            f'<td class="reason">{text(f["reason"])}</td></tr>' for f in shown]
    more = len(failed) - len(shown)
    tail = f'<p class="note">… and {more} earlier failures (see --json)</p>' if more > 0 else ""
    return "<section><h2>Failed</h2>" + _table(
        "failed", ["job", "worker", "#attempts", "failed at", "reason"], rows,
        "no job has failed") + tail + "</section>"


def _queue_and_lock(model: dict[str, Any]) -> str:
    queued = model["queued"]
    items = "".join(f"<li>{text(j)}</li>" for j in queued[:LIMITS["queued"]])
    more = len(queued) - LIMITS["queued"]
    queue = (f'<ol id="queue">{items}</ol>' + (f'<p class="note">… and {more} more</p>'
                                               if more > 0 else "")
             if queued else '<p class="note" id="queue-empty">the queue is empty</p>')
    lock = model["lock"]
    if lock is None:
        held = '<p id="lock">free</p>'
    else:
        held = (f'<p id="lock">held by <b>{text(lock["holder"])}</b> for '
                f'{duration(lock["held_s"])}</p>')
        if lock["stale"]:
            held += ('<p class="note">older than the lock lease: waiting workers break it, or '
                     "<code>distribute unlock --force</code></p>")
    return (f'<section class="two"><div><h2>Head of the queue</h2>{queue}</div>'
            f"<div><h2>Lock</h2>{held}</div></section>")


def _recent(model: dict[str, Any]) -> str:
    done = model["done"][-LIMITS["recent"]:][::-1]
    rows = [f'<tr><td class="job">{text(d["job"])}</td><td>{text(d["worker"])}</td>'
            f'<td>{stamp(d["at"])}</td><td class="n">{duration(d["duration_s"])}</td></tr>'
            for d in done]
    return "<section><h2>Recently finished</h2>" + _table(
        "recent", ["job", "worker", "finished at", "#took"], rows, "no job is done yet") + \
        "</section>"


def _footer(model: dict[str, Any]) -> str:
    master, hist = model["master"], model["history"]
    commit = text((master["commit"] or "")[:12]) or "–"
    partial = ("" if hist["complete"] else " (history incomplete: durations cover only the "
               "commits this copy has)")
    return (f'<footer id="footer">master at <code>{commit}</code>, committed '
            f"{stamp(master['committed_at'])} · {hist['commits']} commits read{partial} · "
            f"generated {stamp(model.get('generated_at'))} by <code>distribute report</code> · "
            "times in UTC, ages by the clock of the machine that made this page</footer>")


def _bucket_name(size: int) -> str:
    for unit, secs in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if size % secs == 0:
            return unit if size == secs else f"{size // secs} {unit}s"
    return f"{size} s"


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 × 10^k not below ``value`` (at least 1)."""
    if value <= 1:
        return 1
    exp: int = 10 ** math.floor(math.log10(value))
    return float(next(m * exp for m in (1, 2, 5, 10) if m * exp >= value))
