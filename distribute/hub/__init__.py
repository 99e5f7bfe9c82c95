"""The Hugging Face Hub side of git-distribute: settings, bounded retries, clear errors, file API,
and the mirror of job results.

* :mod:`.errors` — :class:`HubError` and its kinds;
* :mod:`.hubsettings` — :class:`HubSettings`, read by :func:`settings` (table in the README);
* :mod:`.transport` — the retry policy of Hub calls (:func:`stats`);
* :mod:`.files` — create the repository, upload, delete, list, one-commit uploads;
* :mod:`.mirror` — ``updates/<slug>/`` of done jobs to ``<slug>/`` on the Hub, live or catching up.

Everything public is re-exported here (``from distribute import hub; hub.catch_up(worker)``).
"""
from .errors import HubAuthError, HubError, HubUnavailableError
from .files import (RemoteFile, commit_files, delete_file, initialize_dataset, list_files,
                    remote_index, upload_directory, upload_file)
from .hubsettings import REPO_TYPES, HubSettings, check_settings, settings
from .mirror import DEFAULT_BATCH, MirrorReport, catch_up, mirror_after_finish, mirror_job
from .transport import RETRY_STATUS, stats

__all__ = [
    "HubError", "HubAuthError", "HubUnavailableError", "HubSettings", "RemoteFile", "settings",
    "check_settings", "stats", "initialize_dataset", "upload_file", "upload_directory",
    "delete_file", "list_files", "remote_index", "commit_files", "mirror_job",
    "mirror_after_finish", "catch_up", "MirrorReport", "DEFAULT_BATCH", "REPO_TYPES",
    "RETRY_STATUS",
]
