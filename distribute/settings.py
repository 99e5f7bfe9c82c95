"""Settings: keyword arguments win, then the process environment, then a ``.env`` file.

This is the bottom layer: every module reads settings through it, and every number, duration and
on/off flag goes through the one parser here (:func:`number`, :func:`seconds`, :func:`count`,
:func:`flag`), so that a bad value is refused with the same kind of message everywhere, naming the
variable. ``python -m distribute.settings flag NAME`` prints ``1`` or ``0`` for shell scripts.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Optional, Union

from dotenv import dotenv_values, find_dotenv

from .exceptions import SettingError

_dotenv_cache: Optional[dict[str, Optional[str]]] = None
_env_file: Optional[str] = None
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")
__all__ = ["SETTINGS", "SettingError", "count", "flag", "get_env", "loaded_dotenv", "number",
           "seconds", "setting_source", "use_env_file"]


def use_env_file(path: Optional[str]) -> None:
    """Read settings from ``path`` instead of the ``.env`` found from the current directory upward
    (``None``: forget the file read so far and look for it again)."""
    global _dotenv_cache, _env_file
    if path is not None and not Path(path).is_file():
        raise SettingError(f"env file {path} does not exist")
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
    """The value of ``key`` from the environment, else from the ``.env`` file, else ``default``.
    Empty values count as unset."""
    value = os.environ.get(key)
    if value is None:
        value = _dotenv().get(key)
    return default if value is None or value == "" else value


def setting_source(key: str) -> str:
    """Where ``key`` comes from: ``"environment"``, the ``.env`` file's path, or ``"default"``."""
    if os.environ.get(key):
        return "environment"
    if _dotenv().get(key):
        return _env_file or find_dotenv(usecwd=True) or ".env"
    return "default"


# ---- the one parser -----------------------------------------------------------------------------
def number(key: str, default: float, given: Union[float, str, None] = None, *,
           minimum: float = 0.0, zero_ok: bool = False, maximum: Optional[float] = None,
           integer: bool = False) -> float:
    """A finite number: ``given`` if not ``None``, else ``key``'s setting, else ``default``.

    It must be above ``minimum`` (or equal to it with ``zero_ok``) and at most ``maximum``;
    ``integer`` asks for a whole number. ``nan``, ``inf`` and anything out of bounds are refused
    with a :class:`SettingError` naming ``key``.
    """
    raw: object = given if given is not None else get_env(key)
    if raw is None:
        return default
    want = "a whole number" if integer else "a number"
    try:
        value = float(str(raw).strip()) if not isinstance(raw, (int, float)) else float(raw)
    except ValueError:
        raise SettingError(f"{key} must be {want}, not {raw!r}") from None
    if not math.isfinite(value) or (integer and value != int(value)):
        raise SettingError(f"{key} must be {want}, not {raw!r}")
    low_ok = value >= minimum if zero_ok else value > minimum
    if not low_ok or (maximum is not None and value > maximum):
        bound = ("zero or positive" if zero_ok else "positive") if minimum == 0 else \
            f"{'at least' if zero_ok else 'above'} {minimum:g}"
        bound += f" and at most {maximum:g}" if maximum is not None else ""
        raise SettingError(f"{key} must be {bound}, not {raw!r}")
    return int(value) if integer else value


def seconds(key: str, default: float, given: Union[float, str, None] = None, *,
            zero_ok: bool = False) -> float:
    """A duration in seconds (positive, or zero too with ``zero_ok``); see :func:`number`."""
    return number(key, default, given, zero_ok=zero_ok)


def count(key: str, default: int, given: Union[int, str, None] = None, *,
          zero_ok: bool = True, maximum: Optional[int] = None) -> int:
    """A whole number of things (zero allowed unless ``zero_ok`` is false); see :func:`number`."""
    return int(number(key, default, given, zero_ok=zero_ok, maximum=maximum, integer=True))


