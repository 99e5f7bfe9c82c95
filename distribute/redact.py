"""The one function that removes secrets from text before it is logged, raised or printed."""
from __future__ import annotations

import os
import re

from .settings import loaded_dotenv

#: Environment variables whose values are never shown.
SECRET_ENV_VARS = ("HF_TOKEN", "VAST_API_KEY", "HUGGING_FACE_HUB_TOKEN", "GIT_PASSWORD",
                   "VAST_NODE_API_KEY", "CONTAINER_API_KEY", "DISTRIBUTE_GIT_TOKEN",
                   "DISTRIBUTE_SSH_KEY", "DISTRIBUTE_SSH_KEY_B64")

_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_BEARER = re.compile(r"(?i)(bearer\s+|token[=:]\s*|api_key=)[^\s&'\"]+")
_MASK = "***"
_registered: set[str] = set()


def register_secret(value: str) -> None:
    """Mask ``value`` from now on too (a secret kept in memory, no longer in the environment)."""
    if value and len(value) >= 4:
        _registered.add(value)


def redact(text: object) -> str:
    """Return ``text`` as a string with URL credentials, bearer tokens and secret env values masked.

    ``https://user:pw@host/x`` becomes ``https://***@host/x``; the values of the variables in
    :data:`SECRET_ENV_VARS` (when set and at least 4 characters long) are replaced wherever they
    occur.
    """
    out = str(text)
    out = _URL_USERINFO.sub(lambda m: m.group("scheme") + _MASK + "@", out)
    out = _BEARER.sub(lambda m: m.group(1) + _MASK, out)
    for value in _secret_values():
        out = out.replace(value, _MASK)
    return out


def _secret_values() -> list[str]:
    """Values of the secret variables, from the environment and from the ``.env`` file."""
    dotenv = loaded_dotenv()
    values = {os.environ.get(name) or dotenv.get(name) or "" for name in SECRET_ENV_VARS}
    values |= _registered
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)
