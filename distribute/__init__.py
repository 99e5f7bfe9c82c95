"""git-distribute: a job framework whose only shared infrastructure is a git remote.

The public API is re-exported here: ``__all__`` lists every name the API reference
(``docs/api.md``) documents as ``distribute.NAME``, and ``tests/test_exported_members.py`` keeps
the two the same; ``docs/architecture.md`` draws the layers behind it.
"""
from .claims import combinable
from .connect import (
    Requeued,
    add_jobs,
    create_from_config,
    init_remote,
    requeue_jobs,
    worker_from_url,
)
from .exceptions import (
    DistributeError,
    FileTooLargeError,
    HostUnsupportedError,
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
from .loop import LoopResult, run_worker_loop
from .next_jobs import (
    queue_jobs_func,
    random_jobs_func,
    stage_jobs_func,
    whetlab_make_next_jobs_func,
)
from .version import __version__
from .worker import Worker

__all__ = [
    # connecting and queueing
    "worker_from_url", "init_remote", "create_from_config", "add_jobs", "requeue_jobs", "Requeued",
    # the worker
    "Worker",
    # next-job functions
    "queue_jobs_func", "random_jobs_func", "whetlab_make_next_jobs_func", "combinable",
    "stage_jobs_func",
    # the worker loop
    "run_worker_loop", "LoopResult",
    # exceptions
    "DistributeError", "SettingError", "RemoteError", "NotARemoteError", "HostUnsupportedError",
    "NotInitializedError", "FileTooLargeError",
    "LocalCopyError", "WorkerNameError", "InvalidJobError", "LockLostError", "JobStateError",
    "MergeConflictError", "MasterRewrittenError", "RefRejectedError",
    # the installed version
    "__version__",
]
