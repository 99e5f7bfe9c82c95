"""The retry policy of Hub calls, applied by an HTTP transport installed once per process.

The transport is installed with the client's public ``set_client_factory`` (unless the user set a
factory of their own) and applies the policy only inside :func:`calling`: idempotent requests are
retried on network errors, timeouts, 408, 429 and 5xx (honouring ``Retry-After``); a commit is sent
once (a lost answer is settled by comparing trees, see :mod:`distribute.hub.mirror`). Other
code's requests in the process pass through untouched. Failures become :class:`HubError`
sentences that never contain the token.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import re
import threading
import time
from typing import Any, Iterator, Optional

try:  # huggingface_hub >= 2 speaks httpx2, 1.x httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed client
    import httpx  # type: ignore[no-redef]
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from .errors import HubAuthError, HubError, HubUnavailableError
from .hubsettings import HubSettings

__all__ = ["calling", "stats", "install_transport", "RETRY_STATUS"]

log = logging.getLogger(__name__)

RETRY_STATUS = (408, 429, 500, 502, 503, 504)
_MAX_WAIT_S = 30.0
_IDEMPOTENT_POST = re.compile(r"(/preupload/|/api/repos/create$|/info/lfs/objects/batch$)")

_POLICY: contextvars.ContextVar[Optional[HubSettings]] = contextvars.ContextVar(
    "distribute_hub_policy", default=None)
_install_lock = threading.Lock()
_installed = False
_stats_lock = threading.Lock()
_STATS = {"requests": 0, "retries": 0}


def stats() -> dict[str, int]:
    """HTTP requests (and retries among them) this process sent to the Hub through this module."""
    with _stats_lock:
        return dict(_STATS)


def _count(key: str) -> None:
    with _stats_lock:
        _STATS[key] += 1


class _TransportFailure(HubUnavailableError):
    """Raised inside the HTTP client once the retries are used up (re-worded by :func:`calling`)."""


class _PolicyTransport(httpx.BaseTransport):
    """Sends through an ordinary client (so proxy variables work); applies the policy when active."""

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
        attempts = 1 + (policy.retries if idempotent else 0)
        problem, wait = "", None
        for attempt in range(1, attempts + 1):
            _count("requests")
            try:
                response = self._inner.send(request, stream=True)
            except httpx.TransportError as exc:
                problem, wait = type(exc).__name__, None
            else:
                if response.status_code not in RETRY_STATUS or not idempotent:
                    return response  # errors of a commit are the client's to raise
                problem, wait = f"HTTP {response.status_code}", _retry_after(response)
                response.read()
                response.close()
            if attempt < attempts:
                backoff = policy.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1)
                delay = min(wait if wait is not None else backoff, _MAX_WAIT_S)
                log.warning("Hub %s %s: %s; retrying in %.1fs (%d/%d)", method, path, problem, delay,
                            attempt, attempts - 1)
                _count("retries")
                time.sleep(delay)
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        raise _TransportFailure(f"{method} {path} failed: {problem}{tries}")

    def close(self) -> None:
        self._inner.close()


def _retry_after(response: Any) -> Optional[float]:
    value = (response.headers.get("Retry-After") or "").strip()
    return float(value) if value.isdigit() else None


def install_transport() -> None:
    """Install the policy transport once per process (unless the user set a client factory)."""
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        _installed = True
        try:
            from huggingface_hub import set_client_factory
            from huggingface_hub.utils import _http as hf_http
        except ImportError:  # pragma: no cover - very old clients
            log.info("huggingface_hub has no set_client_factory: DISTRIBUTE_HF_* settings do not apply")
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
    except _TransportFailure as exc:
        raise HubUnavailableError(s.mask(f"{what}: the Hub at {s.host} kept failing ({exc})")) from exc
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
    if status in (401, 403):
        return HubAuthError(s.mask(f"{what}: the Hub refused the token (HTTP {status}) for the {s.where}; "
                                   "set HF_TOKEN to a token with write access to it"))
    if isinstance(exc, EntryNotFoundError):
        return HubError(s.mask(f"{what}: no such file in the {s.where}"))
    detail = getattr(exc, "server_message", None) or str(exc).splitlines()[0]
    cls = HubUnavailableError if status in RETRY_STATUS or (status or 0) >= 500 else HubError
    return cls(s.mask(f"{what}: the Hub answered HTTP {status} ({detail})"))
