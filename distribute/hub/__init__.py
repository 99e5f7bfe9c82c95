"""The Hugging Face Hub side of git-distribute: settings, bounded retries, clear errors, file API,
and the mirror of job results (``docs/hub.md`` tells the whole story).

* :mod:`.errors` — :class:`HubError` and its kinds;
* :mod:`.hubsettings` — :class:`HubSettings`, read by :func:`settings` (table in ``docs/hub.md``);
* :mod:`.transport` — the retry and quota policy of Hub calls (:func:`stats`);
* :mod:`.files` — create the repository, upload, delete, list, one-commit uploads;
* :mod:`.layout` — where a job's results go on the Hub (:func:`hub_path_for`), folders or tar
  shards;
* :mod:`.source` — done records in ledger order and the files of done jobs, read from git;
* :mod:`.cursor` — the fleet's mirror state on the remote: commit slots within a budget, the cursor;
* :mod:`.compare` — what is not on the Hub yet: master's files against the repository's listing;
* :mod:`.batch`, :mod:`.pack` — one Hub commit of many jobs; tar shards and their indexes;
* :mod:`.live` — live mirroring in batches (:func:`mirror_after_finish`, :func:`mirror_when_idle`,
  :func:`flush_mirror`);
* :mod:`.mirror` — the catch-up against the Hub's tree (:func:`catch_up`), :func:`mirror_job`;
* :mod:`.status` — how far the Hub lags the ledger (:func:`mirror_status`);
* :mod:`.largefiles` — job files over the git size limit kept on the Hub, pointers in git
  (:func:`keep_large_files`).

Everything public is re-exported here (``from distribute import hub; hub.catch_up(worker)``).
"""
from .cursor import MIRROR_REF, MirrorState, read_state
from .errors import HubAuthError, HubError, HubQuotaError, HubUnavailableError
from .files import (
    RemoteFile,
    commit_files,
    delete_file,
    initialize_dataset,
    list_files,
    preupload_files,
    remote_index,
    upload_directory,
    upload_file,
)
from .hubsettings import DEFAULT_BATCH, REPO_TYPES, HubSettings, check_settings, settings
from .largefiles import HubFileStore, keep_large_files
from .layout import LARGE_DIR, LAYOUT_FILE, HubLayout, hub_path_for
from .live import commit_pending, flush_mirror, mirror_after_finish, mirror_when_idle
from .mirror import MirrorReport, catch_up, mirror_job
from .status import MirrorStatus, locate, mirror_status
from .transport import RETRY_STATUS, stats

__all__ = [
    "HubError", "HubAuthError", "HubUnavailableError", "HubQuotaError", "HubSettings",
    "RemoteFile", "settings", "check_settings", "stats", "initialize_dataset", "upload_file",
    "upload_directory", "delete_file", "list_files", "remote_index", "commit_files",
    "preupload_files", "mirror_job", "mirror_after_finish", "mirror_when_idle", "flush_mirror",
    "commit_pending",
    "catch_up", "MirrorReport", "DEFAULT_BATCH", "REPO_TYPES", "RETRY_STATUS", "HubLayout",
    "LAYOUT_FILE", "hub_path_for", "locate", "MIRROR_REF", "MirrorState", "read_state",
    "MirrorStatus", "mirror_status", "HubFileStore", "keep_large_files", "LARGE_DIR",
]
