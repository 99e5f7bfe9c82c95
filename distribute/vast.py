"""Rent Vast.ai machines that run the worker image, watch them, and destroy them.

Every call goes through one ``requests.Session`` whose urllib3 ``Retry`` handles HTTP 429 and 5xx
with exponential back-off (honouring ``Retry-After`` when the API sends one), a bounded number of
attempts and timeouts. The key travels only in the ``Authorization: Bearer`` header; every message
that leaves this module is redacted. Settings (``VAST_API_KEY``, ``VAST_API_URL``,
``VAST_RETRY_TOTAL``, ``VAST_RETRY_BACKOFF``, ``VAST_RETRY_BACKOFF_MAX``, ``VAST_TIMEOUT_S``) come
from the environment, then ``.env``; the README's "Vast.ai nodes" section has the table.
"""
from __future__ import annotations

import json
import logging
import random
import secrets
import warnings
from typing import Any, Iterable, Mapping, Optional, Sequence, Union
from urllib.parse import quote, urlencode

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .config import get_env
from .exceptions import DistributeError
from .redact import redact
from .vast_query import (api_message, create_body, get_runtype, node_command, parse_env,
                         parse_order, parse_query)

__all__ = ["VastError", "VastWarning", "apiurl", "http_get", "http_put", "http_post", "http_del",
           "parse_query", "parse_env", "get_runtype", "search_offers", "create_instance",
           "destroy_instance", "list_instances", "get_instance", "instance_logs", "rent_nodes",
           "terminate_nodes", "self_destruct", "node_env", "node_command"]

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://console.vast.ai"
#: The worker image's entry script (docker/entrypoint.sh); ``onstart`` runs it in ssh/jupyter mode.
NODE_ENTRYPOINT, NODE_LOG = "/usr/local/bin/distribute-node", "/tmp/distribute-node.log"
_RETRY_STATUSES = (429, 500, 502, 503, 504)
_GONE_ERRORS = ("no_such_ask", "not_available", "no_such_offer", "ask_unavailable")


class VastError(DistributeError):
    """A Vast.ai API call failed. ``status`` is the HTTP status (``None``: no answer at all).
    ``nodes`` lists instances that were rented before a :func:`rent_nodes` call failed."""

    def __init__(self, message: str, status: Optional[int] = None,
                 nodes: Optional[list[dict[str, Any]]] = None) -> None:
        super().__init__(redact(message))
        self.status = status
        self.nodes = nodes or []


class VastWarning(UserWarning):
    """Fewer nodes were rented than asked for."""


class _Retry(Retry):
    """429 means the request was refused before anything happened, so it is retried for every
    method; other statuses only for the methods in ``allowed_methods`` (not PUT: creating an
    instance twice costs money). ``Retry-After`` is honoured up to ``backoff_max``. Waits are
    ``backoff_factor`` x 1, 2, 4... +-25 %: the API limits the request rate per endpoint without
    sending ``Retry-After``, so an immediate retry (urllib3's first) would only be refused again,
    and nodes that stop together should not retry in step."""

    def get_backoff_time(self) -> float:
        errors = len([h for h in self.history if h.redirect_location is None])
        if errors == 0:
            return 0.0
        wait = self.backoff_factor * 2 ** (errors - 1) * (0.75 + random.random() / 2)
        return float(min(getattr(self, "backoff_max", 120), wait))

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code == 429 and self.total:
            return True
        return super().is_retry(method, status_code, has_retry_after)

    def get_retry_after(self, response: Any) -> Optional[float]:
        after = super().get_retry_after(response)
        cap = getattr(self, "backoff_max", None) or 120
        return None if after is None else min(after, cap)


_session: Optional[requests.Session] = None
_session_settings: Optional[tuple[float, ...]] = None


def _number(key: str, default: float) -> float:
    raw = get_env(key)
    try:
        value = float(raw) if raw is not None else default
    except ValueError:
        raise VastError(f"{key} must be a number, not {raw!r}") from None
    if value < 0:
        raise VastError(f"{key} must not be negative, not {raw!r}")
    return value


