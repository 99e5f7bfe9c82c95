"""Renting, watching and destroying Vast.ai instances that run the worker image.

Built on the client of :mod:`distribute.vast.api`. A node (an instance running the worker image,
``docker/entrypoint.sh``) needs no account key: :func:`self_destruct` uses the per-instance
``CONTAINER_API_KEY`` Vast gives every instance, good for that instance only. An account key is
sent to nodes only when the user sets ``VAST_NODE_API_KEY`` on purpose (:func:`node_env`), and a
worker that may destroy its node moves every Vast key out of its environment before the first job
(:func:`hold_keys`), so that job code and the processes it starts do not inherit them.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
import warnings
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .. import settings
from ..redact import register_secret
from .api import (
    RETRY_STATUSES,
    VastError,
    VastWarning,
    apiurl,
    clean,
    http_del,
    http_get,
    http_post,
    http_put,
    retry_settings,
    timeout_s,
)
from .query import SELF_DESTRUCT, create_body, get_runtype, parse_env, parse_order, parse_query

__all__ = ["search_offers", "create_instance", "destroy_instance", "list_instances",
           "get_instance", "instance_logs", "node_env", "rent_nodes", "terminate_nodes",
           "self_destruct", "hold_keys", "KEY_VARS", "NODE_ENTRYPOINT", "NODE_LOG"]

log = logging.getLogger(__name__)

#: The worker image's entry script (docker/entrypoint.sh); ``onstart`` runs it in ssh/jupyter mode.
NODE_ENTRYPOINT, NODE_LOG = "/usr/local/bin/distribute-node", "/tmp/distribute-node.log"
#: The Vast keys a worker keeps from its jobs (:func:`hold_keys`).
KEY_VARS = ("VAST_API_KEY", "CONTAINER_API_KEY", "VAST_NODE_API_KEY")
_GONE_ERRORS = ("no_such_ask", "not_available", "no_such_offer", "ask_unavailable")
_held: dict[str, str] = {}
_held_lock = threading.Lock()


def search_offers(max_price: float, query: Optional[str] = None, order: str = "dph_total",
                  limit: Optional[int] = None, api_key: Optional[str] = None,
                  offer_type: str = "on-demand", disk: float = 16) -> list[dict[str, Any]]:
    """Rentable, verified on-demand offers costing at most ``max_price`` $/h in total, as the API
    returns them, sorted by ``order`` (cheapest first by default). ``query`` is in the
    :func:`parse_query` language and narrows the search; ``disk`` (GB) is priced in."""
    if not max_price > 0:
        raise ValueError(f"max_price must be positive, not {max_price!r}")
    body: dict[str, Any] = {"verified": {"eq": True}, "external": {"eq": False},
                            "rentable": {"eq": True}, "rented": {"eq": False}}
    parse_query(query, body)
    body.setdefault("dph_total", {})["lte"] = max_price
    sort = parse_order(order)
    body.update(order=sort, type=offer_type, allocated_storage=float(disk))
    if limit:
        body["limit"] = int(limit)
    answer = http_post(apiurl("/bundles/"), body, api_key)
    offers = answer.get("offers") if isinstance(answer, dict) else None
    if not isinstance(offers, list):
        raise VastError("the offer search answered without an offer list")
    offers = [o for o in offers if isinstance(o, dict) and o.get("rentable", True)
              and not o.get("rented") and float(o.get("dph_total") or 0) <= max_price]
    for field, direction in reversed(sort):  # stable sorts, last key first
        offers.sort(key=lambda o: (o.get(field) is None, o.get(field) or 0),
                    reverse=direction == "desc")
    return offers[:limit] if limit else offers


def create_instance(offer_id: int, image: str, env: Optional[Mapping[str, str]] = None,
                    onstart: Optional[str] = None, disk: float = 16, label: Optional[str] = None,
                    runtype: str = "args", args: Optional[Sequence[str]] = None,
                    api_key: Optional[str] = None, price: Optional[float] = None
                    ) -> dict[str, Any]:
    """Accept offer ``offer_id``: the API's answer, ``{"success": true, "new_contract": ID}``,
    where ``new_contract`` is the new instance's id. ``args`` are passed to the image's
    ENTRYPOINT (``runtype="args"``); ``onstart`` runs under Vast's entrypoint (ssh/jupyter).
    ``price`` bids that many $/h for an interruptible instance (offers of a ``offer_type="bid"``
    search, at least their ``min_bid``); without it the instance is on-demand."""
    body = create_body(image, env, onstart, disk, label, runtype, args, price)
    answer = http_put(apiurl(f"/asks/{int(offer_id)}/"), body, api_key)
    if not isinstance(answer, dict) or not isinstance(answer.get("new_contract"), int):
        raise VastError(f"renting offer {offer_id}: the answer names no new instance")
    return answer


def destroy_instance(instance_id: int, api_key: Optional[str] = None) -> dict[str, Any]:
    """Destroy instance ``instance_id`` (its disk too; billing stops); the API's answer."""
    answer = http_del(apiurl(f"/instances/{int(instance_id)}/"), None, api_key)
    return answer if isinstance(answer, dict) else {"success": True}


