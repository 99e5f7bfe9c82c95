"""Settings: keyword arguments win, then the process environment, then a ``.env`` file."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from dotenv import dotenv_values, find_dotenv

from .exceptions import DistributeError

if TYPE_CHECKING:  # pragma: no cover
    from .worker import Worker

log = logging.getLogger(__name__)

_dotenv_cache: Optional[dict[str, Optional[str]]] = None
_env_file: Optional[str] = None


def use_env_file(path: Optional[str]) -> None:
    """Read settings from ``path`` instead of the ``.env`` found from the current directory upward."""
    global _dotenv_cache, _env_file
    if path is not None and not Path(path).is_file():
        raise DistributeError(f"env file {path} does not exist")
    _env_file, _dotenv_cache = path, None


def _dotenv() -> dict[str, Optional[str]]:
    global _dotenv_cache
    if _dotenv_cache is None:
        path = _env_file or find_dotenv(usecwd=True)
        _dotenv_cache = dict(dotenv_values(path)) if path else {}
    return _dotenv_cache


def loaded_dotenv() -> dict[str, Optional[str]]:
    """The ``.env`` values if the file was already read, else ``{}`` (never reads it: redaction
    calls this from inside logging, which the parser itself may be doing)."""
    return _dotenv_cache or {}


def get_env(key: str, default: Optional[str] = None) -> Optional[str]:
    """The value of ``key`` from the environment, else from the ``.env`` file, else ``default``."""
    value = os.environ.get(key)
    if value is None:
        value = _dotenv().get(key)
    return default if value is None or value == "" else value


def get_float(key: str, default: float, given: Optional[float] = None) -> float:
    """A positive number setting: ``given`` if not ``None``, else ``key`` from the environment."""
    if given is not None:
        value: object = given
    else:
        value = get_env(key, str(default))
    try:
        number = float(value)  # type: ignore[arg-type]
    except ValueError:
        raise DistributeError(f"{key} must be a number, not {value!r}") from None
    if number <= 0:
        raise DistributeError(f"{key} must be positive, not {value!r}")
    return number


def get_flag(key: str, default: bool) -> bool:
    """An on/off setting: ``0``, ``false``, ``no`` and ``off`` (any case) mean off, other values on."""
    value = (get_env(key) or "").strip().lower()
    if not value:
        return default
    return value not in ("0", "false", "no", "off")


#: Every setting: (name, default shown when unset, what it is). The README's table mirrors this.
SETTINGS: tuple[tuple[str, Optional[str], str], ...] = (
    ("DISTRIBUTE_REMOTE", None, "URL of the shared git remote (any command's REMOTE)"),
    ("DISTRIBUTE_RUN", None, "MODULE:FUNCTION a worker calls for each job (--run)"),
    ("DISTRIBUTE_NEXT_JOB", "distribute:queue_jobs_func", "MODULE:FUNCTION choosing the next job"),
    ("DISTRIBUTE_PATH", ".distribute/<name>", "the worker's local copy of the remote (--path)"),
    ("DISTRIBUTE_NAME", "<host>-<random>", "the worker's name (--name)"),
    ("DISTRIBUTE_LOCK_LEASE_S", "60", "seconds an unchanged lock is honoured before it is broken"),
    ("DISTRIBUTE_JOB_LEASE_S", "600", "seconds without a heartbeat before a job is requeued"),
    ("DISTRIBUTE_HEARTBEAT_S", None, "seconds between heartbeats (default: job lease / 5)"),
    ("DISTRIBUTE_MAX_ATTEMPTS", "3", "attempts of a job before it goes to failed.txt"),
    ("DISTRIBUTE_POLL_MAX_S", "1", "longest back-off while waiting for the lock"),
    ("DISTRIBUTE_NET_RETRIES", "8", "retries of a git command that could not reach the remote"),
    ("DISTRIBUTE_SSH_REUSE", "1", "0: a new ssh connection per git command (no ControlMaster)"),
    ("DISTRIBUTE_SSH_CONTROL_DIR", "/tmp/distribute-ssh-<uid>", "ssh ControlMaster sockets"),
    ("DISTRIBUTE_SLIM_CLONE", "1", "0: new local copies are full clones (not shallow, partial, sparse)"),
    ("DISTRIBUTE_POLL_S", "5", "seconds an idle worker waits before looking for jobs again"),
    ("DISTRIBUTE_GRACE_S", "30", "seconds a stopping worker lets its job finish before giving it back"),
    ("DISTRIBUTE_CACHE_DIR", "~/.cache/distribute", "where commands keep their clone of a remote"),
    ("DISTRIBUTE_MIRROR", None, "hf: workers upload each finished job to the Hugging Face repo"),
    ("DISTRIBUTE_MIRROR_BATCH", "25", "jobs per Hub commit in `distribute mirror`"),
    ("DISTRIBUTE_HF_RETRIES", "3", "retries of a failed Hub request"),
    ("DISTRIBUTE_HF_TIMEOUT_S", "30", "seconds before a Hub request times out"),
    ("DISTRIBUTE_HF_BACKOFF_S", "1", "first pause between Hub retries"),
    ("DISTRIBUTE_HF_PAUSE_S", "60", "seconds live mirroring pauses after the Hub was unreachable"),
    ("HF_TOKEN", None, "Hugging Face token (always shown as ***)"),
    ("HF_REPO_ID", None, "the Hugging Face repository results are mirrored to"),
    ("HF_REPO_TYPE", "dataset", "its type: dataset, model or space"),
    ("HF_ENDPOINT", None, "the Hub's base URL (the client's own setting)"),
    ("DISTRIBUTE_SELF_DESTRUCT", None, "1: an idle worker on a Vast.ai node destroys its instance"),
    ("VAST_API_KEY", None, "Vast.ai API key"),
    ("VAST_API_URL", "https://console.vast.ai", "Vast.ai API base URL"),
    ("VAST_NODE_API_KEY", None, "the key self-destructing nodes get (default: VAST_API_KEY)"),
    ("DISTRIBUTE_VAST_NODES", "vast-nodes.json", "node list file of rent / nodes / terminate"),
)


def setting_source(key: str) -> str:
    """Where ``key`` comes from: ``"environment"``, the ``.env`` file's path, or ``"default"``."""
    if os.environ.get(key):
        return "environment"
    if _dotenv().get(key):
        return _env_file or find_dotenv(usecwd=True) or ".env"
    return "default"