def _get_session() -> requests.Session:
    """The module's session, its adapters (re)mounted when the retry settings changed."""
    global _session, _session_settings
    settings = (_number("VAST_RETRY_TOTAL", 5), _number("VAST_RETRY_BACKOFF", 0.5),
                _number("VAST_RETRY_BACKOFF_MAX", 30))
    if _session is None:
        _session = requests.Session()
        _session.trust_env = False  # no ~/.netrc credentials, no proxy surprises
    if settings != _session_settings:
        total, backoff, backoff_max = int(settings[0]), settings[1], settings[2]
        kwargs: dict[str, Any] = {
            "total": total, "connect": total, "read": total, "status": total, "other": 0,
            "backoff_factor": backoff, "status_forcelist": _RETRY_STATUSES,
            "allowed_methods": frozenset({"GET", "POST", "DELETE"}), "raise_on_status": False}
        retry = _Retry(**kwargs)
        retry.backoff_max = retry.DEFAULT_BACKOFF_MAX = backoff_max  # urllib3 2 and 1.26
        adapter = HTTPAdapter(max_retries=retry)
        _session.mount("https://", adapter)
        _session.mount("http://", adapter)
        _session_settings = settings
    return _session


def _base_url() -> str:
    return (get_env("VAST_API_URL") or DEFAULT_API_URL).rstrip("/")


def apiurl(subpath: str, query_args: Optional[Mapping[str, Any]] = None,
           api_key: Optional[str] = None) -> str:
    """The URL of API path ``subpath`` (``/instances/`` -> ``<base>/api/v0/instances/``).

    ``query_args`` values that are not strings are sent as JSON; everything is percent-quoted.
    ``api_key`` puts the key into the query string, which the API also accepts; the functions of
    this module never do that and send it in the ``Authorization`` header instead.
    """
    path = "/" + subpath.lstrip("/")
    args = dict(query_args or {})
    if api_key is not None:
        args["api_key"] = api_key
    url = _base_url() + "/api/v0" + quote(path, safe="/:@-._~")
    if not args:
        return url
    pairs = [(k, v if isinstance(v, str) else json.dumps(v, separators=(",", ":")))
             for k, v in args.items()]
    return url + "?" + urlencode(pairs, quote_via=quote)


def _key(api_key: Optional[str]) -> str:
    key = api_key or get_env("VAST_API_KEY")
    if not key:
        raise VastError("no Vast.ai API key: set VAST_API_KEY in the environment or a .env file")
    return key


def _clean(text: object, key: Optional[str]) -> str:
    out = str(text)
    if key and len(key) >= 4:
        out = out.replace(key, "***")
    return redact(out)


