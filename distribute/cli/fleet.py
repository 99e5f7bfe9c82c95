"""``distribute fleet``: keep a Vast.ai fleet working on a remote within a budget
(:mod:`distribute.vast.fleet` is the controller; this module parses, asks and prints)."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from .. import vast
from ..vast.fleet import Fleet, FleetConfig
from .common import add_command, cache_worker, resolve_remote, say
from .vast import _SPEC, _amount, _check_query, _env_options, _usage

EXAMPLE = """examples:
  distribute fleet git@github.com:me/jobs.git --image me/distribute-worker:1 --run myjobs:run \\
      --nodes 8 --max-price 0.40 --interruptible --budget 25 --query 'gpu_ram>=16'
  distribute fleet REMOTE ... --dry-run          # the offers it would take, rent nothing

Nodes are labelled after the remote: a second `fleet` on the same remote adopts them (stop one
with Ctrl-C and `leave`, start it again later). Exit status: 0 when nothing is left queued or
running (every node destroyed), 3 when the budget is reached (every node destroyed)."""


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``fleet`` to ``subparsers``."""
    p = add_command(subparsers, "fleet", "keep up to N Vast.ai nodes working on the remote's "
                    "jobs within a budget, replacing preempted, dead and never-booted ones",
                    cmd_fleet, parents, epilog=EXAMPLE)
    p.add_argument("remote", nargs="?", metavar="REMOTE",
                   help="the shared git remote, reachable from the nodes (default: "
                        "DISTRIBUTE_REMOTE)")
    p.add_argument("--image", required=True, help="the worker image (built from Dockerfile)")
    p.add_argument("--run", required=True, metavar="MOD:FN", help="the job function")
    p.add_argument("--nodes", type=int, required=True, metavar="N",
                   help="most nodes at once (fewer when fewer jobs are left)")
    p.add_argument("--max-price", type=_amount("--max-price"), required=True, metavar="DPH",
                   help="most $/hour per node")
    p.add_argument("--interruptible", action="store_true",
                   help="rent interruptible (bid) instances: cheaper, may be preempted; their "
                        "jobs resume from the last checkpoint on another node")
    p.add_argument("--bid", type=_amount("--bid"), metavar="DPH",
                   help="with --interruptible: the bid in $/hour (default: each offer's minimum)")
    p.add_argument("--budget", type=_amount("--budget"), metavar="USD",
                   help="most dollars to spend: before spent plus committed would pass it, every "
                        "node is destroyed and the command exits 3")
    p.add_argument("--query", help="offer filter, like 'gpu_ram>=16 reliability>0.98'")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="more environment for the nodes (repeatable)")
    p.add_argument("--poll", type=_amount("--poll"), default=30.0, metavar="S",
                   help="seconds between two looks at the remote and the nodes (30)")
    p.add_argument("--boot-timeout", type=_amount("--boot-timeout"), default=600.0, metavar="S",
                   help="a node whose worker has not shown up on the remote after S seconds is "
                        "destroyed and its machine avoided for a while (600)")
    p.add_argument("--disk", type=_amount("--disk"), default=16, metavar="GB",
                   help="disk per node (16)")
    p.add_argument("--on-interrupt", choices=["ask", "leave", "destroy"], default="ask",
                   help="what Ctrl-C does with the nodes: ask (on a terminal; otherwise destroy), "
                        "leave them running (a later `fleet` adopts them), or destroy them")
    p.add_argument("--dry-run", action="store_true",
                   help="show the offers that would be taken first; rent nothing")


def _config(args: argparse.Namespace) -> FleetConfig:
    """The controller's configuration from the arguments (usage errors exit 2)."""
    _check_query(args)
    if args.nodes < 1:
        _usage(args, "--nodes wants a positive number")
    if not _SPEC.match(args.run):
        _usage(args, f"--run wants MODULE:FUNCTION, not {args.run!r}")
    if args.bid is not None and not args.interruptible:
        _usage(args, "--bid goes with --interruptible")
    if args.bid is not None and args.bid > args.max_price:
        _usage(args, f"--bid {args.bid:g} is above --max-price {args.max_price:g}")
    return FleetConfig(resolve_remote(args.remote), args.image, args.run, args.nodes,
                       args.max_price, args.interruptible, args.bid, args.budget, args.query,
                       _env_options(args), args.poll, args.boot_timeout, args.disk)


def cmd_fleet(args: argparse.Namespace) -> int:
    """``distribute fleet``: run the controller in the foreground until the fleet is over."""
    config = _config(args)
    if args.dry_run:
        kind = "bid" if config.interruptible else "on-demand"
        offers = vast.search_offers(config.max_price, config.query, offer_type=kind,
                                    disk=config.disk)[:config.nodes]
        say(f"would rent up to {config.nodes} node(s) from {len(offers)} matching offer(s):")
        for o in offers:
            price = o.get("min_bid") if config.interruptible else o.get("dph_total")
            say(f"  offer {o['id']}: {o.get('gpu_name')} ${float(price or 0):.4f}/h "
                f"{o.get('geolocation') or ''}".rstrip())
        return 0
    with cache_worker(config.remote) as worker:
        fleet = Fleet(config, worker, say)
        try:
            return fleet.run()
        except KeyboardInterrupt:
            return _interrupted(fleet, args.on_interrupt)


def _interrupted(fleet: Fleet, choice: str) -> int:
    """Ctrl-C: leave the nodes running (a later ``fleet`` adopts them) or destroy them."""
    if choice == "ask":
        choice = "destroy"
        if sys.stdin.isatty():
            answer = input(f"\n{len(fleet.nodes)} node(s) are running: [l]eave them or "
                           "[d]estroy them? ").strip().lower()
            choice = "leave" if answer.startswith("l") else "destroy"
    if choice == "destroy":
        fleet.destroy_all("stopped by Ctrl-C")
        say(f"fleet: every node destroyed; spent ${fleet.spent:.4f}")
        return 130
    say(f"fleet: left {len(fleet.nodes)} node(s) running; `distribute fleet` on the same remote "
        "adopts them, `distribute terminate` destroys them")
    return 130
