"""``distribute report``: the page's structure, its JSON, publishing, and a real browser's view.

One remote is built for the module with real workers (finishing, failing, one job left running)
plus ledger entries that no library worker would write (hostile worker names, a silent worker),
then the command runs as a real process against it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator, Optional

import pytest

from support.gitservers import make_bare
from support.processes import Run, cli_env, wait_line
from support.remotes import git_out

from distribute import init_remote, queue_jobs_func, worker_from_url
from distribute.cli.status_view import status_json
from distribute.ledger import Entry, Ledger, utc_now
from distribute.protocol import ORIGIN_MASTER
from distribute.report import History, build_model, read_history, render, status_subset

SCRIPT_JOB = "<script>alert(1)</script>"
QUOTE_JOB = "quote \" and ' & <b>amp</b>"
URL_JOB = "javascript:alert(4) https://example.invalid/x.png"
HOSTILE_REASON = "<img src=x onerror=alert(2)> & broke </td>"
HOSTILE_WORKER = "<img src=x onerror=alert(3)>"
EVIL_WORKER = "\"><svg onload=alert(5)>"


class Page(HTMLParser):
    """The parsed page: every tag with its attributes, the text under each ``id``, table rows."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "source", "area", "col", "embed"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, Optional[str]]]] = []
        self.by_id: dict[str, str] = {}
        self.rows: dict[str, list[list[str]]] = {}
        self._stack: list[tuple[str, Optional[str]]] = []
        self._table: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table":
            self._table.append(a.get("id") or "")
        elif tag == "tr" and self._table:
            self.rows.setdefault(self._table[-1], []).append([])
        elif tag in ("td", "th") and self._table:
            self.rows[self._table[-1]][-1].append("")
        if tag not in self.VOID:
            ident = a.get("id")
            self._stack.append((tag, ident))
            if ident:
                self.by_id.setdefault(ident, "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._table:
            self._table.pop()
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, ident in self._stack:
            if ident:
                self.by_id[ident] += data
        if self._table and any(t in ("td", "th") for t, _ in self._stack):
            self.rows[self._table[-1]][-1][-1] += data

    def body_rows(self, table: str) -> list[list[str]]:
        return self.rows.get(table, [])[1:]  # without the header row

    def count(self, tag: str, inside: Optional[str] = None) -> int:
        return sum(1 for t, _ in self.tags if t == tag) if inside is None else \
            self._count_inside(tag, inside)

    def _count_inside(self, tag: str, ident: str) -> int:
        inside, n = False, 0
        for t, a in self.tags:
            if t == "svg":
                inside = a.get("id") == ident
            elif inside and t == tag:
                n += 1
        return n


@pytest.fixture
def cli_fast() -> bool:
    """The report reads leases: its commands run with the default settings."""
    return False


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A remote with 4 done, 1 failed, 2 running (one of them stale) and 3 queued jobs."""
    tmp = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GIT_CONFIG_GLOBAL", os.devnull)
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        for key in [k for k in os.environ if k.startswith("DISTRIBUTE_")]:
            mp.delenv(key)
        url = "file://" + str(make_bare(tmp))
        init_remote(url, ["alpha", "beta", SCRIPT_JOB, QUOTE_JOB, "gamma", "epsilon", "zeta",
                          URL_JOB])
        one = worker_from_url(url, tmp / "one", "w-one")
        two = worker_from_url(url, tmp / "two", "w.two")
        assert one.get_next_job(queue_jobs_func) == "alpha"
        Path(one.job_dir or "", "result.txt").write_text("ok\n")
        assert two.get_next_job(queue_jobs_func) == "beta"
        assert one.finish_job(queue_jobs_func) == SCRIPT_JOB
        assert two.fail_job(HOSTILE_REASON, queue_jobs_func) == QUOTE_JOB
        one.finish_job()
        two.finish_job()
        assert one.get_next_job(queue_jobs_func) == "gamma"
        two.update_master(_plant)
        one.close()
        two.close()
        yield url


def _plant(ledger: Ledger, root: Path) -> str:
    """Entries another tool could have written: hostile worker names, a long-silent worker."""
    ledger.running.append(Entry("ghost job", HOSTILE_WORKER, "2000-01-01T00:00:00Z", 2))
    ledger.done.append(Entry("planted", EVIL_WORKER, utc_now(), 1))
    ledger.write(root)
    return "tester planted two entries"


def _report(cli: Run, url: str, tmp: Path, *args: str) -> tuple[str, Page]:
    out = tmp / "page.html"
    proc = cli("report", url, "-o", str(out), *args)
    assert f"wrote {out}" in proc.stdout
    text = out.read_text(encoding="utf-8")
    return text, Page(text)


def test_page_structure_counts_and_names(cli: Run, remote: str, tmp_path: Path) -> None:
    text, page = _report(cli, remote, tmp_path)
    assert {k: page.by_id[f"count-{k}"] for k in ("queued", "running", "done", "failed")} == \
        {"queued": "3", "running": "2", "done": "4", "failed": "1"}
    assert page.by_id["progress"] == "50.0 %"
    workers = {row[1]: row for row in page.body_rows("workers")}
    assert set(workers) == {"w-one", "w.two", HOSTILE_WORKER, EVIL_WORKER}
    assert workers["w-one"][2] == "2" and workers["w-one"][7] == "gamma"
    assert workers["w.two"][2:4] == ["1", "1"]
    assert [r[1] for r in page.body_rows("workers")] == \
        ["w-one", EVIL_WORKER, "w.two", HOSTILE_WORKER]  # most done, then fewest failed first
    running = {row[0]: row for row in page.body_rows("running")}
    assert set(running) == {"gamma", "ghost job STALE"}
    assert running["ghost job STALE"][1:3] == [HOSTILE_WORKER, "2"]
    [failed] = page.body_rows("failed")
    assert failed[0] == "beta" and failed[1] == "w.two" and failed[4] == HOSTILE_REASON
    assert [r[0] for r in page.body_rows("recent")] == ["planted", QUOTE_JOB, SCRIPT_JOB, "alpha"]
    assert page.by_id["queue"] == "epsilonzeta" + URL_JOB
    assert page.by_id["lock"] == "free"
    master = git_out(remote, "rev-parse", "master", tmp=tmp_path).strip()
    assert master[:12] in page.by_id["footer"]
    assert page.count("rect", inside="chart-timeline") >= 1
    assert page.count("rect", inside="chart-durations") >= 1
    assert page.count("title") >= 3  # the page's and the bars' tooltips
    # hostile strings stayed text: no script, no handler, nothing that loads anything
    assert page.count("script") == 0 and page.count("img") == 0 and page.count("link") == 0
    assert SCRIPT_JOB not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    for tag, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        for name in ("src", "href", "action", "xlink:href", "formaction", "background"):
            assert name not in attrs, (tag, attrs)
        assert not any("://" in (value or "") for value in attrs.values()), (tag, attrs)
    assert text.replace(remote, "").count("://") == 1 and URL_JOB in page.by_id["queue"]
    assert "url(" not in text and "@import" not in text
    csp = [a["content"] for t, a in page.tags if t == "meta" and
           a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in str(csp[0])
    assert not any(a.get("http-equiv") == "refresh" for _, a in page.tags)


def test_json_is_the_model_and_status_is_derived_from_it(cli: Run, remote: str,
                                                         tmp_path: Path) -> None:
    worker = worker_from_url(remote, tmp_path / "reader", "reader")
    try:
        snap = worker.snapshot()
        history = read_history(worker.clone, worker.clone.resolve(ORIGIN_MASTER))
    finally:
        worker.close()
    model = build_model(snap, history, job_lease_s=600, lock_lease_s=60, remote=remote)
    assert status_subset(model) == status_json(snap)  # one read feeds both commands
    data = json.loads(cli("report", remote, "--json").stdout)
    assert data.keys() == model.keys()
    assert set(status_subset(data)) == {"queued", "running", "done", "failed", "lock", "counts",
                                        "fleet", "waiting", "stages", "host"}
    assert data["counts"] == {"queued": 3, "running": 2, "done": 4, "failed": 1}
    durations = {d["job"]: d["duration_s"] for d in data["done"]}
    assert durations["planted"] is None  # no claim commit for it in the history
    assert all(isinstance(durations[j], int) and durations[j] >= 0
               for j in ("alpha", SCRIPT_JOB, QUOTE_JOB))
    assert isinstance(data["failed"][0]["duration_s"], int)
    first_parent = git_out(remote, "rev-list", "--first-parent", "--count", "master",
                           tmp=tmp_path)
    assert data["history"] == {"commits": int(first_parent), "complete": True}
    assert data["master"]["commit"] == git_out(remote, "rev-parse", "master", tmp=tmp_path).strip()
    assert [w["worker"] for w in data["workers"]] == ["w-one", EVIL_WORKER, "w.two",
                                                      HOSTILE_WORKER]
    assert data["workers"][0]["took"] == 3 and data["workers"][0]["current"] == ["gamma"]
    assert [r["stale"] for r in data["running"]] == [False, True]
    assert sum(data["timeline"]["done"]) == 4 and sum(data["timeline"]["failed"]) == 1
    assert data["durations"]["count"] == 3 and sum(data["durations"]["bins"]) == 3
    assert data["throughput"]["overall_per_s"] is None or data["throughput"]["overall_per_s"] > 0
    # -o FILE with --json writes the same object to the file
    cli("report", remote, "--json", "-o", "data.json")
    assert json.loads(Path("data.json").read_text())["counts"] == data["counts"]


def test_history_over_each_transport_then_only_new_commits(cli: Run, any_remote: str,
                                                          tmp_path: Path) -> None:
    """The cached copy starts shallow: its history is fetched once (commits only), kept, then
    extended; a rewritten master is read again in full."""
    init_remote(any_remote, ["a", "b", "c"])
    worker = worker_from_url(any_remote, tmp_path / "w", "w")
    try:
        worker.get_next_job(queue_jobs_func)
        worker.finish_job()
        first = json.loads(cli("report", any_remote, "--json").stdout)
        assert first["history"]["complete"] and first["durations"]["count"] == 1
        worker.get_next_job(queue_jobs_func)
        worker.finish_job(queue_jobs_func)
        worker.fail_job("no luck")
    finally:
        worker.close()
    data = json.loads(cli("report", any_remote, "--json").stdout)
    count = int(git_out(any_remote, "rev-list", "--first-parent", "--count", "master",
                        tmp=tmp_path))
    assert data["history"] == {"commits": count, "complete": True}
    assert [d["duration_s"] is not None for d in data["done"]] == [True, True]
    assert data["failed"][0]["duration_s"] is not None
    assert data["workers"][0]["took"] == 3
    if not any_remote.startswith("file://"):
        return
    # master rewritten outside the library (its tip replaced): the kept list no longer fits
    mirror = tmp_path / "inspect.git"
    tip = git_out(any_remote, "rev-parse", "master", tmp=tmp_path).strip()
    tree = git_out(any_remote, "rev-parse", f"{tip}^{{tree}}", tmp=tmp_path).strip()
    env = dict(os.environ, GIT_AUTHOR_NAME="admin", GIT_AUTHOR_EMAIL="a@x",
               GIT_COMMITTER_NAME="admin", GIT_COMMITTER_EMAIL="a@x")
    rewritten = subprocess.run(["git", "-C", str(mirror), "commit-tree", tree, "-p", f"{tip}~2",
                                "-m", "admin squashed the last commits"], env=env, check=True,
                               capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "-C", str(mirror), "push", "-q", "-f", any_remote,
                    f"{rewritten}:refs/heads/master"], check=True)
    data = json.loads(cli("report", any_remote, "--json").stdout)
    assert data["history"]["commits"] == count - 1
    assert data["master"]["commit"] == rewritten


def test_model_durations_rates_and_buckets() -> None:
    """The arithmetic on a history given as data: starts from claims, a take-back by the first
    worker, a retried job, a far outlier, a timeline spanning days."""
    t0 = 1_700_000_000
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
    commits = [(t0, "initialise the distribute job ledger"), (t0, "cli-x added 4 jobs"),
               (t0 + 10, "a took job j1"), (t0 + 20, "b took job j2"),
               (t0 + 30, "b failed job j2: ValueError: x: y"),
               (t0 + 700, "c requeued job j1 (a silent for 690s)"), (t0 + 710, "c took job j1"),
               (t0 + 800, "a finished job j1"),  # a came back and took its job back
               (t0 + 900, "b took job j2"), (t0 + 960, "b finished job j2"),
               (t0 + 3 * 86400, "c took job j3"), (t0 + 3 * 86400 + 99_999, "c finished job j3")]
    ledger = Ledger(queued=["j4"], done=[Entry("j1", "a", iso(t0 + 800)),
                                         Entry("j2", "b", iso(t0 + 960), 2),
                                         Entry("j3", "c", iso(t0 + 3 * 86400 + 99_999))])
    snap = {"ledger": ledger, "lock": {"holder": "c", "held_s": 90.0}, "heartbeats": {}}
    now = t0 + 3 * 86400 + 100_000
    model = build_model(snap, History(commits, True, "f" * 40), now=now, lock_lease_s=60)
    assert [d["duration_s"] for d in model["done"]] == [790, 60, 99_999]
    assert model["lock"] == {"holder": "c", "held_s": 90.0, "stale": True}
    assert {w["worker"]: (w["done"], w["took"], w["median_s"]) for w in model["workers"]} == \
        {"a": (1, 1, 790.0), "b": (1, 2, 60.0), "c": (1, 2, 99_999.0)}
    tp = model["throughput"]
    assert tp["overall_per_s"] == round(3 / (3 * 86400 + 99_999 - 10), 4)
    assert tp["now_per_s"] == round(3 / (now - t0 - 10), 4) and tp["eta_s"] is None
    tl = model["timeline"]
    assert tl["bucket_s"] == 3600 and sum(tl["done"]) == 3 and len(tl["done"]) <= 120
    d = model["durations"]
    assert (d["count"], d["median_s"], d["max_s"]) == (3, 790.0, 99_999)
    assert sum(d["bins"]) == 3 and d["bins"][-1] >= 1
    assert model["master"] == {"commit": "f" * 40, "committed_at": iso(t0 + 3 * 86400 + 99_999)}
    page = Page(render(model, refresh_s=2.5))
    assert [a["content"] for t, a in page.tags if a.get("http-equiv") == "refresh"] == ["3"]
    assert page.by_id["median"] == "13 m 10 s" and "held by c" in page.by_id["lock"]


def test_empty_and_freshly_initialised_remote(cli: Run, file_remote: str, tmp_path: Path) -> None:
    err = cli("report", file_remote, rc=1).stderr
    assert err.startswith("error: ") and "distribute init" in err
    assert len(err.strip().splitlines()) == 1
    init_remote(file_remote)
    text, page = _report(cli, file_remote, tmp_path)
    assert [page.by_id[f"count-{k}"] for k in ("queued", "running", "done", "failed")] == \
        ["0"] * 4
    assert "no jobs yet" in page.by_id["empty"]
    for empty in ("timeline-empty", "durations-empty", "workers-empty", "running-empty",
                  "failed-empty", "queue-empty", "recent-empty"):
        assert empty in page.by_id, empty
    assert page.count("svg") == 0
    data = json.loads(cli("report", file_remote, "--json").stdout)
    assert data["counts"] == {"queued": 0, "running": 0, "done": 0, "failed": 0}
    assert data["workers"] == [] and data["timeline"]["bucket_s"] is None
    assert data["progress"]["percent"] is None and data["history"]["commits"] == 1


def test_publish_commits_the_page_to_its_own_branch(cli: Run, file_remote: str,
                                                    tmp_path: Path) -> None:
    init_remote(file_remote, ["one", "two"])
    master = git_out(file_remote, "rev-parse", "master", tmp=tmp_path)
    proc = cli("report", file_remote, "-o", "page.html", "--publish")
    assert "published index.html on branch report" in proc.stdout
    page = Path("page.html").read_text(encoding="utf-8")
    assert git_out(file_remote, "show", "report:index.html", tmp=tmp_path) == page
    assert git_out(file_remote, "ls-tree", "--name-only", "report", tmp=tmp_path) == "index.html\n"
    assert git_out(file_remote, "log", "--format=%P", "report", tmp=tmp_path).strip() == ""
    assert git_out(file_remote, "rev-parse", "master", tmp=tmp_path) == master
    first = git_out(file_remote, "rev-parse", "report", tmp=tmp_path)
    cli("add", file_remote, "three")
    master = git_out(file_remote, "rev-parse", "master", tmp=tmp_path)
    cli("report", file_remote, "-o", "page.html", "--publish")  # replaces it: still one commit
    assert git_out(file_remote, "rev-parse", "report", tmp=tmp_path) != first
    assert git_out(file_remote, "rev-list", "--count", "report", tmp=tmp_path).strip() == "1"
    assert master[:12] in git_out(file_remote, "show", "report:index.html", tmp=tmp_path)
    assert git_out(file_remote, "rev-parse", "master", tmp=tmp_path) == master
    # another branch name; a branch holding anything else is left alone
    cli("report", file_remote, "--json", "-o", "d.json", "--publish", "pages/live")
    assert "Jobs report" in git_out(file_remote, "show", "pages/live:index.html", tmp=tmp_path)
    foreign = git_out(file_remote, "rev-parse", "master", tmp=tmp_path).strip()
    subprocess.run(["git", "push", "-q", file_remote, f"{foreign}:refs/heads/site"], check=True,
                   cwd=tmp_path / "inspect.git")
    err = cli("report", file_remote, "--publish", "site", rc=1).stderr
    assert "not written by `distribute report`" in err
    assert git_out(file_remote, "rev-parse", "site", tmp=tmp_path).strip() == foreign
    assert git_out(file_remote, "rev-parse", "master", tmp=tmp_path) == master
    for bad in ("master", "a..b", "-x", "file:///elsewhere.git"):
        assert "--publish" in cli("report", file_remote, f"--publish={bad}", rc=2).stderr


def test_watch_rewrites_the_page_until_interrupted(file_remote: str, tmp_path: Path,
                                                  cli: Run) -> None:
    init_remote(file_remote, ["a"])
    out = tmp_path / "live.html"
    proc = subprocess.Popen([sys.executable, "-m", "distribute", "report", file_remote, "-o",
                             str(out), "--watch", "0.2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(tmp_path, fast=False))
    wait_line(proc, f"wrote {out}")
    wait_line(proc, f"wrote {out}")
    page = Page(out.read_text(encoding="utf-8"))
    assert [a["content"] for t, a in page.tags if a.get("http-equiv") == "refresh"] == ["1"]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert not list(tmp_path.glob(".live.html.*"))  # no half-written page left behind
    assert "positive" in cli("report", file_remote, "--watch", "0", rc=2).stderr
    assert "-o FILE" in cli("report", file_remote, "-o", "-", "--watch", "1", rc=2).stderr
    assert "cannot write" in cli("report", file_remote, "-o", str(tmp_path / "no" / "x.html"),
                                 rc=1).stderr
    assert "example" in cli("report", "--help").stdout
    assert cli("report", file_remote, "-o", "-").stdout.startswith("<!DOCTYPE html>")


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered rows (RGB or RGBA, 8 bits) of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert header is not None
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prior = [], bytes(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prior))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prior[i]) >> 1)) & 255
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prior[i], prior[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prior = rows[-1]
    return width, height, rows


def _chromium() -> Optional[str]:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_page_renders_in_headless_chromium(cli: Run, remote: str, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    _report(cli, remote, tmp_path)
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1200,1600", (tmp_path / "page.html").as_uri()],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert shot.exists(), proc.stderr[-2000:]
    width, height, rows = _png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 1600)
    bpp = len(rows[0]) // width
    colors: dict[bytes, int] = {}
    for row in rows[::4]:
        for i in range(0, len(row), bpp * 4):
            px = row[i:i + 3]
            colors[px] = colors.get(px, 0) + 1
    total = sum(colors.values())
    background = max(colors.values())
    assert len(colors) >= 20, len(colors)  # text, cards, bars, charts: not a blank page
    assert background / total < 0.97
    near = lambda rgb, want: all(abs(a - b) <= 24 for a, b in zip(rgb, want))  # noqa: E731
    assert any(near(px, (0x2d, 0xa4, 0x4e)) for px in colors), "no green 'done' bar drawn"
    assert any(near(px, (0xcf, 0x22, 0x2e)) for px in colors), "no red 'failed' mark drawn"
