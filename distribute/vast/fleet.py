"""``distribute fleet``: keep a (preemptible) Vast.ai fleet working on a remote within a budget.

One controller, run in the foreground on the operator's machine, polls two things every ``poll_s``
seconds: the remote's ledger (queued and running jobs, which workers are alive) and the account's
instances whose label ties them to the remote (:func:`fleet_label`). It keeps up to ``nodes``
instances while jobs are queued or running (no more than the jobs left), replaces nodes that were
preempted (``stopped``), exited, vanished, or did not become a live worker within
``boot_timeout_s`` (destroying the dud and avoiding its machine for a while), and never lets the
money spent plus what its nodes will cost until the next poll pass ``budget``: before it would, it
destroys every node and ends with :data:`OVER_BUDGET`. Once nothing is queued or running it
destroys every node and ends with :data:`DONE`. A second controller on the same remote adopts the
nodes of the first (same label), so a restart never doubles the fleet. Each poll's spend is
written to the remote (``refs/distribute/fleet``, see :func:`record_spend`), where
``distribute status`` and the report read it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..protocol import FLEET_REF, utc_now
from ..redact import redact
from ..repo import RefUpdate
from ..repo.clone import normalize_url
from ..worker import Worker
from .api import VastError
from .nodes import create_instance, destroy_instance, list_instances, node_env, search_offers

__all__ = ["FleetConfig", "Fleet", "fleet_label", "record_spend", "DONE", "OVER_BUDGET",
           "DEAD_STATES"]

log = logging.getLogger(__name__)

DONE, OVER_BUDGET = 0, 3
#: ``actual_status`` values of a node that will not work again: preempted (the container stopped,
#: its disk still billed), exited, or its host gone.
DEAD_STATES = frozenset({"stopped", "exited", "offline", "error", "destroyed"})
#: How long a machine whose node never booted is avoided, in boot timeouts.
AVOID_TIMEOUTS = 10


def fleet_label(remote: str) -> str:
    """The label prefix of the instances a fleet rents for ``remote`` (the same on every machine
    and for every spelling git reads as the same URL): ``dfleet-<12 hex>``."""
    digest = hashlib.sha256(normalize_url(remote).encode("utf-8")).hexdigest()
    return f"dfleet-{digest[:12]}"


@dataclass
class FleetConfig:
    """What ``distribute fleet`` was asked for (see its ``--help``)."""

    remote: str
    image: str
    run: str
    nodes: int
    max_price: float
    interruptible: bool = False
    bid: Optional[float] = None
    budget: Optional[float] = None
    query: Optional[str] = None
    env: dict[str, str] = field(default_factory=dict)
    poll_s: float = 30.0
    boot_timeout_s: float = 600.0
    disk: float = 16.0


@dataclass
class Node:
    """One instance of the fleet as the controller knows it."""

    instance_id: int
    dph: float
    storage_dph: float
    machine_id: Any
    seen_at: float
    state: str = "loading"
    worked: bool = False  # its worker has shown up on the remote

    @property
    def worker(self) -> str:
        """The worker name the image's entry script gives the node (``vast-<instance id>``)."""
        return f"vast-{self.instance_id}"

    def rate(self) -> float:
        """$/h it costs in its current state: everything while running, the disk otherwise."""
        return self.dph if self.state in ("running", "loading", "") else self.storage_dph


