"""Settings: keyword arguments win, then the process environment, then a ``.env`` file."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from dotenv import dotenv_values, find_dotenv

from .exceptions import DistributeError

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