def get_settings() -> dict[str, Optional[str]]:
    """The resolved value of every setting in :data:`SETTINGS`, secrets masked.

    Unset settings show their default (``None`` when there is none). URL credentials, tokens and
    the values of secret environment variables are replaced by ``***``, so the result is safe to
    print or log.
    """
    from .redact import redact  # late import: redact has no dependencies, but keep config light

    out: dict[str, Optional[str]] = {}
    for key, default, _ in SETTINGS:
        value = get_env(key)
        if value is None and key == "DISTRIBUTE_HEARTBEAT_S":
            value = f"{get_float('DISTRIBUTE_JOB_LEASE_S', 600) / 5:g}"
        if value is None:
            value = default
        out[key] = None if value is None else "***" if key == "HF_TOKEN" else redact(value)
    return out


def create_from_config(remote_url: Optional[str] = None, path: Optional[str] = None,
                       name: Optional[str] = None, **tunables: object) -> "Worker":
    """A :class:`~distribute.Worker` built from ``DISTRIBUTE_REMOTE``, ``DISTRIBUTE_PATH`` and
    ``DISTRIBUTE_NAME`` (environment first, then ``.env``); arguments given here win.

    ``tunables`` are passed on (``job_lease_s=...``); unset ones come from their own settings.
    """
    from .dist import worker_from_url  # late import: worker imports this module

    url = remote_url or get_env("DISTRIBUTE_REMOTE")
    if not url:
        raise DistributeError("no remote given: set DISTRIBUTE_REMOTE (environment or .env) "
                              "or pass the remote URL")
    return worker_from_url(url, path or get_env("DISTRIBUTE_PATH"),
                           name or get_env("DISTRIBUTE_NAME"), **tunables)
