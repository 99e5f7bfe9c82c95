"""The Vast.ai HTTP client: one ``requests.Session`` with bounded retries, URLs, keys, errors.

Every call goes through one session whose urllib3 ``Retry`` handles HTTP 429 and 5xx with
exponential back-off (honouring ``Retry-After`` when the API sends one), a bounded number of
attempts and timeouts. The key travels only in the ``Authorization: Bearer`` header; every message
that leaves this module is redacted. Settings (``VAST_API_KEY``, ``VAST_API_URL``,
``VAST_RETRY_TOTAL``, ``VAST_RETRY_BACKOFF``, ``VAST_RETRY_BACKOFF_MAX``, ``VAST_TIMEOUT_S``) are
read through :mod:`distribute.settings`; ``docs/operations/vast.md`` has the table.
"""
from __future__ import annotations

import json
import logging
import random
from typing import Any, Mapping, Optional
from urllib.parse import quote, urlencode

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .. import settings
from ..exceptions import DistributeError
from ..redact import redact
from .query import api_message

__all__ = ["VastError", "VastWarning", "apiurl", "http_get", "http_put", "http_post", "http_del",
           "base_url", "retry_settings", "timeout_s", "clean", "DEFAULT_API_URL",
           "RETRY_STATUSES"]

log = logging.getLogger(__name__)

DEFAULT_API_URL = settings.table_default("VAST_API_URL")
RETRY_STATUSES = (429, 500, 502, 503, 504)


class VastError(DistributeError):
    """A Vast.ai API call failed. ``status`` is the HTTP status (``None``: no answer at all).
    ``nodes`` lists instances that were rented before a :func:`~distribute.vast.rent_nodes` call
    failed."""

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
        return bool(super().is_retry(method, status_code, has_retry_after))

    def get_retry_after(self, response: Any) -> Optional[float]:
        after = super().get_retry_after(response)
        cap = getattr(self, "backoff_max", None) or 120
        return None if after is None else min(after, cap)


_session: Optional[requests.Session] = None
_session_settings: Optional[tuple[float, ...]] = None


def retry_settings() -> tuple[int, float, float]:
    """``(VAST_RETRY_TOTAL, VAST_RETRY_BACKOFF, VAST_RETRY_BACKOFF_MAX)``, read now; a malformed
    value is a :class:`~distribute.settings.SettingError` naming the variable."""
    return (settings.count_setting("VAST_RETRY_TOTAL"),
            settings.number_setting("VAST_RETRY_BACKOFF"),
            settings.number_setting("VAST_RETRY_BACKOFF_MAX"))


def timeout_s() -> float:
    """``VAST_TIMEOUT_S``: connect and read timeout of one request."""
    return settings.seconds_setting("VAST_TIMEOUT_S")


def _get_session() -> requests.Session:
    """The module's session, its adapters (re)mounted when the retry settings changed."""
    global _session, _session_settings
    current = retry_settings()
    if _session is None:
        _session = requests.Session()
        _session.trust_env = False  # no ~/.netrc credentials, no proxy surprises
    if current != _session_settings:
        total, backoff, backoff_max = current
        kwargs: dict[str, Any] = {
            "total": total, "connect": total, "read": total, "status": total, "other": 0,
            "backoff_factor": backoff, "status_forcelist": RETRY_STATUSES,
            "allowed_methods": frozenset({"GET", "POST", "DELETE"}), "raise_on_status": False}
        retry = _Retry(**kwargs)
        retry.backoff_max = retry.DEFAULT_BACKOFF_MAX = backoff_max  # type: ignore[assignment]
        adapter = HTTPAdapter(max_retries=retry)
        _session.mount("https://", adapter)
        _session.mount("http://", adapter)
        _session_settings = current
    return _session


def base_url() -> str:
    """``VAST_API_URL`` without a trailing ``/`` (default :data:`DEFAULT_API_URL`)."""
    return (settings.text_setting("VAST_API_URL") or DEFAULT_API_URL).rstrip("/")


def apiurl(subpath: str, query_args: Optional[Mapping[str, Any]] = None,
           api_key: Optional[str] = None) -> str:
    """The URL of API path ``subpath`` (``/instances/`` -> ``<base>/api/v0/instances/``).

    ``query_args`` values that are not strings are sent as JSON; everything is percent-quoted.
    ``api_key`` puts the key into the query string, which the API also accepts; the functions of
    this package never do that and send it in the ``Authorization`` header instead.
    """
    path = "/" + subpath.lstrip("/")
    args = dict(query_args or {})
    if api_key is not None:
        args["api_key"] = api_key
    url = base_url() + "/api/v0" + quote(path, safe="/:@-._~")
    if not args:
        return url
    pairs = [(k, v if isinstance(v, str) else json.dumps(v, separators=(",", ":")))
             for k, v in args.items()]
    return url + "?" + urlencode(pairs, quote_via=quote)


def _key(api_key: Optional[str]) -> str:
    key = settings.text_setting("VAST_API_KEY", api_key)
    if not key:
        raise VastError("no Vast.ai API key: set VAST_API_KEY in the environment or a .env file")
    return key


def clean(text: object, key: Optional[str]) -> str:
    """``text`` redacted, and ``key`` masked too (a key given as an argument, or one no longer in
    the environment, is not known to :func:`~distribute.redact.redact`)."""
    out = str(text)
    if key and len(key) >= 4:
        out = out.replace(key, "***")
    return redact(out)


def _request(method: str, url: str, json_body: Any = None, api_key: Optional[str] = None) -> Any:
    key = _key(api_key)
    shown = clean(url.split("?")[0], key)
    try:
        resp = _get_session().request(
            method, url, json=json_body, timeout=timeout_s(),
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"})
    except requests.RequestException as exc:
        reason = type(exc).__name__
        raise VastError(clean(f"{method} {shown} failed: no answer from the Vast.ai API "
                              f"({reason})", key)) from None
    log.debug("%s %s -> %s", method, shown, resp.status_code)
    if resp.status_code >= 400:
        hint = " (is VAST_API_KEY right?)" if resp.status_code == 401 else ""
        raise VastError(clean(f"{method} {shown}: HTTP {resp.status_code}: "
                              f"{api_message(resp)}{hint}", key), status=resp.status_code)
    try:
        body = resp.json()
    except ValueError:
        raise VastError(clean(f"{method} {shown}: the answer is not JSON but "
                              f"{api_message(resp)}", key), status=resp.status_code) from None
    if isinstance(body, dict) and body.get("success") is False:
        raise VastError(clean(f"{method} {shown}: {api_message(resp)}", key),
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
