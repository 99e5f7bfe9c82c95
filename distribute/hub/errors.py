"""The errors of the Hugging Face Hub side: one sentence each, never containing the token."""
from __future__ import annotations

import logging

from ..exceptions import DistributeError

__all__ = ["HubError", "HubAuthError", "HubUnavailableError"]

log = logging.getLogger(__name__)


class HubError(DistributeError):
    """A Hugging Face Hub operation failed; the message is one sentence and contains no token."""


class HubAuthError(HubError):
    """The Hub refused the token (HTTP 401 or 403)."""


class HubUnavailableError(HubError):
    """The Hub could not be reached or kept failing (network, timeout, 429, 5xx) after the retries."""
