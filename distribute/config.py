"""Settings for users of the library: everything of :mod:`distribute.settings` (environment
first, then a ``.env`` file), the masked view of every setting, and a worker built from settings.

The package's own modules read :mod:`distribute.settings`; this module sits at the top so that it
may also offer :func:`create_from_config`.
"""
from __future__ import annotations

from typing import Optional

from .connect import create_from_config
from .redact import redact
from .settings import (SETTINGS, SettingError, count, flag, get_env, loaded_dotenv, number,
                       seconds, setting_source, use_env_file)

__all__ = ["SETTINGS", "SettingError", "count", "create_from_config", "flag", "get_env",
           "get_flag", "get_float", "get_settings", "loaded_dotenv", "number", "seconds",
           "setting_source", "use_env_file"]


def get_float(key: str, default: float, given: Optional[float] = None) -> float:
    """A positive number setting (kept for old callers; :func:`seconds` is the same rule)."""
    return number(key, default, given)


def get_flag(key: str, default: bool) -> bool:
    """An on/off setting (kept for old callers; see :func:`flag`)."""
    return flag(key, default)


def get_settings() -> dict[str, Optional[str]]:
    """The resolved value of every setting in :data:`SETTINGS`, secrets masked.

    Unset settings show their default (``None`` when there is none). URL credentials, tokens and
    the values of secret environment variables are replaced by ``***``, so the result is safe to
    print or log.
    """
    out: dict[str, Optional[str]] = {}
    for key, default, _ in SETTINGS:
        value = get_env(key)
        if value is None and key == "DISTRIBUTE_HEARTBEAT_S":
            value = f"{seconds('DISTRIBUTE_JOB_LEASE_S', 600) / 5:g}"
        if value is None:
            value = default
        out[key] = None if value is None else "***" if key == "HF_TOKEN" else redact(value)
    return out
