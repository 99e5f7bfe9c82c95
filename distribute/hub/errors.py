"""The errors of the Hugging Face Hub side: one sentence each, never containing the token."""
from __future__ import annotations

import logging
from typing import Optional

from ..exceptions import DistributeError

__all__ = ["HubError", "HubAuthError", "HubUnavailableError", "HubQuotaError"]

log = logging.getLogger(__name__)


class HubError(DistributeError):
    """A Hugging Face Hub operation failed; the message is one sentence and contains no token."""


class HubAuthError(HubError):
    """The Hub refused the token (HTTP 401 or 403)."""


class HubUnavailableError(HubError):
    """The Hub could not be reached or kept failing (network, timeout, 429, 5xx) after the
    retries."""


class HubQuotaError(HubUnavailableError):
    """The Hub refused a request for a quota (HTTP 429) and asked for a longer wait than allowed
    (``DISTRIBUTE_HF_MAX_WAIT_S``); ``retry_after`` is the wait it asked for, in seconds (``None``:
    it did not say)."""

    def __init__(self, message: str, retry_after: Optional[float] = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
