"""``distribute upgrade`` and ``distribute prune``: keeping a big remote lean."""
from __future__ import annotations

import argparse
from typing import Any, Sequence

from .common import add_command, add_remote_argument, cache_worker, plural, resolve_remote, say


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add the ``upgrade`` and ``prune`` subcommands to ``subparsers``."""
    text = ("leave a remote made by an older version as a fresh one of its size would be "
            "(one commit)")
    p = add_command(
        subparsers, "upgrade", text, cmd_upgrade, parents, description=text + ": results move to "
        "the sharded layout updates/<ab>/<cd>/<slug>/ and the older records of done.txt into "
        "segments done/<seq>.txt. Remotes made by older versions keep working without it, but "
        "every commit then rewrites one big updates/ tree and done.txt. Moving results is "
        "refused while jobs run. Says what `prune` would do when the remote keeps many branches.",
        epilog="example:\n  distribute upgrade file:///srv/jobs.git")
    add_remote_argument(p)
    text = ("delete refs nobody needs: idle heartbeats, old wait refs, branches of done and "
            "failed jobs")
    p = add_command(
        subparsers, "prune", text, cmd_prune, parents, description=text + ". Safe while workers "
        "run (a live worker pushes its heartbeat again). A job branch goes when its job is done "
        "or failed (not queued, running, or resuming from it) and its tip is in master's "
        "history, and only if unchanged: a failed job's branch kept by an older version, or an "
        "attempt that never merged, first has its tip put into master's history (one commit per "
        "100 branches, the failed record noting it for `requeue --resume`), so no commit is "
        "lost. Thousands of branches per push.",
        epilog="examples:\n  distribute prune file:///srv/jobs.git\n"
               "  distribute prune file:///srv/jobs.git --keep-branches")
    add_remote_argument(p)
    p.add_argument("--keep-branches", action="store_true", help="do not delete job branches")


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Move a flat remote's results to the sharded layout and roll ``done.txt`` into segments;
    say what ``prune`` would do when the remote keeps many job branches."""
    from ..maintenance import prune_hint, upgrade_layout

    url = resolve_remote(args.remote)
    with cache_worker(url) as worker:
        done = upgrade_layout(worker)
        hint = prune_hint(worker, url)
    if done is None:
        say(f"{url} already has the sharded layout and a short done.txt; nothing changed")
    else:
        what = [] if done.moved is None else \
            [f"moved {plural(done.moved, 'job directory')} to the sharded layout"]
        if done.segments:
            what.append(f"put {plural(done.archived, 'done record')} into "
                        f"{plural(done.segments, 'done segment')}")
        say(f"{' and '.join(what)} on {url}")
    if hint:
        say(hint)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete idle heartbeat refs, old wait refs and spent job branches."""
    from ..maintenance import prune

    url = resolve_remote(args.remote)
    with cache_worker(url) as worker:
        deleted = prune(worker, branches=not args.keep_branches)
    say(f"deleted {plural(len(deleted['heartbeats']), 'heartbeat ref')}, "
        f"{plural(len(deleted['waits']), 'wait ref')} and "
        f"{plural(len(deleted['branches']), 'job branch')} on {url}"
        + (f" ({plural(len(deleted['kept']), 'branch')} of failed or unmerged "
           "attempts first kept in master's history)" if deleted["kept"] else ""))
    return 0
