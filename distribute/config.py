"""Settings for users of the library: everything of :mod:`distribute.settings` (environment
first, then a ``.env`` file), the masked view of every setting, and a worker built from settings.

The package's own modules read :mod:`distribute.settings`; this module sits at the top so that it
may also offer :func:`create_from_config`.
"""
from __future__ import annotations

from typing import Optional

from .connect import create_from_config
from .redact import redact
from .settings import (
    SETTINGS,
    Setting,
    SettingError,
    count,
    count_setting,
    flag,
    flag_setting,
    get_env,
    heartbeat_seconds,
    loaded_dotenv,
    number,
    number_setting,
    seconds,
    seconds_setting,
    setting_row,
    setting_source,
    text_setting,
    use_env_file,
)

__all__ = ["SETTINGS", "Setting", "SettingError", "count", "count_setting", "create_from_config",
           "flag", "flag_setting", "get_env", "get_settings", "heartbeat_seconds", "loaded_dotenv",
           "number", "number_setting", "seconds", "seconds_setting", "setting_row",
           "setting_source", "text_setting", "use_env_file"]


def get_settings() -> dict[str, Optional[str]]:
    """The resolved value of every setting in :data:`SETTINGS`, secrets masked.

    Unset settings show their default from the table (``None`` when there is none). Secret
    settings, URL credentials, tokens and the values of secret environment variables are replaced
    by ``***``, so the result is safe to print or log.
    """
    out: dict[str, Optional[str]] = {}
    for row in SETTINGS:
        value = get_env(row.name)
        if value is None and row.name == "DISTRIBUTE_HEARTBEAT_S":
            value = f"{heartbeat_seconds(seconds_setting('DISTRIBUTE_JOB_LEASE_S')):g}"
        if value is None:
            value = row.shown_default
        out[row.name] = None if value is None else "***" if row.kind == "secret" else redact(value)
    return out