class Fleet:
    """The controller: :meth:`poll` once per ``poll_s``; :meth:`run` loops until an end."""

    def __init__(self, config: FleetConfig, worker: Worker,
                 say: Callable[[str], None] = log.info) -> None:
        self.config = config
        self.worker = worker
        self.say = say
        self.label = fleet_label(config.remote)
        self.nodes: dict[int, Node] = {}
        self.avoid: dict[Any, float] = {}  # machine id -> until (monotonic)
        self.spent = self._spent_before()
        self.rented = 0
        self._last = time.time()
        self.counts: dict[str, int] = {}

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> int:
        """Poll until the queue is drained (:data:`DONE`) or the budget is reached
        (:data:`OVER_BUDGET`); every node is destroyed then."""
        while True:
            outcome = self.poll()
            if outcome is not None:
                return outcome
            time.sleep(self.config.poll_s)

    def poll(self) -> Optional[int]:
        """One look and the decisions it calls for; an exit code when the fleet is over."""
        snap = self.worker.snapshot()
        ledger = snap["ledger"]
        alive = set(snap["heartbeats"]) | {e.worker for e in ledger.running}
        self.counts = {"queued": len(ledger.queued), "running": len(ledger.running),
                       "done": len(ledger.done), "failed": len(ledger.failed)}
        self._accrue()
        self._refresh(alive)
        left = self.counts["queued"] + self.counts["running"]
        if left == 0:
            self.destroy_all("nothing is queued or running")
            self._report()
            return DONE
        if self._over_budget(0.0):
            return self._stop_for_budget()
        self._retire_surplus(min(self.config.nodes, left), {e.worker for e in ledger.running})
        self._rent(min(self.config.nodes, left) - len(self.nodes))
        self._report()
        return None

    # ---- money --------------------------------------------------------------------------------
    def _accrue(self) -> None:
        now = time.time()
        self.spent += sum(n.rate() for n in self.nodes.values()) * (now - self._last) / 3600
        self._last = now

    def burn(self) -> float:
        """$/h the fleet costs now."""
        return sum(n.rate() for n in self.nodes.values())

    def committed(self, extra_dph: float = 0.0) -> float:
        """What the nodes (and one more costing ``extra_dph``) cost until the controller can act
        again: two polls (the destroys of the next one land within the second)."""
        return (self.burn() + extra_dph) * 2 * self.config.poll_s / 3600

    def _over_budget(self, extra_dph: float) -> bool:
        budget = self.config.budget
        return budget is not None and self.spent + self.committed(extra_dph) > budget

    def _stop_for_budget(self) -> int:
        self.destroy_all("the budget is reached")
        self._accrue()
        self._report()
        self.say(f"fleet: stopped at the budget of ${self.config.budget:.4f}: spent "
                 f"${self.spent:.4f}; every node destroyed")
        return OVER_BUDGET

    def projection(self) -> Optional[float]:
        """Projected total cost: spent so far plus the cost per done job for each job left."""
        done = self.counts.get("done", 0)
        if not done:
            return None
        left = self.counts.get("queued", 0) + self.counts.get("running", 0)
        return self.spent + self.spent / done * left

    # ---- the nodes ----------------------------------------------------------------------------
    def _refresh(self, alive: set[str]) -> None:
        """Match the account's instances with ours: adopt the fleet's, drop vanished ones,
        destroy dead and never-booted ones."""
        rows = {int(r["id"]): r for r in list_instances()
                if str(r.get("label") or "").startswith(self.label + "-")}
        for iid in [i for i in self.nodes if i not in rows]:
            self.say(f"fleet: node {iid} vanished; it will be replaced")
            del self.nodes[iid]
        for iid, row in rows.items():
            node = self.nodes.get(iid) or self._adopt(row)
            node.state = str(row.get("actual_status") or "loading")
            node.worked = node.worked or node.worker in alive
            self._judge(node)

    def _adopt(self, row: dict[str, Any]) -> Node:
        node = _node(row)
        self.nodes[node.instance_id] = node
        self.say(f"fleet: adopted node {node.instance_id} ({node.state or 'loading'})")
        return node

    def _judge(self, node: Node) -> None:
        if node.state in DEAD_STATES:
            self._destroy(node, f"it is {node.state}")
        elif not node.worked and time.monotonic() - node.seen_at > self.config.boot_timeout_s:
            self.avoid[node.machine_id] = time.monotonic() + \
                AVOID_TIMEOUTS * self.config.boot_timeout_s
            self._destroy(node, f"no worker after {self.config.boot_timeout_s:g}s "
                                f"(machine {node.machine_id} avoided for a while)")

    def _destroy(self, node: Node, why: str) -> None:
        try:
            destroy_instance(node.instance_id)
        except VastError as exc:
            if exc.status != 404:
                self.say(f"fleet: could not destroy node {node.instance_id}: {exc}")
                return
        self.nodes.pop(node.instance_id, None)
        self.say(f"fleet: destroyed node {node.instance_id}: {why}")

    def destroy_all(self, why: str) -> None:
        """Destroy every node of the fleet (ours and any other with its label)."""
        for row in list_instances():
            if str(row.get("label") or "").startswith(self.label + "-"):
                self.nodes.setdefault(int(row["id"]), _node(row))
        for node in list(self.nodes.values()):
            self._destroy(node, why)

    def _retire_surplus(self, wanted: int, busy: set[str]) -> None:
        """Fewer jobs left than nodes: destroy nodes without a job (booting ones first)."""
        spare = sorted((n for n in self.nodes.values() if n.worker not in busy),
                       key=lambda n: n.worked)
        for node in spare[:max(0, len(self.nodes) - wanted)]:
            self._destroy(node, "more nodes than jobs left")

    def _rent(self, count: int) -> None:
        """Rent ``count`` nodes, cheapest offers first, while the budget allows each."""
        if count <= 0:
            return
        now = time.monotonic()
        for offer in self._offers():
            if count <= 0:
                break
            if self.avoid.get(offer.get("machine_id"), 0) > now:
                continue
            price = self._price(offer)
            if price is None:
                continue
            if self._over_budget(price):
                self.say("fleet: not renting: the budget would not cover another node")
                return
            if self._create(offer, price):
                count -= 1

    def _offers(self) -> list[dict[str, Any]]:
        kind = "bid" if self.config.interruptible else "on-demand"
        return search_offers(self.config.max_price, self.config.query, offer_type=kind,
                             disk=self.config.disk)

    def _price(self, offer: dict[str, Any]) -> Optional[float]:
        """The $/h this node would cost: the bid for an interruptible one (``--bid``, else the
        offer's minimum bid), else the offer's price; ``None`` when out of reach."""
        if not self.config.interruptible:
            return float(offer.get("dph_total") or 0)
        least = float(offer.get("min_bid") or offer.get("dph_total") or 0)
        bid = self.config.bid if self.config.bid is not None else least
        return bid if least <= bid <= self.config.max_price else None

    def _create(self, offer: dict[str, Any], price: float) -> bool:
        label = f"{self.label}-{offer['id']}-{secrets.token_hex(2)}"
        env = node_env(self.config.remote, self.config.run, self_destruct=True,
                       extra=self.config.env)
        try:
            answer = create_instance(offer["id"], self.config.image, env, disk=self.config.disk,
                                     label=label, args=[], price=price
                                     if self.config.interruptible else None)
        except VastError as exc:
            self.say(f"fleet: offer {offer['id']} could not be rented: {exc}")
            return False
        storage = float(offer.get("storage_cost") or 0) * self.config.disk / 730
        node = Node(int(answer["new_contract"]), price, storage, offer.get("machine_id"),
                    time.monotonic())
        self.nodes[node.instance_id] = node
        self.rented += 1
        self.say(f"fleet: rented node {node.instance_id} (offer {offer['id']}, ${price:.4f}/h"
                 f"{', interruptible' if self.config.interruptible else ''})")
        return True

    # ---- reporting ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What the fleet's status line and the record on the remote say."""
        states: dict[str, int] = {}
        for node in self.nodes.values():
            states[node.state or "loading"] = states.get(node.state or "loading", 0) + 1
        done = self.counts.get("done", 0)
        return {"label": self.label, "at": utc_now(), "nodes": states, "dph": round(self.burn(), 6),
                "spent": round(self.spent, 6), "budget": self.config.budget, "jobs": self.counts,
                "per_done_job": round(self.spent / done, 6) if done else None,
                "projected": None if self.projection() is None else round(self.projection()
                                                                          or 0, 6),
                "rented": self.rented}

    def _report(self) -> None:
        info = self.status()
        nodes = ", ".join(f"{n} {s}" for s, n in sorted(info["nodes"].items())) or "none"
        jobs = info["jobs"]
        projected = "?" if info["projected"] is None else f"${info['projected']:.4f}"
        budget = "" if info["budget"] is None else f" of ${info['budget']:.4f}"
        self.say(f"fleet: nodes {nodes} · jobs {jobs.get('queued', 0)} queued "
                 f"{jobs.get('running', 0)} running {jobs.get('done', 0)} done · "
                 f"${info['dph']:.4f}/h · spent ${info['spent']:.4f}{budget} · "
                 f"projected {projected}")
        try:
            record_spend(self.worker, info)
        except Exception as exc:  # noqa: BLE001 - the record is for display; the fleet goes on
            log.warning("fleet: could not write the spend to the remote: %s", redact(exc))

    def _spent_before(self) -> float:
        """What an earlier controller of this fleet recorded as spent (adopting its nodes)."""
        record = self.worker.snapshot().get("fleet") or {}
        if record.get("label") != self.label or not record.get("nodes"):
            return 0.0  # (a fleet that ended destroyed its nodes: a new one starts from zero)
        return float(record.get("spent") or 0.0)


def _node(row: dict[str, Any]) -> Node:
    storage = float(row.get("storage_cost") or 0) * float(row.get("disk_space") or 0) / 730
    return Node(int(row["id"]), float(row.get("dph_total") or 0), storage, row.get("machine_id"),
                time.monotonic(), str(row.get("actual_status") or "loading"))


def record_spend(worker: Worker, info: dict[str, Any]) -> None:
    """Write the fleet's spend ``info`` to the remote: ``refs/distribute/fleet``, a parentless
    commit whose message is ``fleet`` and the JSON (never part of master's history)."""
    marker = worker.clone.make_marker("fleet\n\n" + json.dumps(info, sort_keys=True))
    worker.clone.push([RefUpdate(FLEET_REF, marker, expect=None)])
