"""git-distribute: a job framework whose only shared infrastructure is a git remote.

The public API is re-exported here; ``docs/architecture.md`` draws the layers behind it.
"""
from .claims import combinable
from .connect import create_from_config, init_remote, worker_from_url
from .exceptions import (
                         DistributeError,
                         InvalidJobError,
                         JobStateError,
                         LocalCopyError,
                         LockLostError,
                         MasterRewrittenError,
                         MergeConflictError,
                         NotARemoteError,
                         NotInitializedError,
                         RefRejectedError,
                         RemoteError,
                         SettingError,
                         WorkerNameError,
)
from .next_jobs import queue_jobs_func, random_jobs_func, whetlab_make_next_jobs_func
from .version import __version__
from .worker import Worker

__all__ = [
    "Worker", "worker_from_url", "init_remote", "create_from_config", "random_jobs_func",
    "queue_jobs_func", "whetlab_make_next_jobs_func", "combinable", "DistributeError",
    "InvalidJobError",
    "JobStateError", "LocalCopyError", "LockLostError", "MasterRewrittenError",
    "MergeConflictError", "NotARemoteError", "NotInitializedError", "RefRejectedError",
    "RemoteError", "SettingError", "WorkerNameError", "__version__",
]
