"""The Hugging Face Hub side of git-distribute: settings, bounded retries, clear errors, file API.

Settings come from the environment, then ``.env`` (:func:`settings`; table in the README). Calls
made through this module run under one retry policy, applied by a transport installed with the
client's public ``set_client_factory``: idempotent requests are retried on network errors,
timeouts, 408, 429 and 5xx; a commit is sent once (a lost answer is settled by comparing trees, see
:mod:`distribute.mirror`). Other code's requests in the process pass through untouched. Failures
become :class:`HubError` sentences that never contain the token.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

try:  # huggingface_hub >= 2 speaks httpx2, 1.x httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed client
    import httpx  # type: ignore[no-redef]
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from . import __version__, config
from .exceptions import DistributeError
from .redact import redact

log = logging.getLogger(__name__)

REPO_TYPES = ("dataset", "model", "space")
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
_MAX_WAIT_S = 30.0
_IDEMPOTENT_POST = re.compile(r"(/preupload/|/api/repos/create$|/info/lfs/objects/batch$)")


class HubError(DistributeError):
    """A Hugging Face Hub operation failed; the message is one sentence and contains no token."""


class HubAuthError(HubError):
    """The Hub refused the token (HTTP 401 or 403)."""


class HubUnavailableError(HubError):
    """The Hub could not be reached or kept failing (network, timeout, 429, 5xx) after the retries."""


@dataclass(frozen=True)
class HubSettings:
    """Where results go and how hard to try; see :func:`settings`."""

    repo_id: str
    repo_type: str = "dataset"
    token: Optional[str] = field(default=None, repr=False)  # never printed
    endpoint: Optional[str] = None
    retries: int = 3
    timeout_s: float = 30.0
    backoff_s: float = 1.0
    pause_s: float = 60.0

    def mask(self, text: object, one_line: bool = True) -> str:
        """``text`` with every secret (including this token) replaced by ``***``; one short line
        unless ``one_line`` is false."""
        out = redact(text)
        if self.token and len(self.token) >= 4:
            out = out.replace(self.token, "***")
        if not one_line:
            return out
        out = " ".join(out.split())
        return out if len(out) <= 400 else out[:397] + "..."

    @property
    def where(self) -> str:
        from huggingface_hub import constants

        return f"{self.repo_type} {self.repo_id} on {self.endpoint or constants.ENDPOINT}"

    def api(self) -> HfApi:
        return HfApi(endpoint=self.endpoint, token=self.token, library_name="git-distribute",
                     library_version=__version__)


def _number(key: str, default: float, minimum: float = 0.0) -> float:
    raw = config.get_env(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise HubError(f"{key} must be a number, not {raw!r}") from None
    if value < minimum:
        raise HubError(f"{key} must be at least {minimum:g}, not {raw!r}")
    return value


def settings() -> HubSettings:
    """Read the settings now (environment, then ``.env``): ``HF_REPO_ID`` (required), ``HF_REPO_TYPE``
    (dataset), ``HF_TOKEN``, ``HF_ENDPOINT`` (read here, so ``.env`` works: the client reads it only
    at import), ``DISTRIBUTE_HF_RETRIES`` (3), ``DISTRIBUTE_HF_TIMEOUT_S`` (30),
    ``DISTRIBUTE_HF_BACKOFF_S`` (1), ``DISTRIBUTE_HF_PAUSE_S`` (60). Raise :class:`HubError` if unusable."""
    repo_id = config.get_env("HF_REPO_ID")
    if not repo_id:
        raise HubError("no Hugging Face repository configured: set HF_REPO_ID=namespace/name "
                       "(in the environment or a .env file)")
    repo_type = config.get_env("HF_REPO_TYPE", "dataset") or "dataset"
    if repo_type not in REPO_TYPES:
        raise HubError(f"HF_REPO_TYPE must be one of {', '.join(REPO_TYPES)}, not {repo_type!r}")
    endpoint = config.get_env("HF_ENDPOINT")
    return HubSettings(repo_id=repo_id, repo_type=repo_type, token=config.get_env("HF_TOKEN"),
                       endpoint=endpoint.rstrip("/") if endpoint else None,
                       retries=int(_number("DISTRIBUTE_HF_RETRIES", 3)),
                       timeout_s=_number("DISTRIBUTE_HF_TIMEOUT_S", 30.0, minimum=0.05),
                       backoff_s=_number("DISTRIBUTE_HF_BACKOFF_S", 1.0),
                       pause_s=_number("DISTRIBUTE_HF_PAUSE_S", 60.0))


check_settings = settings  # for a worker that wants to fail at start-up rather than at the first job

# ---- the retry policy -------------------------------------------------------------------------
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
    """Raised inside the HTTP client once the retries are used up (re-worded by :func:`_calling`)."""


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


def _install_transport() -> None:
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
def _calling(what: str, s: HubSettings) -> Iterator[None]:
    """Run Hub calls under the retry policy; turn client errors into :class:`HubError` sentences."""
    _install_transport()
    token = _POLICY.set(s)
    try:
        yield
    except _TransportFailure as exc:
        raise HubUnavailableError(s.mask(f"{what}: the Hub at {_host(s)} kept failing ({exc})")) from exc
    except HubError:
        raise
    except HfHubHTTPError as exc:
        raise _http_error(what, s, exc) from exc
    except (httpx.HTTPError, OSError) as exc:
        raise HubUnavailableError(s.mask(f"{what}: cannot reach the Hub at {_host(s)} "
                                         f"({type(exc).__name__}: {exc})")) from exc
    except ValueError as exc:  # the client's own checks (paths, malformed answers, LFS errors)
        raise HubError(s.mask(f"{what}: {exc}")) from exc
    finally:
        _POLICY.reset(token)


def _host(s: HubSettings) -> str:
    from huggingface_hub import constants

    return s.endpoint or constants.ENDPOINT


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


# ---- the file API -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RemoteFile:
    """A file in the repository: its git blob id, size, and sha256 when it is stored with LFS/Xet."""

    blob_id: str
    size: int
    sha256: Optional[str] = None


def initialize_dataset(**kwargs: Any) -> str:
    """Create the repository if it is missing, keep it if present; return its URL.

    ``kwargs`` go to ``HfApi.create_repo`` (e.g. ``private=True``).
    """
    s = settings()
    kwargs.setdefault("exist_ok", True)
    with _calling(f"creating {s.repo_id}", s):
        return str(s.api().create_repo(s.repo_id, repo_type=s.repo_type, **kwargs))


def upload_file(path: Union[str, os.PathLike[str]], path_in_repo: Optional[str] = None) -> str:
    """Upload one file (default name in the repository: its base name); return the commit id."""
    local = Path(path)
    if not local.is_file():
        raise HubError(f"cannot upload {path}: not a file")
    target = path_in_repo or local.name
    return commit_files([(target, local)], f"Upload {target}")


def upload_directory(path: Union[str, os.PathLike[str]],
                     path_in_repo: Optional[str] = None) -> Optional[str]:
    """Upload every file under ``path`` (``.git`` excluded) in ONE commit; return its id.

    Files land under ``path_in_repo`` (default: the repository root). Returns ``None`` when the
    directory holds no file. Files equal to those already in the repository are not sent again.
    """
    root = Path(path)
    if not root.is_dir():
        raise HubError(f"cannot upload {path}: not a directory")
    prefix = (path_in_repo or "").strip("/")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            files.append((f"{prefix}/{rel}" if prefix else rel, Path(dirpath) / name))
    if not files:
        log.info("nothing to upload: %s holds no file", path)
        return None
    return commit_files(files, f"Upload {root.name or root.resolve().name} ({len(files)} files)")


def delete_file(path_in_repo: str) -> str:
    """Delete one file from the repository; return the commit id."""
    s = settings()
    with _calling(f"deleting {path_in_repo} from {s.repo_id}", s):
        info = s.api().delete_file(path_in_repo, s.repo_id, repo_type=s.repo_type,
                                   commit_message=f"Delete {path_in_repo}")
    return str(info.oid)


def list_files() -> list[str]:
    """Every file path in the repository, sorted."""
    s = settings()
    with _calling(f"listing {s.repo_id}", s):
        return sorted(s.api().list_repo_files(s.repo_id, repo_type=s.repo_type))


def remote_index(s: HubSettings, create: bool = True) -> dict[str, RemoteFile]:
    """``{path: RemoteFile}`` for the whole repository (one paginated tree listing).

    A missing repository is created when ``create`` is true (else it reads as empty).
    """
    api = s.api()
    with _calling(f"listing {s.repo_id}", s):
        try:
            entries = list(api.list_repo_tree(s.repo_id, recursive=True, repo_type=s.repo_type))
        except RepositoryNotFoundError:
            if not create:
                return {}
            api.create_repo(s.repo_id, repo_type=s.repo_type, exist_ok=True)
            log.info("created the %s", s.where)
            return {}
    out = {}
    for e in entries:
        if hasattr(e, "blob_id"):
            lfs = getattr(e, "lfs", None)
            out[e.path] = RemoteFile(e.blob_id, int(e.size or 0), lfs.sha256 if lfs else None)
    return out


def commit_files(files: Sequence[tuple[str, Path]], title: str, description: str = "",
                 s: Optional[HubSettings] = None) -> str:
    """Upload ``(path_in_repo, local_path)`` pairs in ONE commit; create the repository if missing.

    Returns the commit id (the current head when every file was already there unchanged).
    """
    s = s or settings()
    api = s.api()

    def attempt() -> Any:
        ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(local)) for p, local in files]
        return api.create_commit(s.repo_id, ops, commit_message=s.mask(title)[:200] or "Upload",
                                 commit_description=s.mask(description, one_line=False),
                                 repo_type=s.repo_type)

    with _calling(f"uploading {len(files)} file(s) to {s.repo_id}", s):
        try:
            info = attempt()
        except RepositoryNotFoundError:
            api.create_repo(s.repo_id, repo_type=s.repo_type, exist_ok=True)
            log.info("created the %s", s.where)
            info = attempt()
    return str(info.oid)


# ---- the mirror of job results: defined in distribute/mirror.py, part of this module's API ------
_MIRROR_NAMES = ("mirror_job", "mirror_after_finish", "catch_up", "MirrorReport")


def __getattr__(name: str) -> Any:
    """``hub.mirror_job``, ``hub.mirror_after_finish``, ``hub.catch_up`` (see :mod:`distribute.mirror`)."""
    if name in _MIRROR_NAMES:
        from . import mirror

        return getattr(mirror, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HubError", "HubAuthError", "HubUnavailableError", "HubSettings", "RemoteFile", "settings",
    "check_settings", "stats", "initialize_dataset", "upload_file", "upload_directory",
    "delete_file", "list_files", "remote_index", "commit_files", *_MIRROR_NAMES,
]