def list_instances(api_key: Optional[str] = None) -> list[dict[str, Any]]:
    """Every instance of the account, as the API describes them."""
    answer = http_get(apiurl("/instances/", {"owner": "me"}), api_key)
    rows = answer.get("instances") if isinstance(answer, dict) else None
    if not isinstance(rows, list):
        raise VastError("the instance list answered without instances")
    return rows


def get_instance(instance_id: int, api_key: Optional[str] = None) -> dict[str, Any]:
    """One instance (``actual_status``, ``label``, ``dph_total``...)."""
    answer = http_get(apiurl(f"/instances/{int(instance_id)}/"), api_key)
    row = answer.get("instances") if isinstance(answer, dict) else None
    if not isinstance(row, dict):
        raise VastError(f"instance {instance_id} not found", status=404)
    return row


_logs_session: Optional[requests.Session] = None


def instance_logs(instance_id: int, tail: int = 1000, api_key: Optional[str] = None) -> str:
    """The last ``tail`` lines of the instance's container log.

    The API uploads the log and answers with its ``result_url``, which is fetched without the key
    (it is another host) and retried while the upload is not there yet (403/404)."""
    global _logs_session
    answer = http_put(apiurl(f"/instances/request_logs/{int(instance_id)}/"),
                      {"tail": str(int(tail))}, api_key)
    url = answer.get("result_url") if isinstance(answer, dict) else None
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise VastError(f"logs of instance {instance_id}: the answer has no result_url")
    if _logs_session is None:
        _logs_session = requests.Session()
        _logs_session.trust_env = False
        wait = Retry(total=8, backoff_factor=max(retry_settings()[1], 0.05),
                     status_forcelist=(403, 404) + RETRY_STATUSES, raise_on_status=False)
        _logs_session.mount("https://", HTTPAdapter(max_retries=wait))
        _logs_session.mount("http://", HTTPAdapter(max_retries=wait))
    try:
        resp = _logs_session.get(url, timeout=timeout_s())
    except requests.RequestException as exc:
        raise VastError(f"logs of instance {instance_id}: download failed "
                        f"({type(exc).__name__})") from None
    if resp.status_code >= 400:
        raise VastError(f"logs of instance {instance_id}: HTTP {resp.status_code} from the log "
                        "store", status=resp.status_code)
    return resp.text


