"""Where results go and how hard to try: :class:`HubSettings`, read by :func:`settings`.

Every setting is a row of :data:`distribute.settings.SETTINGS`, which holds its default and its
bounds (a malformed value is a :class:`~distribute.settings.SettingError` naming the variable);
the fields' defaults below are that table's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

from huggingface_hub import HfApi

from ..redact import redact
from ..settings import count_setting, number_setting, seconds_setting, table_default, text_setting
from ..version import __version__
from .errors import HubError

__all__ = ["HubSettings", "settings", "check_settings", "REPO_TYPES", "DEFAULT_BATCH"]

log = logging.getLogger(__name__)

REPO_TYPES = ("dataset", "model", "space")
#: Most jobs per Hub commit unless ``DISTRIBUTE_MIRROR_BATCH`` says otherwise.
DEFAULT_BATCH = int(table_default("DISTRIBUTE_MIRROR_BATCH"))


@dataclass(frozen=True)
class HubSettings:
    """Where results go and how hard to try; see :func:`settings`."""

    repo_id: str
    repo_type: str = table_default("HF_REPO_TYPE")
    token: Optional[str] = field(default=None, repr=False)  # never printed
    endpoint: Optional[str] = None
    retries: int = int(table_default("DISTRIBUTE_HF_RETRIES"))
    timeout_s: float = float(table_default("DISTRIBUTE_HF_TIMEOUT_S"))
    backoff_s: float = float(table_default("DISTRIBUTE_HF_BACKOFF_S"))
    pause_s: float = float(table_default("DISTRIBUTE_HF_PAUSE_S"))
    #: The fleet-wide budget of Hub commits: at most one commit per ``3600 / commits_per_hour`` s.
    commits_per_hour: float = float(table_default("DISTRIBUTE_HF_COMMITS_PER_HOUR"))
    #: Live mirroring commits once this many files are pending...
    batch_files: int = int(table_default("DISTRIBUTE_HF_BATCH_FILES"))
    #: ... or once the oldest pending job has waited this long, whichever comes first.
    batch_s: float = float(table_default("DISTRIBUTE_HF_BATCH_S"))
    #: The longest a single wait for the Hub may last (``Retry-After``, the next commit slot).
    max_wait_s: float = float(table_default("DISTRIBUTE_HF_MAX_WAIT_S"))
    #: Most jobs per Hub commit (live and catch-up; ``DISTRIBUTE_MIRROR_BATCH``).
    commit_jobs: int = DEFAULT_BATCH
    #: Jobs per tar shard in a new repository (0: one folder per job).
    pack: int = int(table_default("DISTRIBUTE_HF_PACK"))

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
    """Read the settings now (environment, then ``.env``): ``HF_REPO_ID`` (required),
    ``HF_REPO_TYPE``, ``HF_TOKEN``, ``HF_ENDPOINT`` (read here, so ``.env`` works: the client reads
    it only at import), ``DISTRIBUTE_HF_RETRIES``, ``DISTRIBUTE_HF_TIMEOUT_S``,
    ``DISTRIBUTE_HF_BACKOFF_S``, ``DISTRIBUTE_HF_PAUSE_S``, ``DISTRIBUTE_HF_COMMITS_PER_HOUR``,
    ``DISTRIBUTE_HF_BATCH_FILES``, ``DISTRIBUTE_HF_BATCH_S``, ``DISTRIBUTE_HF_MAX_WAIT_S``,
    ``DISTRIBUTE_MIRROR_BATCH`` and ``DISTRIBUTE_HF_PACK`` (defaults and bounds:
    :data:`distribute.settings.SETTINGS`). Raise :class:`HubError` (or
    :class:`~distribute.settings.SettingError` for a malformed number) if unusable."""
    repo_id = text_setting("HF_REPO_ID")
    if not repo_id:
        raise HubError("no Hugging Face repository configured: set HF_REPO_ID=namespace/name "
                       "(in the environment or a .env file)")
    repo_type = text_setting("HF_REPO_TYPE") or ""
    if repo_type not in REPO_TYPES:
        raise HubError(f"HF_REPO_TYPE must be one of {', '.join(REPO_TYPES)}, not {repo_type!r}")
    endpoint = text_setting("HF_ENDPOINT")
    return HubSettings(repo_id=repo_id, repo_type=repo_type, token=text_setting("HF_TOKEN"),
                       endpoint=endpoint.rstrip("/") if endpoint else None,
                       retries=count_setting("DISTRIBUTE_HF_RETRIES"),
                       timeout_s=number_setting("DISTRIBUTE_HF_TIMEOUT_S"),
                       backoff_s=seconds_setting("DISTRIBUTE_HF_BACKOFF_S"),
                       pause_s=seconds_setting("DISTRIBUTE_HF_PAUSE_S"),
                       commits_per_hour=number_setting("DISTRIBUTE_HF_COMMITS_PER_HOUR"),
                       batch_files=count_setting("DISTRIBUTE_HF_BATCH_FILES"),
                       batch_s=seconds_setting("DISTRIBUTE_HF_BATCH_S"),
                       max_wait_s=seconds_setting("DISTRIBUTE_HF_MAX_WAIT_S"),
                       commit_jobs=count_setting("DISTRIBUTE_MIRROR_BATCH"),
                       pack=count_setting("DISTRIBUTE_HF_PACK"))


def check_settings() -> HubSettings:
    """:func:`settings`, for a worker that wants to fail at start-up rather than at the first
    job."""
    return settings()
