"""The retry policy of Hub calls, applied by an HTTP transport installed once per process.

The transport is installed with the client's public ``set_client_factory`` (unless the user set a
factory of their own) and applies the policy only inside :func:`calling`: idempotent requests are
retried on network errors, timeouts, 408, 429 and 5xx; a commit is sent once (a lost answer is
settled by comparing trees, see :mod:`distribute.hub.mirror`), except after a 429, which the Hub
answers before doing anything. A 429 with a positive ``Retry-After`` is waited out as asked (not
counted as a failed attempt) as long as the waits of one request stay within
``DISTRIBUTE_HF_MAX_WAIT_S``; a longer one is :class:`~distribute.hub.HubQuotaError` carrying the
wait asked for, so that the mirror can pace the whole fleet by it. Other
code's requests in the process pass through untouched. Failures become :class:`HubError`
sentences that never contain the token.
"""
from __future__ import annotations

import contextlib
import contextvars
import email.utils
import logging
import random
import re
import threading
import time
from datetime import datetime, timezone
from typing import Any, Iterator, Optional

try:  # huggingface_hub >= 2 speaks httpx2, 1.x httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed client
    import httpx  # type: ignore[no-redef]
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from .errors import HubAuthError, HubError, HubQuotaError, HubUnavailableError
from .hubsettings import HubSettings

__all__ = ["calling", "stats", "install_transport", "RETRY_STATUS"]

log = logging.getLogger(__name__)

RETRY_STATUS = (408, 429, 500, 502, 503, 504)
_MAX_BACKOFF_S = 30.0
_IDEMPOTENT_POST = re.compile(r"(/preupload/|/api/repos/create$|/info/lfs/objects/batch$)")
_COMMIT_POST = re.compile(r"/commit/[^/]+$")

_POLICY: contextvars.ContextVar[Optional[HubSettings]] = contextvars.ContextVar(
    "distribute_hub_policy", default=None)
_install_lock = threading.Lock()
_installed = threading.Event()
_stats_lock = threading.Lock()
_STATS = {"requests": 0, "retries": 0, "quota_waits": 0, "quota_refusals": 0}


def stats() -> dict[str, int]:
    """HTTP requests this process sent to the Hub through this module: ``requests`` (all),
    ``retries`` (after a failure), ``quota_waits`` (429s waited out as the Hub asked) and
    ``quota_refusals`` (429s that asked for a longer wait than allowed)."""
    with _stats_lock:
        return dict(_STATS)


def _count(key: str) -> None:
    with _stats_lock:
        _STATS[key] += 1


class _TransportFailure(HubUnavailableError):
    """Raised inside the HTTP client once the retries are used up (re-worded by :func:`calling`)."""