def node_env(remote: str, run: str, self_destruct: bool = False, api_key: Optional[str] = None,
             extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The instance ``env`` that makes the worker image run ``distribute worker`` on ``remote``
    with job function ``run`` (``extra`` first, for more settings of the node).

    With ``self_destruct`` the node destroys its instance once the queue is done, with the
    per-instance ``CONTAINER_API_KEY`` Vast gives it: no account key is sent. Only when one is
    asked for, ``api_key`` or else the ``VAST_NODE_API_KEY`` setting, does it go to the node as
    ``VAST_API_KEY`` (a risk: the host can read an instance's environment).
    """
    env = dict(extra or {})
    env.update(DISTRIBUTE_REMOTE=remote, DISTRIBUTE_RUN=run)
    if self_destruct:
        env[SELF_DESTRUCT] = "1"
        node_key = api_key or settings.get_env("VAST_NODE_API_KEY")
        if node_key:
            env["VAST_API_KEY"] = node_key
    return env


def _offer_gone(exc: VastError) -> bool:
    text = str(exc).lower()
    return exc.status in (404, 410) or any(e in text for e in _GONE_ERRORS) or (
        exc.status == 400 and "not available" in text)


def rent_nodes(max_price: float, max_nodes: int, image: str,
               env: Union[Mapping[str, str], str, None] = None,
               command: Optional[Sequence[str]] = None, query: Optional[str] = None,
               disk: float = 16, label: str = "distribute", runtype: Optional[str] = None,
               api_key: Optional[str] = None) -> list[dict[str, Any]]:
    """Rent up to ``max_nodes`` of the cheapest offers at most ``max_price`` $/h each.

    Offers are tried cheapest first without pauses; one that was taken meanwhile is skipped.
    ``env`` (a mapping, or ``-e K=V`` text) is the instance environment, e.g. from
    :func:`node_env`; ``command`` (a list: no shell) replaces the image's default command.
    Returns ``[{"offer_id", "instance_id", "label", "dph_total", "gpu_name", "num_gpus",
    "image"}, ...]`` and warns (:class:`VastWarning`) when fewer were available. When an API
    error stops it, the :class:`VastError` carries the nodes already rented in ``.nodes``.
    """
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be at least 1, not {max_nodes!r}")
    env = parse_env(env) if isinstance(env, str) else dict(env or {})
    runtype = runtype or get_runtype()
    onstart = None if runtype == "args" else f"{NODE_ENTRYPOINT} >>{NODE_LOG} 2>&1 &"
    offers = search_offers(max_price, query, api_key=api_key, disk=disk)
    run = secrets.token_hex(3)
    nodes: list[dict[str, Any]] = []
    for offer in offers:
        if len(nodes) >= max_nodes:
            break
        node_label = f"{label}-{run}-{offer['id']}"
        try:
            answer = create_instance(offer["id"], image, env, onstart=onstart, disk=disk,
                                     label=node_label, runtype=runtype,
                                     args=list(command) if command is not None else None,
                                     api_key=api_key)
            instance_id = answer["new_contract"]
        except VastError as exc:
            if _offer_gone(exc):
                log.info("offer %s was taken meanwhile; trying the next one", offer["id"])
                continue
            if exc.status is not None and exc.status < 500:
                raise VastError(f"renting offer {offer['id']} failed after {len(nodes)} "
                                f"node(s) were rented: {exc}", exc.status, nodes) from None
            found = _adopt(node_label, exc, nodes, api_key)  # outcome unknown: created?
            if found is None:
                log.warning("offer %s: %s; no instance was created, trying the next offer",
                            offer["id"], exc)
                continue
            instance_id = found
        nodes.append({"offer_id": offer["id"], "instance_id": instance_id, "label": node_label,
                      "dph_total": offer.get("dph_total"), "gpu_name": offer.get("gpu_name"),
                      "num_gpus": offer.get("num_gpus"), "image": image})
    if len(nodes) < max_nodes:
        warnings.warn(f"rented {len(nodes)} of {max_nodes} nodes: no more offers at most "
                      f"${max_price:g}/h matched", VastWarning, stacklevel=2)
    return nodes


def _adopt(node_label: str, exc: VastError, nodes: list[dict[str, Any]],
           api_key: Optional[str] = None) -> Optional[int]:
    """After a create whose outcome is unknown (no answer, 5xx): the instance if it exists."""
    try:
        rows = list_instances(api_key)
    except VastError:
        raise VastError(f"{exc}; could not check whether an instance labelled {node_label} was "
                        "created: look with `distribute nodes --all`", exc.status, nodes) from None
    ids = [r.get("id") for r in rows if r.get("label") == node_label]
    return ids[0] if ids else None


def terminate_nodes(nodes: Iterable[Union[Mapping[str, Any], int]],
                    api_key: Optional[str] = None) -> dict[str, Any]:
    """Destroy every node (dicts from :func:`rent_nodes` or instance ids), going on past errors.

    Returns ``{"destroyed": [ids], "gone": [ids that no longer existed], "failed": {id: message}}``.
    """
    out: dict[str, Any] = {"destroyed": [], "gone": [], "failed": {}}
    for node in nodes:
        instance_id = int(node["instance_id"] if isinstance(node, Mapping) else node)
        try:
            destroy_instance(instance_id, api_key)
            out["destroyed"].append(instance_id)
        except VastError as exc:
            if exc.status == 404:
                out["gone"].append(instance_id)
            else:
                out["failed"][instance_id] = str(exc)
    return out


def hold_keys() -> list[str]:
    """Move the Vast keys (:data:`KEY_VARS`) out of ``os.environ`` into this process's memory.

    :func:`self_destruct` still finds them; job code no longer sees them in ``os.environ`` and the
    processes the worker starts (git, anything a job runs) do not inherit them. A worker that may
    destroy its node calls this before its first job. Returns the names moved.
    """
    moved = []
    with _held_lock:
        for name in KEY_VARS:
            value = os.environ.pop(name, None)
            if value:
                register_secret(value)  # still masked in every message
                _held[name] = value
                moved.append(name)
    if moved:
        log.info("%s moved out of the environment: jobs do not inherit them", ", ".join(moved))
    return moved


def _node_key(name: str) -> Optional[str]:
    with _held_lock:
        held = _held.get(name)
    return held or settings.get_env(name)


def self_destruct(container_id: Optional[Union[str, int]] = None,
                  api_key: Optional[str] = None) -> bool:
    """Destroy the instance this process runs on: ``CONTAINER_ID`` (set by Vast on every instance).

    The key is ``api_key`` when given; else the instance's own ``CONTAINER_API_KEY``, then
    ``VAST_API_KEY`` (an account key the user chose to send, see :func:`node_env`), the next one
    only when there is no such key or the API refused it (401/403). Keys put aside by
    :func:`hold_keys` count. Never raises: ``False`` (with a logged warning) when it could not,
    ``True`` when the instance is gone.
    """
    raw = str(container_id or settings.get_env("CONTAINER_ID") or "").strip()
    if api_key:
        keys = [("the key given", api_key)]
    else:
        found = ((name, _node_key(name)) for name in ("CONTAINER_API_KEY", "VAST_API_KEY"))
        keys = [(name, key) for name, key in found if key]
    if not raw.isdigit() or not keys:
        log.warning("self-destruct skipped: %s", "no API key (CONTAINER_API_KEY or VAST_API_KEY)"
                    if raw.isdigit() else f"CONTAINER_ID is not an instance id: {raw!r}")
        return False
    for number, (name, key) in enumerate(keys, 1):
        try:
            destroy_instance(int(raw), key)
        except VastError as exc:
            if exc.status == 404:
                break
            if exc.status in (401, 403) and number < len(keys):
                log.info("self-destruct of instance %s: %s was refused (HTTP %s); trying %s",
                         raw, name, exc.status, keys[number][0])
                continue
            log.warning("self-destruct of instance %s with %s failed: %s", raw, name,
                        clean(exc, key))
            return False
        except Exception as exc:  # noqa: BLE001 - called while a worker exits: never raise
            log.warning("self-destruct of instance %s failed: %s", raw, clean(exc, key))
            return False
        break
    log.info("instance %s destroyed itself", raw)
    return True
