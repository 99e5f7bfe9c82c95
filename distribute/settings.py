"""Settings: keyword arguments win, then the process environment, then a ``.env`` file.

This is the bottom layer: every module reads settings through it, and every number, duration and
on/off flag goes through the one parser here (:func:`number`, :func:`seconds`, :func:`count`,
:func:`flag`), so that a bad value is refused with the same kind of message everywhere, naming the
variable. Every setting has one row in :data:`SETTINGS` (name, default, kind, help): the
package's readers (:func:`seconds_setting`, :func:`count_setting`, :func:`flag_setting`,
:func:`text_setting`...) take their default and bounds from it, and so do ``distribute config``
and the docs.
``python -m distribute.settings flag NAME`` prints ``1`` or ``0`` for shell scripts.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from dotenv import dotenv_values, find_dotenv

from .exceptions import SettingError

_dotenv_cache: Optional[dict[str, Optional[str]]] = None
_env_file: Optional[str] = None
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")
__all__ = ["HEARTBEATS_PER_JOB_LEASE", "KINDS", "SETTINGS", "Setting", "SettingError",
           "choice_setting", "count", "count_setting", "flag", "flag_setting", "get_env",
           "heartbeat_seconds", "loaded_dotenv",
           "number", "number_setting", "seconds", "seconds_setting", "setting_row",
           "setting_source", "table_default", "text_setting", "use_env_file"]


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


# ---- the table ---------------------------------------------------------------------------------
#: How a value of each kind is read: its parser, and what its default means.
KINDS = ("seconds", "number", "count", "flag", "text", "secret")
#: A busy worker moves its heartbeat this many times per job lease unless told otherwise.
HEARTBEATS_PER_JOB_LEASE = 5


@dataclass(frozen=True)
class Setting:
    """One row of :data:`SETTINGS`: a setting, its default, how it is parsed, what it is for."""

    name: str
    #: The value used while the setting is unset, written as in the environment (``None``: none,
    #: or one computed at run time, described by ``shown``).
    default: Optional[str]
    #: How the value is parsed, one of :data:`KINDS` (``secret``: text never shown).
    kind: str
    help: str
    #: What the docs and ``distribute config`` show while unset, when ``default`` is ``None``.
    shown: Optional[str] = None
    #: Numbers: whether zero is allowed, the bound they must exceed, the most they may be.
    zero_ok: bool = False
    minimum: float = 0.0
    maximum: Optional[float] = None
    #: Text: the only values allowed (empty: any).
    choices: tuple[str, ...] = ()

    @property
    def shown_default(self) -> Optional[str]:
        """The default as the docs and ``distribute config`` show it (``None``: no default)."""
        return self.default if self.default is not None else self.shown


#: Every setting, in the order ``distribute config`` and ``docs/configuration.md`` list them. Every
#: reader in the package takes its default from here (:func:`seconds_setting` and its siblings).
SETTINGS: tuple[Setting, ...] = (
    Setting("DISTRIBUTE_REMOTE", None, "text",
            "URL of the shared git remote (any command's REMOTE)"),
    Setting("DISTRIBUTE_RUN", None, "text", "MODULE:FUNCTION a worker calls for each job (--run)"),
    Setting("DISTRIBUTE_NEXT_JOB", "distribute:queue_jobs_func", "text",
            "MODULE:FUNCTION choosing the next job"),
    Setting("DISTRIBUTE_PATH", None, "text", "the worker's local copy of the remote (--path)",
            shown=".distribute/<name>"),
    Setting("DISTRIBUTE_NAME", None, "text", "the worker's name (--name)", shown="<host>-<random>"),
    Setting("DISTRIBUTE_LOCK_LEASE_S", "60", "seconds",
            "seconds an unchanged lock is honoured before it is broken"),
    Setting("DISTRIBUTE_JOB_LEASE_S", "600", "seconds",
            "seconds without a heartbeat before a job is requeued"),
    Setting("DISTRIBUTE_HEARTBEAT_S", None, "seconds", "seconds between heartbeats",
            shown=f"job lease / {HEARTBEATS_PER_JOB_LEASE}"),
    Setting("DISTRIBUTE_MAX_ATTEMPTS", "3", "count",
            "attempts of a job before it goes to failed.txt"),
    Setting("DISTRIBUTE_POLL_MAX_S", "1", "seconds", "longest back-off while waiting for the lock"),
    Setting("DISTRIBUTE_POLL_BUDGET", "5", "number",
            "polls per second the whole line of lock waiters may send"),
    Setting("DISTRIBUTE_MAX_BATCH", "4", "count",
            "jobs the worker loop (`distribute worker`) claims at once at most; 1: one at a time"),
    Setting("DISTRIBUTE_BATCH_S", "60", "seconds",
            "the work one batch of claimed jobs should hold, judged from the jobs' durations"),
    Setting("DISTRIBUTE_NEXT_JOB_TIMEOUT_S", "300", "seconds",
            "seconds a next-job function may hold the lock"),
    Setting("DISTRIBUTE_MAX_FILE_MB", None, "number",
            "largest file a job may commit, in MB: a job with a bigger one fails at once "
            "(0: no limit)", shown="50 on GitHub, else no limit", zero_ok=True),
    Setting("DISTRIBUTE_PUSHES_PER_MIN", None, "number",
            "the fleet's push budget per repository, per minute (0: unlimited)",
            shown="6 on GitHub, else unlimited", zero_ok=True),
    Setting("DISTRIBUTE_READS_PER_S", None, "number",
            "the fleet's read budget (fetch, ls-remote, clone) per repository, per second "
            "(0: unlimited)", shown="15 on GitHub, else unlimited", zero_ok=True),
    Setting("DISTRIBUTE_BUDGET_WINDOW_S", "60", "seconds",
            "pushes are counted over windows this long, reads over a sixth of it "
            "(shorter: time-compressed tests)"),
    Setting("DISTRIBUTE_NET_RETRIES", "8", "count",
            "retries of a git command that could not reach the remote", zero_ok=True, maximum=100),
    Setting("DISTRIBUTE_VERIFY_PUSHES", "auto", "text",
            "read back the refs of a push the host answered ok (auto: unless the remote is a "
            "local path or file://)", choices=("auto", "always", "never")),
    Setting("DISTRIBUTE_SSH_REUSE", "1", "flag",
            "0: a new ssh connection per git command (no ControlMaster)"),
    Setting("DISTRIBUTE_SSH_CONTROL_DIR", None, "text", "ssh ControlMaster sockets",
            shown="/tmp/distribute-ssh-<uid>"),
    Setting("DISTRIBUTE_SLIM_CLONE", "1", "flag",
            "0: new local copies are full clones (not shallow, partial, sparse)"),
    Setting("DISTRIBUTE_POLL_S", "60", "seconds",
            "longest wait of an idle worker between two looks for jobs (--poll)"),
    Setting("DISTRIBUTE_GRACE_S", "30", "seconds",
            "seconds a stopping worker lets its job finish before giving it back "
            "(--grace; 0: at once)",
            zero_ok=True),
    Setting("DISTRIBUTE_CACHE_DIR", "~/.cache/distribute", "text",
            "where commands keep their clone of a remote"),
    Setting("DISTRIBUTE_DEMO_JOB_S", "0.2", "seconds",
            "how long each job of distribute demo pretends to work", zero_ok=True),
    Setting("DISTRIBUTE_MIRROR", None, "text",
            "hf: workers upload each finished job to the Hugging Face repo, and files over "
            "DISTRIBUTE_MAX_FILE_MB at once (a pointer in git)"),
    Setting("DISTRIBUTE_MIRROR_BATCH", "1000", "count", "most jobs per Hub commit"),
    Setting("DISTRIBUTE_HF_COMMITS_PER_HOUR", "100", "number", "fleet-wide Hub commit budget",
            maximum=360_000),
    Setting("DISTRIBUTE_HF_BATCH_FILES", "50", "count",
            "live mirror: commit once this many files are pending"),
    Setting("DISTRIBUTE_HF_BATCH_S", "300", "seconds",
            "... or once a pending job has waited this long", zero_ok=True),
    Setting("DISTRIBUTE_HF_MAX_WAIT_S", "600", "seconds",
            "longest wait for a Hub Retry-After or a commit slot", zero_ok=True),
    Setting("DISTRIBUTE_HF_PACK", "0", "count",
            "N > 0: a new Hub repository packs N jobs per tar shard", zero_ok=True),
    Setting("DISTRIBUTE_HF_RETRIES", "3", "count", "retries of a failed Hub request", zero_ok=True),
    Setting("DISTRIBUTE_HF_TIMEOUT_S", "30", "number", "seconds before a Hub request times out",
            minimum=0.05, zero_ok=True),
    Setting("DISTRIBUTE_HF_BACKOFF_S", "1", "seconds", "first pause between Hub retries",
            zero_ok=True),
    Setting("DISTRIBUTE_HF_PAUSE_S", "60", "seconds",
            "seconds live mirroring pauses after the Hub was unreachable", zero_ok=True),
    Setting("HF_TOKEN", None, "secret", "Hugging Face token (always shown as ***)"),
    Setting("HF_REPO_ID", None, "text", "the Hugging Face repository results are mirrored to"),
    Setting("HF_REPO_TYPE", "dataset", "text", "its type: dataset, model or space"),
    Setting("HF_ENDPOINT", None, "text", "the Hub's base URL (the client's own setting)"),
    Setting("DISTRIBUTE_SELF_DESTRUCT", "0", "flag",
            "1: an idle worker on a Vast.ai node destroys its instance"),
    Setting("VAST_API_KEY", None, "secret", "Vast.ai API key"),
    Setting("VAST_API_URL", "https://console.vast.ai", "text", "Vast.ai API base URL"),
    Setting("VAST_NODE_API_KEY", None, "secret", "an account key handed to self-destructing nodes "
            "(a risk; default: none, nodes use their own CONTAINER_API_KEY)"),
    Setting("VAST_RETRY_TOTAL", "5", "count",
            "retries of one Vast.ai request after 429, 5xx or a broken connection", zero_ok=True),
    Setting("VAST_RETRY_BACKOFF", "0.5", "number",
            "Vast.ai back-off factor: waits of 1x, 2x, 4x... that many seconds", zero_ok=True),
    Setting("VAST_RETRY_BACKOFF_MAX", "30", "number",
            "longest single wait between Vast.ai retries", zero_ok=True),
    Setting("VAST_TIMEOUT_S", "30", "seconds", "connect and read timeout of one Vast.ai request"),
    Setting("DISTRIBUTE_VAST_NODES", "vast-nodes.json", "text",
            "node list file of rent / nodes / terminate"),
)
_BY_NAME = {row.name: row for row in SETTINGS}


def setting_row(name: str) -> Setting:
    """The row of :data:`SETTINGS` named ``name`` (:class:`KeyError` if there is none)."""
    return _BY_NAME[name]


def table_default(name: str) -> str:
    """Setting ``name``'s default as written in :data:`SETTINGS`, without reading the environment
    (:class:`TypeError` if it has none)."""
    default = _BY_NAME[name].default
    if default is None:
        raise TypeError(f"{name} has no default in the table")
    return default


def _typed_row(name: str, *kinds: str) -> Setting:
    row = _BY_NAME[name]
    if row.kind not in kinds:
        raise TypeError(f"{name} is a {row.kind} setting, not {' or '.join(kinds)}")
    return row


def _number_of(row: Setting, given: Union[float, str, None], fallback: Optional[float],
               integer: bool = False) -> float:
    default = float(row.default) if row.default is not None else fallback
    if default is None:
        raise TypeError(f"{row.name} has no default in the table: pass a fallback")
    return number(row.name, default, given, minimum=row.minimum, zero_ok=row.zero_ok,
                  maximum=row.maximum, integer=integer)


def seconds_setting(name: str, given: Union[float, str, None] = None, *,
                    fallback: Optional[float] = None) -> float:
    """The duration setting ``name``: ``given`` if not ``None``, else the environment or ``.env``,
    else the table's default (``fallback`` for a default computed at run time); bounds from the
    table. A malformed value is a :class:`SettingError` naming ``name``."""
    return _number_of(_typed_row(name, "seconds"), given, fallback)


def heartbeat_seconds(job_lease_s: float, given: Union[float, str, None] = None) -> float:
    """``DISTRIBUTE_HEARTBEAT_S`` (``given`` wins), else ``job_lease_s`` divided by
    :data:`HEARTBEATS_PER_JOB_LEASE`."""
    return seconds_setting("DISTRIBUTE_HEARTBEAT_S", given,
                           fallback=job_lease_s / HEARTBEATS_PER_JOB_LEASE)


def number_setting(name: str, given: Union[float, str, None] = None, *,
                   fallback: Optional[float] = None) -> float:
    """The number setting ``name``, read like :func:`seconds_setting`."""
    return _number_of(_typed_row(name, "number"), given, fallback)


def count_setting(name: str, given: Union[int, str, None] = None) -> int:
    """The whole-number setting ``name``, read like :func:`seconds_setting`."""
    return int(_number_of(_typed_row(name, "count"), given, None, integer=True))


def flag_setting(name: str, given: Union[bool, str, None] = None) -> bool:
    """The on/off setting ``name`` by :func:`flag`'s rule, the default from the table."""
    row = _typed_row(name, "flag")
    return flag(name, (row.default or "0").lower() in _ON, given)


def text_setting(name: str, given: Optional[str] = None) -> Optional[str]:
    """The text setting ``name``: ``given`` unless empty, else the environment or ``.env``, else
    the table's default (``None`` when it has none)."""
    row = _typed_row(name, "text", "secret")
    return given or get_env(name, row.default)


def choice_setting(name: str, given: Optional[str] = None) -> str:
    """The text setting ``name`` that must be one of its row's ``choices`` (any case), read like
    :func:`text_setting`; anything else is a :class:`SettingError` naming ``name``."""
    row = _typed_row(name, "text")
    value = (text_setting(name, given) or "").strip().lower()
    if value not in row.choices:
        raise SettingError(f"{name} must be one of {'/'.join(row.choices)}, not "
                           f"{text_setting(name, given)!r}")
    return value


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
