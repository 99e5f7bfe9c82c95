"""Where results go and how hard to try: :class:`HubSettings`, read by :func:`settings`.

Every number goes through :mod:`distribute.settings` (a malformed value is a
:class:`~distribute.settings.SettingError` naming the variable); the README's "Hugging Face
mirror" section has the table.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

from huggingface_hub import HfApi

from ..settings import count, get_env, number, seconds
from ..redact import redact
from ..version import __version__
from .errors import HubError

__all__ = ["HubSettings", "settings", "check_settings", "REPO_TYPES", "DEFAULT_BATCH"]

log = logging.getLogger(__name__)

REPO_TYPES = ("dataset", "model", "space")
#: Most jobs per Hub commit unless ``DISTRIBUTE_MIRROR_BATCH`` says otherwise.
DEFAULT_BATCH = 1000


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
    #: The fleet-wide budget of Hub commits: at most one commit per ``3600 / commits_per_hour`` s.
    commits_per_hour: float = 100.0
    #: Live mirroring commits once this many files are pending...
    batch_files: int = 50
    #: ... or once the oldest pending job has waited this long, whichever comes first.
    batch_s: float = 300.0
    #: The longest a single wait for the Hub may last (``Retry-After``, the next commit slot).
    max_wait_s: float = 600.0
    #: Most jobs per Hub commit (live and catch-up; ``DISTRIBUTE_MIRROR_BATCH``).
    commit_jobs: int = 1000
    #: Jobs per tar shard in a new repository (0: one folder per job).
    pack: int = 0

    @property
    def interval_s(self) -> float:
        """The least time between two Hub commits of the fleet (``3600 / commits_per_hour``)."""
        return 3600.0 / self.commits_per_hour

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
    def host(self) -> str:
        """The Hub's base URL: ``HF_ENDPOINT``, else the client's default."""
        from huggingface_hub import constants

        return self.endpoint or constants.ENDPOINT

    @property
    def where(self) -> str:
        """``<type> <repo> on <host>``, for messages."""
        return f"{self.repo_type} {self.repo_id} on {self.host}"

    def api(self) -> HfApi:
        """A client for these settings (token, endpoint, this library's name and version)."""
        return HfApi(endpoint=self.endpoint, token=self.token, library_name="git-distribute",
                     library_version=__version__)


def settings() -> HubSettings:
    """Read the settings now (environment, then ``.env``): ``HF_REPO_ID`` (required), ``HF_REPO_TYPE``
    (dataset), ``HF_TOKEN``, ``HF_ENDPOINT`` (read here, so ``.env`` works: the client reads it only
    at import), ``DISTRIBUTE_HF_RETRIES`` (3), ``DISTRIBUTE_HF_TIMEOUT_S`` (30),
    ``DISTRIBUTE_HF_BACKOFF_S`` (1), ``DISTRIBUTE_HF_PAUSE_S`` (60), ``DISTRIBUTE_HF_COMMITS_PER_HOUR``
    (100), ``DISTRIBUTE_HF_BATCH_FILES`` (50), ``DISTRIBUTE_HF_BATCH_S`` (300),
    ``DISTRIBUTE_HF_MAX_WAIT_S`` (600), ``DISTRIBUTE_MIRROR_BATCH`` (1000), ``DISTRIBUTE_HF_PACK``
    (0). Raise :class:`HubError` (or :class:`~distribute.settings.SettingError` for a malformed
    number) if unusable."""
    repo_id = get_env("HF_REPO_ID")
    if not repo_id:
        raise HubError("no Hugging Face repository configured: set HF_REPO_ID=namespace/name "
                       "(in the environment or a .env file)")
    repo_type = get_env("HF_REPO_TYPE", "dataset") or "dataset"
    if repo_type not in REPO_TYPES:
        raise HubError(f"HF_REPO_TYPE must be one of {', '.join(REPO_TYPES)}, not {repo_type!r}")
    endpoint = get_env("HF_ENDPOINT")
    return HubSettings(repo_id=repo_id, repo_type=repo_type, token=get_env("HF_TOKEN"),
                       endpoint=endpoint.rstrip("/") if endpoint else None,
                       retries=count("DISTRIBUTE_HF_RETRIES", 3),
                       timeout_s=number("DISTRIBUTE_HF_TIMEOUT_S", 30.0, minimum=0.05,
                                        zero_ok=True),
                       backoff_s=seconds("DISTRIBUTE_HF_BACKOFF_S", 1.0, zero_ok=True),
                       pause_s=seconds("DISTRIBUTE_HF_PAUSE_S", 60.0, zero_ok=True),
                       commits_per_hour=number("DISTRIBUTE_HF_COMMITS_PER_HOUR", 100.0,
                                               maximum=360_000.0),
                       batch_files=count("DISTRIBUTE_HF_BATCH_FILES", 50, zero_ok=False),
                       batch_s=seconds("DISTRIBUTE_HF_BATCH_S", 300.0, zero_ok=True),
                       max_wait_s=seconds("DISTRIBUTE_HF_MAX_WAIT_S", 600.0, zero_ok=True),
                       commit_jobs=count("DISTRIBUTE_MIRROR_BATCH", DEFAULT_BATCH, zero_ok=False),
                       pack=count("DISTRIBUTE_HF_PACK", 0))


def check_settings() -> HubSettings:
    """:func:`settings`, for a worker that wants to fail at start-up rather than at the first job."""
    return settings()