class _QuotaFailure(_TransportFailure):
    """Raised inside the HTTP client when a 429 asks for a longer wait than the policy allows."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _PolicyTransport(httpx.BaseTransport):
    """Sends through an ordinary client (so proxy variables work); applies the policy when
    active."""

    def __init__(self) -> None:
        self._inner = httpx.Client(follow_redirects=False, timeout=None)

    def handle_request(self, request: Any) -> Any:
        policy = _POLICY.get()
        if policy is None:
            return self._inner.send(request, stream=True)
        t = policy.timeout_s
        request.extensions["timeout"] = {"connect": t, "read": t, "write": t, "pool": t}
        method, path = request.method, request.url.path
        idempotent = method in ("GET", "HEAD", "PUT") or bool(_IDEMPOTENT_POST.search(path))
        # a 429 is a refusal before anything was done: even a commit may be sent again after it
        resendable_429 = idempotent or bool(_COMMIT_POST.search(path)) and method == "POST"
        attempts = 1 + (policy.retries if resendable_429 else 0)
        attempt, waited, problem = 0, 0.0, ""
        while True:
            attempt += 1
            _count("requests")
            wait: Optional[float] = None
            try:
                response = self._inner.send(request, stream=True)
            except httpx.TransportError as exc:
                problem = type(exc).__name__
                if not idempotent:
                    break  # a commit may have landed: never sent twice
            else:
                status = response.status_code
                if status == 429 and resendable_429:
                    wait = _retry_after(response)
                elif status not in RETRY_STATUS or not idempotent:
                    return response  # errors of a commit are the client's to raise
                problem = f"HTTP {status}"
                response.read()
                response.close()
                if wait is not None and wait > 0:  # the Hub said how long: wait that, within bounds
                    if waited + wait > policy.max_wait_s:
                        _count("quota_refusals")
                        raise _QuotaFailure(
                            f"{method} {path} refused for a quota (HTTP 429): the Hub asks to "
                            f"wait {wait:.0f}s, more than the {policy.max_wait_s:g}s allowed "
                            "(DISTRIBUTE_HF_MAX_WAIT_S)", wait)
                    log.warning("Hub %s %s: HTTP 429 (quota); waiting %.1fs as the Hub asks",
                                method, path, wait)
                    _count("quota_waits")
                    time.sleep(wait)
                    waited += wait
                    attempt -= 1  # a wait the Hub asked for is not a failed attempt
                    continue
            if attempt >= attempts:
                break
            backoff = policy.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1)
            delay = min(backoff, _MAX_BACKOFF_S)
            log.warning("Hub %s %s: %s; retrying in %.1fs (%d/%d)", method, path, problem, delay,
                        attempt, attempts - 1)
            _count("retries")
            time.sleep(delay)
        tries = f" after {attempt} attempts" if attempt > 1 else ""
        raise _TransportFailure(f"{method} {path} failed: {problem}{tries}")

    def close(self) -> None:
        self._inner.close()


def _retry_after(response: Any) -> Optional[float]:
    """The wait a ``Retry-After`` header asks for, in seconds (delta or HTTP date), else
    ``None``."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def install_transport() -> None:
    """Install the policy transport once per process (unless the user set a client factory)."""
    if _installed.is_set():
        return
    with _install_lock:
        if _installed.is_set():
            return
        _installed.set()
        try:
            from huggingface_hub import set_client_factory
            from huggingface_hub.utils import _http as hf_http
        except ImportError:  # pragma: no cover - very old clients
            log.info("huggingface_hub has no set_client_factory: "
                     "DISTRIBUTE_HF_* settings do not apply")
            return
        current = getattr(hf_http, "_GLOBAL_CLIENT_FACTORY", None)
        default = getattr(hf_http, "default_client_factory", None)
        if current is not None and default is not None and current is not default:
            log.info("a custom huggingface_hub client factory is set: DISTRIBUTE_HF_* do not apply")
            return
        hook = getattr(hf_http, "hf_request_event_hook", None)

        def factory() -> Any:
            return httpx.Client(transport=_PolicyTransport(), follow_redirects=True, timeout=None,
                                event_hooks={"request": [hook]} if hook else {})

        set_client_factory(factory)


@contextlib.contextmanager
def calling(what: str, s: HubSettings) -> Iterator[None]:
    """Run Hub calls under the retry policy; turn client errors into :class:`HubError` sentences."""
    install_transport()
    token = _POLICY.set(s)
    try:
        yield
    except _QuotaFailure as exc:
        raise HubQuotaError(s.mask(f"{what}: {exc}"), exc.retry_after) from exc
    except _TransportFailure as exc:
        raise HubUnavailableError(
            s.mask(f"{what}: the Hub at {s.host} kept failing ({exc})")) from exc
    except HubError:
        raise
    except HfHubHTTPError as exc:
        raise _http_error(what, s, exc) from exc
    except (httpx.HTTPError, OSError) as exc:
        raise HubUnavailableError(s.mask(f"{what}: cannot reach the Hub at {s.host} "
                                         f"({type(exc).__name__}: {exc})")) from exc
    except ValueError as exc:  # the client's own checks (paths, malformed answers, LFS errors)
        raise HubError(s.mask(f"{what}: {exc}")) from exc
    finally:
        _POLICY.reset(token)


def _http_error(what: str, s: HubSettings, exc: HfHubHTTPError) -> HubError:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(s.mask(f"{what}: the {s.where} does not exist or the token cannot see it "
                               "(check HF_REPO_ID, HF_REPO_TYPE and HF_TOKEN)"))
    if status == 401 and not s.token:
        return HubAuthError(s.mask(f"{what}: the Hub needs a token (HTTP 401) for the {s.where}: "
                                   "set HF_TOKEN (or log in with the Hugging Face client)"))
    if status in (401, 403):
        return HubAuthError(s.mask(f"{what}: the Hub refused the token (HTTP {status}) for the "
                                   f"{s.where}; set HF_TOKEN to a token with write access to it"))
    if isinstance(exc, EntryNotFoundError):
        return HubError(s.mask(f"{what}: no such file in the {s.where}"))
    detail = getattr(exc, "server_message", None) or str(exc).splitlines()[0]
    cls = HubUnavailableError if status in RETRY_STATUS or (status or 0) >= 500 else HubError
    return cls(s.mask(f"{what}: the Hub answered HTTP {status} ({detail})"))