def flag(key: str, default: bool, given: Union[bool, str, None] = None) -> bool:
    """An on/off setting: ``1 true yes on`` / ``0 false no off`` (any case); anything else is a
    :class:`SettingError` naming ``key``. ``given`` wins: a bool as it is, text by the same rule."""
    if given is not None and not isinstance(given, str):
        return bool(given)
    raw = given if given is not None else get_env(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise SettingError(f"{key} must be one of {'/'.join(_ON)} or {'/'.join(_OFF)}, not {raw!r}")


#: Every setting: (name, default shown when unset, what it is). ``docs/configuration.md`` generates its table from this.
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
    ("DISTRIBUTE_POLL_BUDGET", "5", "polls per second the whole line of lock waiters may send"),
    ("DISTRIBUTE_NEXT_JOB_TIMEOUT_S", "300", "seconds a next-job function may hold the lock"),
    ("DISTRIBUTE_NET_RETRIES", "8", "retries of a git command that could not reach the remote"),
    ("DISTRIBUTE_SSH_REUSE", "1", "0: a new ssh connection per git command (no ControlMaster)"),
    ("DISTRIBUTE_SSH_CONTROL_DIR", "/tmp/distribute-ssh-<uid>", "ssh ControlMaster sockets"),
    ("DISTRIBUTE_SLIM_CLONE", "1", "0: new local copies are full clones (not shallow, partial, sparse)"),
    ("DISTRIBUTE_POLL_S", "60", "longest wait of an idle worker between two looks for jobs"),
    ("DISTRIBUTE_GRACE_S", "30", "seconds a stopping worker lets its job finish before giving it back"),
    ("DISTRIBUTE_CACHE_DIR", "~/.cache/distribute", "where commands keep their clone of a remote"),
    ("DISTRIBUTE_MIRROR", None, "hf: workers upload each finished job to the Hugging Face repo"),
    ("DISTRIBUTE_MIRROR_BATCH", "1000", "most jobs per Hub commit"),
    ("DISTRIBUTE_HF_COMMITS_PER_HOUR", "100", "fleet-wide Hub commit budget"),
    ("DISTRIBUTE_HF_BATCH_FILES", "50", "live mirror: commit once this many files are pending"),
    ("DISTRIBUTE_HF_BATCH_S", "300", "... or once a pending job has waited this long"),
    ("DISTRIBUTE_HF_MAX_WAIT_S", "600", "longest wait for a Hub Retry-After or a commit slot"),
    ("DISTRIBUTE_HF_PACK", "0", "N > 0: a new Hub repository packs N jobs per tar shard"),
    ("DISTRIBUTE_HF_RETRIES", "3", "retries of a failed Hub request"),
    ("DISTRIBUTE_HF_TIMEOUT_S", "30", "seconds before a Hub request times out"),
    ("DISTRIBUTE_HF_BACKOFF_S", "1", "first pause between Hub retries"),
    ("DISTRIBUTE_HF_PAUSE_S", "60", "seconds live mirroring pauses after the Hub was unreachable"),
    ("HF_TOKEN", None, "Hugging Face token (always shown as ***)"),
    ("HF_REPO_ID", None, "the Hugging Face repository results are mirrored to"),
    ("HF_REPO_TYPE", "dataset", "its type: dataset, model or space"),
    ("HF_ENDPOINT", None, "the Hub's base URL (the client's own setting)"),
    ("DISTRIBUTE_SELF_DESTRUCT", "0", "1: an idle worker on a Vast.ai node destroys its instance"),
    ("VAST_API_KEY", None, "Vast.ai API key"),
    ("VAST_API_URL", "https://console.vast.ai", "Vast.ai API base URL"),
    ("VAST_NODE_API_KEY", None, "an account key handed to self-destructing nodes (a risk; default: "
                                "none, nodes use their own CONTAINER_API_KEY)"),
    ("VAST_RETRY_TOTAL", "5", "retries of one Vast.ai request after 429, 5xx or a broken connection"),
    ("VAST_RETRY_BACKOFF", "0.5", "Vast.ai back-off factor: waits of 1x, 2x, 4x... that many seconds"),
    ("VAST_RETRY_BACKOFF_MAX", "30", "longest single wait between Vast.ai retries"),
    ("VAST_TIMEOUT_S", "30", "connect and read timeout of one Vast.ai request"),
    ("DISTRIBUTE_VAST_NODES", "vast-nodes.json", "node list file of rent / nodes / terminate"),
)


def _main(argv: list[str]) -> int:
    """``python -m distribute.settings flag NAME [DEFAULT]``: ``1``/``0`` on stdout (unset:
    DEFAULT, else 0), exit 2 if malformed."""
    if len(argv) not in (2, 3) or argv[0] != "flag" or argv[2:] not in ([], ["0"], ["1"]):
        print("usage: python -m distribute.settings flag NAME [0|1]", file=sys.stderr)
        return 2
    try:
        print(1 if flag(argv[1], argv[2:] == ["1"]) else 0)
    except SettingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
