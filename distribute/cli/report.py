"""``distribute report REMOTE [-o FILE] [--json] [--watch SECONDS] [--publish [BRANCH]]``.

Writes one self-contained HTML page of the jobs (:mod:`distribute.report_html`) built from one read
of the remote (:mod:`distribute.report_model`); ``--publish`` commits it as ``index.html`` to a
branch of the remote that is not ``master`` (default ``report``), so that a forge's static pages
can serve it. Exit codes: 0 done, 1 an error explained in one sentence, 2 bad usage.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ..exceptions import DistributeError
from ..protocol import utc_now
from ..redact import redact
from ..repo import Clone, RefUpdate
from ..report_html import render
from ..report_model import collect
from .common import UsageError, cache_worker, resolve_remote, say
from .status_view import progress_line

log = logging.getLogger(__name__)

HELP = "write a self-contained HTML progress page of the jobs (or --json)"
DEFAULT_BRANCH = "report"
PAGE_FILE = "index.html"
COMMIT_PREFIX = "distribute report of master"
EPILOG = f"""examples:
  distribute report file:///srv/jobs.git                          # writes report.html
  distribute report file:///srv/jobs.git -o /srv/www/jobs.html --watch 60
  distribute report file:///srv/jobs.git --json > report.json     # the same data as JSON
  distribute report file:///srv/jobs.git --publish                # also commit it to branch {DEFAULT_BRANCH}
  distribute report file:///srv/jobs.git --watch 300 --publish pages

The page has no script and fetches nothing: open it from a file or any static host. It shows the
counts, progress, throughput and ETA, the workers' leaderboard, charts of jobs finished over time
and of job durations, running jobs (stale ones marked), failures, the head of the queue, the lock.
--publish commits only {PAGE_FILE}, as a commit without parent that replaces the branch's last one
(compare-and-swap), never master; put REMOTE before --publish. The first report of a remote
fetches master's history once (commits only) into the cached copy."""
_BRANCH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,99}$")


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add the ``report`` subcommand (``func`` = :func:`handle`) to ``subparsers``."""
    p = subparsers.add_parser("report", help=HELP, description=HELP + ".", epilog=EPILOG,
                              parents=list(parents),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("remote", nargs="?", metavar="REMOTE",
                   help="git URL of the shared remote (default: DISTRIBUTE_REMOTE)")
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
    p.set_defaults(func=handle, _parser=p)


def check_branch(name: str) -> str:
    """``name`` if it can be the page's branch: a plain branch name that is not ``master``."""
    if (not _BRANCH.match(name) or ".." in name or "//" in name or "/." in name or "@{" in name
            or name.endswith(("/", ".", ".lock")) or name in ("master", "HEAD")):
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


def publish_page(clone: Clone, branch: str, page: str, source: str, tries: int = 3) -> str:
    """Commit ``page`` as ``index.html`` to ``refs/heads/<branch>`` on the remote; return the sha.

    The commit is made with plumbing (the copy's checkout is not touched) and has no parent: each
    publication replaces the last one, so the branch does not grow. The push is a
    compare-and-swap on the value just read; a branch that holds anything but a page written by
    this command is never overwritten.
    """
    ref = "refs/heads/" + check_branch(branch)
    blob = _write_object(clone, "blob", page.encode("utf-8"))
    tree = _write_object(clone, "tree", f"100644 {PAGE_FILE}\0".encode() + bytes.fromhex(blob))
    when = utc_now()
    commit = clone.git("commit-tree", tree, "-m",
                       f"{COMMIT_PREFIX} {source[:12] or '(none)'} at {when}").strip()
    for _ in range(tries):
        current = clone.ls_remote(ref).get(ref)
        if current is not None:
            _check_page_commit(clone, ref, current)
        if clone.push([RefUpdate(ref, commit, expect=current or "")]):
            log.info("published %s on %s", commit[:12], ref)
            return commit
        log.info("%s moved while publishing; trying again", ref)
    raise DistributeError(f"branch {branch} kept changing while publishing the page "
                          f"({tries} tries); run the command again")


def _check_page_commit(clone: Clone, ref: str, sha: str) -> None:
    """Refuse to replace a branch whose head is not a page commit of this command."""
    clone.fetch(ref)  # (into FETCH_HEAD only: no local ref is left behind)
    status, out, _ = clone.run("log", "-1", "--format=%P%x00%s", sha)
    parents, _, subject = out.strip().partition("\0")
    if status != 0 or parents or not subject.startswith(COMMIT_PREFIX):
        raise DistributeError(f"branch {ref.removeprefix('refs/heads/')} on the remote holds "
                              "commits not written by `distribute report`; it was left alone "
                              "(choose another branch with --publish BRANCH)")


def _write_object(clone: Clone, kind: str, data: bytes) -> str:
    """Store ``data`` as a git object of ``kind`` in the copy (``hash-object -w``); its sha.

    (A tree is written from its binary form: the same object ``git mktree`` makes, without stdin.)
    """
    fd, name = tempfile.mkstemp(prefix="distribute-report-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return clone.git("hash-object", "-t", kind, "-w", "--no-filters", "--", name).strip()
    finally:
        os.unlink(name)
