"""The Vast.ai commands of ``distribute``: ``rent``, ``nodes``, ``terminate``, ``offers``.

:func:`register` adds them to the main command line's subparsers; :func:`main` runs them alone
(``python -m distribute.cli.vast rent ...``). Handlers print, return an exit code, and raise
:class:`~distribute.vast.VastError` for failures the command line shows as one sentence.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, NoReturn, Optional, Sequence

from .. import settings, vast
from ..exceptions import DistributeError
from ..protocol import utc_now
from ..redact import redact
from .common import add_command

log = logging.getLogger(__name__)
NODES_FILE = settings.table_default("DISTRIBUTE_VAST_NODES")
_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.I)
_LOCAL = re.compile(r"^(file://|/|\.|~)|://(localhost|127\.|\[::1\])")
EXAMPLES = {
    "rent": "examples:\n"
            "  distribute rent --max-price 0.40 --nodes 4 --image me/distribute-worker:1 \\\n"
            "      --remote git@github.com:me/jobs.git --run myjobs:run --self-destruct \\\n"
            "      --query 'gpu_ram>=16 reliability>0.98' --env DISTRIBUTE_SSH_KEY=\"$(cat key)\"\n"
            "  distribute rent ... --dry-run     # show the offers and the node's command only",
    "nodes": "examples:\n  distribute nodes\n  distribute nodes --all --json\n"
             "  distribute nodes --logs 7000001 --tail 50",
    "terminate": "examples:\n  distribute terminate --all\n  distribute terminate 7000001 7000002",
    "offers": "examples:\n  distribute offers --max-price 0.5\n"
              "  distribute offers --max-price 1 --query 'num_gpus=2 gpu_name in [RTX_4090,A100]'",
}


def _amount(option: str) -> Any:
    """An argparse ``type`` reading a positive finite number by the settings' rule (no nan, inf)."""

    def parse(text: str) -> float:
        try:
            return settings.number(option, 0.0, text)
        except settings.SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``rent``, ``nodes``, ``terminate`` and ``offers`` to ``subparsers``; each parser's
    ``func`` default is its handler ``(args) -> exit code``."""

    def add(name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        return add_command(subparsers, name, help_, func, parents, epilog=EXAMPLES[name])

    def nodes_file(p: argparse.ArgumentParser) -> None:
        p.add_argument("--nodes-file", metavar="FILE", help="the node list (default: "
                       f"DISTRIBUTE_VAST_NODES, else ./{NODES_FILE})")

    p = add("rent", "rent Vast.ai machines that run `distribute worker` on the remote", cmd_rent)
    p.add_argument("--max-price", type=_amount("--max-price"), required=True, metavar="P",
                   help="most $/hour per node, storage and bandwidth included")
    p.add_argument("--nodes", type=int, required=True, metavar="N", help="how many nodes")
    p.add_argument("--image", required=True, help="the worker image (built from Dockerfile)")
    p.add_argument("--remote", metavar="REMOTE", help="the shared git remote, reachable from "
                   "the nodes (default: DISTRIBUTE_REMOTE)")
    p.add_argument("--run", metavar="MODULE:FUNCTION",
                   help="the job function on the nodes (default: DISTRIBUTE_RUN)")
    p.add_argument("--query", help="offer filter, like 'gpu_ram>=16 num_gpus=1 reliability>0.98'")
    p.add_argument("--self-destruct", action="store_true",
                   help="nodes destroy themselves once the queue is done, with the key Vast gives "
                        "each instance (no account key is sent unless VAST_NODE_API_KEY is set)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VAL",
                   help="more environment for the nodes (repeatable), e.g. "
                        "DISTRIBUTE_EXTRA_PIP='mypkg==1.2'")
    p.add_argument("--disk", type=_amount("--disk"), default=16, metavar="GB",
                   help="disk per node (16)")
    p.add_argument("--label", default="distribute", help="instance label prefix (distribute)")
    p.add_argument("--ssh", action="store_true",
                   help="also open SSH (Vast's entrypoint then starts the worker via onstart)")
    p.add_argument("--dry-run", action="store_true",
                   help="show the offers that would be taken and what each node runs; rent none")
    nodes_file(p)
    p = add("nodes", "show the rented nodes and their status", cmd_nodes)
    p.add_argument("--all", action="store_true", help="every instance of the account")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.add_argument("--logs", type=int, metavar="ID", help="print the container log of instance ID")
    p.add_argument("--tail", type=int, default=200, metavar="N", help="log lines (200)")
    nodes_file(p)
    p = add("terminate", "destroy rented nodes (their disks too; billing stops)", cmd_terminate)
    p.add_argument("ids", nargs="*", type=int, metavar="ID", help="instance ids")
    p.add_argument("--all", action="store_true", help="every node in the node list")
    nodes_file(p)
    p = add("offers", "list the offers at most a price, cheapest first", cmd_offers)
    p.add_argument("--max-price", type=_amount("--max-price"), required=True, metavar="P",
                   help="most $/hour")
    p.add_argument("--query", help="offer filter, like 'gpu_ram>=16 num_gpus=1'")
    p.add_argument("--order", default="dph_total", help="sort fields, '-' for descending "
                   "(dph_total)")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="show N offers (20)")
    p.add_argument("--json", action="store_true", help="print the offers as JSON")


def _say(*parts: object, err: bool = False) -> None:
    print(redact(" ".join(str(p) for p in parts)), file=sys.stderr if err else sys.stdout,
          flush=True)


def _table(rows: list[list[object]], header: list[str]) -> None:
    cells = [header] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for row in cells:
        _say("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _usage(args: argparse.Namespace, message: str) -> NoReturn:
    parser: argparse.ArgumentParser = args._parser
    parser.error(redact(message))  # exits 2


def _check_query(args: argparse.Namespace) -> None:
    try:
        vast.parse_query(args.query)
    except ValueError as exc:
        _usage(args, f"--query: {exc}")
    if not args.max_price > 0:
        _usage(args, "--max-price wants a positive number of dollars per hour")


def _nodes_path(args: argparse.Namespace) -> Path:
    return Path(settings.text_setting("DISTRIBUTE_VAST_NODES", args.nodes_file) or NODES_FILE)


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [n for n in data["nodes"] if isinstance(n.get("instance_id"), int)]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DistributeError(f"{path} is not a node list written by `distribute rent`") from None


def _save(path: Path, nodes: list[dict[str, Any]]) -> None:
    """Write the node list atomically (no secrets in it: ids, labels, prices)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"api_url": vast.base_url(), "nodes": nodes}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _env_options(args: argparse.Namespace) -> dict[str, str]:
    """The nodes' extra environment from ``--env KEY=VALUE`` options (usage error otherwise)."""
    env: dict[str, str] = {}
    for item in args.env:
        try:
            env.update(vast.parse_env(["-e", item]))
        except ValueError:
            _usage(args, f"--env wants KEY=VALUE, not {item!r}")
    return env


