"""``distribute mirror REMOTE [--since COMMIT] [--batch N] [--pack N] [--dry-run] [--status]``.

The catch-up of the Hugging Face mirror, and how far the mirror lags the ledger.
``register(subparsers)`` adds the command to the ``distribute`` parser; ``main(argv)`` runs it on
its own (``python -m distribute.cli.hub mirror ...``). Exit codes: 0 done (also when there was
nothing to upload), 1 an error explained in one sentence on stderr, 2 bad usage.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from typing import Any, Optional, Sequence

from .. import settings
from ..exceptions import DistributeError
from ..redact import redact
from .common import add_command, add_remote_argument

log = logging.getLogger(__name__)


def _with_defaults(*names: str) -> str:
    """``NAME (default), ...`` of these settings, the defaults from the settings table."""
    rows = [settings.setting_row(name) for name in names]
    return ", ".join(f"{r.name} ({r.default})" if r.default else r.name for r in rows)


HELP = "upload done jobs' results that are missing or differ on the Hugging Face repository"
EPILOG = """examples:
  distribute mirror file:///srv/jobs.git                 # everything not yet mirrored
  distribute mirror file:///srv/jobs.git --status        # how far the Hub lags the ledger
  distribute mirror file:///srv/jobs.git --batch 200     # at most 200 jobs per Hub commit
  distribute mirror file:///srv/jobs.git --pack 100      # a new repository: tar shards of 100 jobs
  distribute mirror file:///srv/jobs.git --since 1a2b3c  # only jobs finished after that commit
  distribute mirror file:///srv/jobs.git --dry-run       # list the jobs that are not mirrored

""" + textwrap.fill(
    "settings: HF_REPO_ID (namespace/name), " + _with_defaults(
        "HF_TOKEN", "HF_REPO_TYPE", "HF_ENDPOINT", "DISTRIBUTE_MIRROR_BATCH",
        "DISTRIBUTE_HF_COMMITS_PER_HOUR", "DISTRIBUTE_HF_MAX_WAIT_S", "DISTRIBUTE_HF_PACK",
        "DISTRIBUTE_HF_RETRIES", "DISTRIBUTE_HF_TIMEOUT_S", "DISTRIBUTE_HF_BACKOFF_S")
    + " (environment or .env). Safe to run repeatedly and while workers run: files already on "
    "the Hub with the same content are not sent again, and commits share the fleet's budget of "
    "commits per hour (see docs/hub.md).", width=98)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add the ``mirror`` subcommand (``func`` = :func:`handle`) to ``subparsers``."""
    p = add_command(subparsers, "mirror", HELP, handle, parents, epilog=EPILOG)
    add_remote_argument(p)
    p.add_argument("--since", metavar="COMMIT",
                   help="only jobs finished after this commit of master")
    p.add_argument("--batch", type=_positive, metavar="N",
                   help="most jobs per Hub commit (default: DISTRIBUTE_MIRROR_BATCH, else "
                        f"{settings.table_default('DISTRIBUTE_MIRROR_BATCH')})")
    p.add_argument("--pack", type=_positive, metavar="N",
                   help="in a new repository, pack N jobs per tar shard (DISTRIBUTE_HF_PACK)")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be uploaded, upload nothing")
    p.add_argument("--status", action="store_true",
                   help="say how far the Hub lags the ledger (no Hub request) and exit")
    p.add_argument("--json", action="store_true", help="with --status: print one JSON object")


def _say(text: str) -> None:
    print(redact(text), flush=True)


def _ago(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def show_status(worker: Any, as_json: bool) -> int:
    """Print :func:`distribute.hub.mirror_status` (one JSON object with ``as_json``)."""
    from ..hub import mirror_status

    st = mirror_status(worker)
    if as_json:
        _say(json.dumps(st.as_json(), sort_keys=True))
        return 0
    _say(f"repository: {st.repo} ({st.layout})")
    _say(f"mirrored:   {st.mirrored} of {st.done} done jobs; lag {st.lag}"
         + (f" (oldest: {st.oldest_pending}, finished {_ago(st.oldest_pending_age_s)})"
            if st.oldest_pending else ""))
    _say(f"commits:    last {st.last_commit[:12] or '-'} {_ago(st.last_commit_age_s)}; "
         + (f"{st.committing} is committing now" if st.committing else
            f"next slot in {st.next_commit_in_s:.0f}s") + f" (budget {st.commits_per_hour:g}/hour)")
    return 0


def handle(args: argparse.Namespace) -> int:
    """Run the catch-up (or ``--status``) for ``args`` and print what it did."""
    from ..hub import catch_up, check_settings  # the Hub client loads slowly
    from .common import cache_worker

    url = args.remote or settings.get_env("DISTRIBUTE_REMOTE")
    if not url:
        raise DistributeError("no remote given: pass REMOTE or set DISTRIBUTE_REMOTE "
                              "(in the environment or a .env file)")
    s = check_settings()
    with cache_worker(url) as worker:
        if args.status:
            return show_status(worker, args.json)
        report = catch_up(worker, since=args.since, batch=args.batch, dry_run=args.dry_run,
                          pack=args.pack)
    where = f"{s.repo_type} {s.repo_id}"
    for note in report.skipped:
        _say(f"not uploaded: {note}")
    scope = f"{report.done} done jobs" + (f" finished after {args.since}" if args.since else "")
    if args.dry_run:
        _say(f"{scope} at {report.commit[:12]}: {len(report.pending)} not (fully) mirrored "
             f"to {where}, {report.up_to_date} mirrored, {report.empty} without files")
        for job in report.pending:
            _say(f"  {job}")
    elif not report.pending:
        _say(f"nothing to upload: {scope} at {report.commit[:12]} are mirrored to {where}"
             + (f" ({report.empty} have no files)" if report.empty else ""))
    else:
        waited = (f", {report.waited_s:.0f}s waiting for commit slots"
                  if report.waited_s >= 1 else "")
        _say(f"mirrored {report.uploaded_jobs} jobs ({report.uploaded_files} files) to {where} in "
             f"{len(report.commits)} commits from git {report.commit[:12]}; "
             f"{report.up_to_date} were already up to date{waited}")
    return 0


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``mirror`` as a stand-alone command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="distribute", description="git-distribute's Hub mirror.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    parser.add_argument("--env-file", metavar="FILE",
                        help="read settings from FILE instead of .env")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register(sub)
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(levelname)s: %(message)s"))
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO if args.verbose else logging.WARNING)
    for noisy in ("git", "httpx", "httpx2"):  # GitPython's commands, one line per HTTP request
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings.use_env_file(args.env_file)
        return int(args.func(args))
    except DistributeError as exc:
        print(redact(f"error: {exc}"), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
