"""git-distribute: a job framework whose only shared infrastructure is a git remote."""
from .dist import init_remote, worker_from_url
from .exceptions import (DistributeError, InvalidJobError, JobStateError, LocalCopyError,
                         LockLostError, MergeConflictError, NotARemoteError, NotInitializedError,
                         RemoteError, WorkerNameError)
from .jobs import queue_jobs_func, random_jobs_func, whetlab_make_next_jobs_func
from .worker import Worker

__version__ = "0.1.0"
__all__ = [
    "Worker", "worker_from_url", "init_remote", "random_jobs_func", "queue_jobs_func",
    "whetlab_make_next_jobs_func", "DistributeError", "InvalidJobError", "JobStateError",
    "LocalCopyError", "LockLostError", "MergeConflictError", "NotARemoteError",
    "NotInitializedError", "RemoteError", "WorkerNameError",
]