def _request(method: str, url: str, json_body: Any = None, api_key: Optional[str] = None) -> Any:
    key = _key(api_key)
    shown = _clean(url.split("?")[0], key)
    try:
        resp = _get_session().request(
            method, url, json=json_body, timeout=_number("VAST_TIMEOUT_S", 30),
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"})
    except requests.RequestException as exc:
        reason = type(exc).__name__
        raise VastError(_clean(f"{method} {shown} failed: no answer from the Vast.ai API "
                               f"({reason})", key)) from None
    log.debug("%s %s -> %s", method, shown, resp.status_code)
    if resp.status_code >= 400:
        hint = " (is VAST_API_KEY right?)" if resp.status_code == 401 else ""
        raise VastError(_clean(f"{method} {shown}: HTTP {resp.status_code}: "
                               f"{api_message(resp)}{hint}", key), status=resp.status_code)
    try:
        body = resp.json()
    except ValueError:
        raise VastError(_clean(f"{method} {shown}: the answer is not JSON but "
                               f"{api_message(resp)}", key), status=resp.status_code) from None
    if isinstance(body, dict) and body.get("success") is False:
        raise VastError(_clean(f"{method} {shown}: {api_message(resp)}", key),
                        status=resp.status_code)
    return body


def http_get(url: str, api_key: Optional[str] = None) -> Any:
    """GET ``url`` (from :func:`apiurl`); the decoded JSON answer, or :class:`VastError`."""
    return _request("GET", url, None, api_key)


def http_put(url: str, json: Any = None, api_key: Optional[str] = None) -> Any:
    """PUT ``json`` to ``url``; retried on 429 only (a PUT may have taken effect)."""
    return _request("PUT", url, json, api_key)


def http_post(url: str, json: Any = None, api_key: Optional[str] = None) -> Any:
    """POST ``json`` to ``url``."""
    return _request("POST", url, json, api_key)


def http_del(url: str, json: Any = None, api_key: Optional[str] = None) -> Any:
    """DELETE ``url``."""
    return _request("DELETE", url, json, api_key)


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
                    api_key: Optional[str] = None) -> dict[str, Any]:
    """Accept offer ``offer_id``: the API's answer, ``{"success": true, "new_contract": ID}``,
    where ``new_contract`` is the new instance's id. ``args`` are passed to the image's
    ENTRYPOINT (``runtype="args"``); ``onstart`` runs under Vast's entrypoint (ssh/jupyter)."""
    body = create_body(image, env, onstart, disk, label, runtype, args)
    answer = http_put(apiurl(f"/asks/{int(offer_id)}/"), body, api_key)
    if not isinstance(answer, dict) or not isinstance(answer.get("new_contract"), int):
        raise VastError(f"renting offer {offer_id}: the answer names no new instance")
    return answer


def destroy_instance(instance_id: int, api_key: Optional[str] = None) -> dict[str, Any]:
    """Destroy instance ``instance_id`` (its disk too; billing stops)."""
    return http_del(apiurl(f"/instances/{int(instance_id)}/"), None, api_key)


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
        wait = Retry(total=8, backoff_factor=max(_number("VAST_RETRY_BACKOFF", 0.5), 0.05),
                     status_forcelist=(403, 404) + _RETRY_STATUSES, raise_on_status=False)
        _logs_session.mount("https://", HTTPAdapter(max_retries=wait))
        _logs_session.mount("http://", HTTPAdapter(max_retries=wait))
    try:
        resp = _logs_session.get(url, timeout=_number("VAST_TIMEOUT_S", 30))
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
    with job function ``run``; with ``self_destruct`` the node also gets ``api_key`` (default
    ``VAST_NODE_API_KEY``, else ``VAST_API_KEY``) to destroy itself once the queue is done."""
    env = dict(extra or {})
    env.update(DISTRIBUTE_REMOTE=remote, DISTRIBUTE_RUN=run)
    if self_destruct:
        env["DISTRIBUTE_SELF_DESTRUCT"] = "1"
        env["VAST_API_KEY"] = api_key or get_env("VAST_NODE_API_KEY") or _key(None)
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


def self_destruct(container_id: Optional[Union[str, int]] = None,
                  api_key: Optional[str] = None) -> bool:
    """Destroy the instance this process runs on: ``CONTAINER_ID`` (set by Vast on every instance)
    with ``VAST_API_KEY`` (else Vast's per-instance ``CONTAINER_API_KEY``). Never raises:
    ``False`` (with a logged warning) when it could not, ``True`` when the instance is gone."""
    raw = str(container_id or get_env("CONTAINER_ID") or "").strip()
    key = api_key or get_env("VAST_API_KEY") or get_env("CONTAINER_API_KEY")
    if not raw.isdigit() or not key:
        log.warning("self-destruct skipped: %s", "no API key (VAST_API_KEY)" if raw.isdigit()
                    else f"CONTAINER_ID is not an instance id: {raw!r}")
        return False
    try:
        destroy_instance(int(raw), key)
    except VastError as exc:
        if exc.status != 404:
            log.warning("self-destruct of instance %s failed: %s", raw, exc)
            return False
    except Exception as exc:  # noqa: BLE001 - called while a worker exits: never raise
        log.warning("self-destruct of instance %s failed: %s", raw, _clean(exc, key))
        return False
    log.info("instance %s destroyed itself", raw)
    return True
