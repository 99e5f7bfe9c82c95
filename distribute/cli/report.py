"""``distribute report REMOTE [-o FILE] [--json] [--watch SECONDS] [--publish [BRANCH]]``.

Writes one self-contained HTML page of the jobs (:mod:`distribute.report.page`) built from one read
of the remote (:mod:`distribute.report.model`); ``--publish`` commits it as ``index.html`` to a
branch of the remote that is not ``master`` (default ``report``; :mod:`distribute.report.publish`),
so that a forge's static pages can serve it. Exit codes: 0 done, 1 an error explained in one
sentence, 2 bad usage.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ..exceptions import DistributeError
from ..redact import redact
from ..repo import Clone
from ..report import DEFAULT_BRANCH, PAGE_FILE, collect, is_page_branch, publish_page, render
from .common import UsageError, add_command, add_remote_argument, cache_worker, resolve_remote, say
from .status_view import progress_line

HELP = "write a self-contained HTML progress page of the jobs (or --json)"
EPILOG = (f"""examples:
  distribute report file:///srv/jobs.git                          # writes report.html
  distribute report file:///srv/jobs.git -o /srv/www/jobs.html --watch 60
  distribute report file:///srv/jobs.git --json > report.json     # the same data as JSON
  distribute report file:///srv/jobs.git --publish                # also commit it to branch """
          f"""{DEFAULT_BRANCH}
  distribute report file:///srv/jobs.git --watch 300 --publish pages

The page has no script and fetches nothing: open it from a file or any static host. It shows the
counts, progress, throughput and ETA, the workers' leaderboard, charts of jobs finished over time
and of job durations, running jobs (stale ones marked), failures, the head of the queue, the lock.
--publish commits only {PAGE_FILE}, as a commit without parent that replaces the branch's last one
(compare-and-swap), never master; put REMOTE before --publish. The first report of a remote
fetches master's history once (commits only) into the cached copy.""")


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add the ``report`` subcommand (``func`` = :func:`handle`) to ``subparsers``."""
    p = add_command(subparsers, "report", HELP, handle, parents, epilog=EPILOG)
    add_remote_argument(p)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write (default: report.html; with --json: standard output; "
                        "- is standard output)")
    p.add_argument("--json", action="store_true",
                   help="write the report's data as one JSON object instead of the page")
    p.add_argument("--watch", type=float, metavar="SECONDS",
                   help="rewrite the output every SECONDS until Ctrl-C (the page reloads itself)")
    p.add_argument("--publish", nargs="?", const=DEFAULT_BRANCH, metavar="BRANCH",
                   help=f"commit the page as {PAGE_FILE} to BRANCH of the remote "
                        f"(default: {DEFAULT_BRANCH}; never master)")


def check_branch(name: str) -> str:
    """``name`` if it can be the page's branch: a plain branch name that is not ``master``."""
    if not is_page_branch(name):
        raise UsageError(f"--publish wants a branch name other than master (like "
                         f"{DEFAULT_BRANCH}), not {name!r}; put REMOTE before --publish")
    return name


def handle(args: argparse.Namespace) -> int:
    """Write (and publish) the report once, or every ``--watch`` seconds until Ctrl-C."""
    url = resolve_remote(args.remote)
    if args.watch is not None and args.watch <= 0:
        raise UsageError("--watch wants a positive number of seconds")
    branch = check_branch(args.publish) if args.publish is not None else None
    target = args.output or ("-" if args.json else "report.html")
    if args.watch is not None and target == "-" and not args.json:
        raise UsageError("--watch rewrites a file: give -o FILE (or use --json for JSON lines)")
    with cache_worker(url) as worker:
        if args.watch is None:
            _report_once(worker.clone, collect(worker, url), target, args.json, None, branch)
            return 0
        try:
            while True:
                _report_once(worker.clone, collect(worker, url), target, args.json, args.watch,
                             branch)
                time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0


def _report_once(clone: Clone, model: dict[str, Any], target: str, as_json: bool,
                 refresh_s: Optional[float], branch: Optional[str]) -> None:
    page = render(model, refresh_s) if branch or not as_json else ""
    if as_json:
        write_output(target, redact(json.dumps(model, ensure_ascii=False)) + "\n")
    else:
        write_output(target, page)
    quiet = target == "-"
    if not quiet:
        say(f"wrote {target}: {progress_line(model['counts'])}")
    if branch:
        commit = publish_page(clone, branch, page, model["master"]["commit"] or "")
        if not quiet:
            say(f"published {PAGE_FILE} on branch {branch} ({commit[:12]})")


def write_output(target: str, data: str) -> None:
    """Write ``data`` to ``target`` atomically (readers never see half a page); ``-``: stdout."""
    if target == "-":
        sys.stdout.write(data)
        sys.stdout.flush()
        return
    path = Path(target)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DistributeError(f"cannot write {target}: {exc.strerror or exc}") from None