def _shown_env(env: dict[str, str]) -> dict[str, str]:
    return {k: "***" if _SECRET_NAME.search(k) else redact(v) for k, v in env.items()}


def cmd_rent(args: argparse.Namespace) -> int:
    """``distribute rent``: rent nodes, print them, save them to the node list."""
    _check_query(args)
    if args.nodes < 1:
        _usage(args, "--nodes wants a positive number")
    remote = args.remote or settings.get_env("DISTRIBUTE_REMOTE")
    run = args.run or settings.get_env("DISTRIBUTE_RUN")
    if not remote:
        _usage(args, "no remote: pass --remote REMOTE or set DISTRIBUTE_REMOTE")
    if not run or not _SPEC.match(run):
        _usage(args, f"--run wants MODULE:FUNCTION (or DISTRIBUTE_RUN), not {run!r}")
    env = vast.node_env(remote, run, args.self_destruct, extra=_env_options(args))
    if _LOCAL.search(remote):
        _say(f"warning: the nodes cannot reach {remote}: it is a local path or address", err=True)
    shown = " ".join(vast.node_command(env))
    runtype = vast.get_runtype(ssh=args.ssh)
    if args.dry_run:
        offers = vast.search_offers(args.max_price, args.query, disk=args.disk)[:args.nodes]
        _say(f"would rent {len(offers)} of {args.nodes} node(s):")
        _table([[o["id"], _gpu(o), _price(o.get("dph_total")), o.get("geolocation")]
                for o in offers], ["OFFER", "GPU", "$/H", "LOCATION"])
        _say(f"image {args.image}, runtype {runtype}, env {json.dumps(_shown_env(env))}")
        _say(f"each node runs: {shown}")
        return 0
    path = _nodes_path(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", vast.VastWarning)
        try:
            nodes = vast.rent_nodes(args.max_price, args.nodes, args.image, env,
                                    query=args.query, disk=args.disk, label=args.label,
                                    runtype=runtype)
        except vast.VastError as exc:
            if exc.nodes:
                _remember(path, exc.nodes, remote)
                _say(f"{len(exc.nodes)} node(s) were rented before the error; saved to {path}",
                     err=True)
            raise
    if not nodes:
        raise vast.VastError(f"no offer at most ${args.max_price:g}/h matched"
                             + (f" the query {args.query!r}" if args.query else "")
                             + ": nothing was rented")
    _remember(path, nodes, remote)
    _table([[n["instance_id"], n["offer_id"], _gpu(n), _price(n["dph_total"]), n["label"]]
            for n in nodes], ["INSTANCE", "OFFER", "GPU", "$/H", "LABEL"])
    total = sum(float(n["dph_total"] or 0) for n in nodes)
    _say(f"rented {len(nodes)} node(s) for ${total:.4f}/h in total; each runs: {shown}")
    _say(f"saved the node list to {path}: `distribute nodes` shows them, "
         "`distribute terminate --all` destroys them")
    for w in caught:
        _say(f"warning: {w.message}", err=True)
    return 0


def _remember(path: Path, nodes: list[dict[str, Any]], remote: str) -> None:
    known = {n["instance_id"]: n for n in _load(path)}
    stamp = utc_now()
    for n in nodes:
        known[n["instance_id"]] = dict(n, remote=redact(remote), rented_at=stamp)
    _save(path, list(known.values()))


def _gpu(row: dict[str, Any]) -> str:
    return f"{row.get('num_gpus') or 1}x {row.get('gpu_name') or '?'}"


def _price(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def cmd_nodes(args: argparse.Namespace) -> int:
    """``distribute nodes``: the saved nodes (or all instances) with their status."""
    if args.logs is not None:
        sys.stdout.write(redact(vast.instance_logs(args.logs, tail=max(1, args.tail))))
        return 0
    path = _nodes_path(args)
    saved = _load(path)
    if not saved and not args.all:
        _say(f"no nodes in {path}: rent some with `distribute rent`, or use --all")
        return 0
    live = {i.get("id"): i for i in vast.list_instances()}
    rows = []
    for node in saved:
        inst = live.pop(node["instance_id"], None)
        rows.append(dict(node, status=(inst or {}).get("actual_status") or
                         ("gone" if inst is None else "unknown")))
    if args.all:
        rows += [{"instance_id": i.get("id"), "offer_id": None, "gpu_name": i.get("gpu_name"),
                  "num_gpus": i.get("num_gpus"), "dph_total": i.get("dph_total"),
                  "label": i.get("label"), "status": i.get("actual_status")}
                 for i in live.values()]
    if args.json:
        _say(json.dumps(rows, indent=2))
        return 0
    _table([[r["instance_id"], r["status"], _gpu(r), _price(r.get("dph_total")), r.get("label")]
            for r in rows], ["INSTANCE", "STATUS", "GPU", "$/H", "LABEL"])
    alive = [r for r in rows if r["status"] != "gone"]
    _say(f"{len(alive)} of {len(rows)} alive, "
         f"${sum(float(r.get('dph_total') or 0) for r in alive):.4f}/h")
    return 0


def cmd_terminate(args: argparse.Namespace) -> int:
    """``distribute terminate``: destroy nodes; exit 1 if any could not be destroyed."""
    if args.all == bool(args.ids):
        _usage(args, "name instance IDs or pass --all (every node in the node list)")
    path = _nodes_path(args)
    saved = _load(path)
    ids = [n["instance_id"] for n in saved] if args.all else list(args.ids)
    if not ids:
        _say(f"no nodes in {path}: nothing to terminate")
        return 0
    result = vast.terminate_nodes(ids)
    for iid in result["destroyed"]:
        _say(f"destroyed {iid}")
    for iid in result["gone"]:
        _say(f"{iid} was already gone")
    for iid, message in result["failed"].items():
        _say(f"could not destroy {iid}: {message}", err=True)
    ended = set(result["destroyed"]) | set(result["gone"])
    if saved:
        _save(path, [n for n in saved if n["instance_id"] not in ended])
    if result["failed"]:
        raise vast.VastError(f"{len(result['failed'])} of {len(ids)} node(s) could not be "
                             "destroyed and may still cost money: try again, or destroy them "
                             "in the Vast.ai console")
    return 0


def cmd_offers(args: argparse.Namespace) -> int:
    """``distribute offers``: a table (or JSON) of offers, cheapest first."""
    _check_query(args)
    offers = vast.search_offers(args.max_price, args.query, order=args.order,
                                limit=max(1, args.limit))
    if args.json:
        _say(json.dumps(offers, indent=2))
        return 0
    if not offers:
        _say(f"no offer at most ${args.max_price:g}/h matched")
        return 0
    _table([[o.get("id"), _gpu(o), f"{(o.get('gpu_ram') or 0) / 1000:.0f}",
             _price(o.get("dph_total")), f"{(o.get('reliability2') or 0):.3f}",
             o.get("cuda_max_good"), o.get("geolocation")] for o in offers],
           ["OFFER", "GPU", "GPU GB", "$/H", "RELIAB", "CUDA", "LOCATION"])
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one of the Vast.ai commands alone; returns the exit code."""
    parser = argparse.ArgumentParser(prog="distribute", description="Vast.ai nodes for "
                                     "git-distribute.")
    parser.add_argument("--env-file", metavar="FILE", help="read settings from FILE")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register(sub)
    args = parser.parse_args(argv)
    try:
        settings.use_env_file(args.env_file)
        return int(args.func(args))
    except DistributeError as exc:
        _say(f"error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        _say("interrupted", err=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
