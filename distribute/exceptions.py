"""Exceptions raised by git-distribute.  Every message is safe to show: no secrets."""
from __future__ import annotations


class DistributeError(Exception):
    """Base class of every error this package raises on purpose."""


class SettingError(DistributeError):
    """A setting has a value that is not allowed (the message names the variable)."""


class RemoteError(DistributeError):
    """A git command against the remote failed (after retries, where retrying made sense)."""


class NotARemoteError(RemoteError):
    """The URL does not lead to a git repository."""


class HostUnsupportedError(RemoteError):
    """The host refuses something the protocol needs (atomic pushes, custom refs, a file's size):
    retrying cannot help; the message says what and what to do."""


class FileTooLargeError(DistributeError):
    """A job's file is over the size limit (``DISTRIBUTE_MAX_FILE_MB``, or the host's own): the
    job cannot land and is failed; the message names the file, its size and the limit."""


class NotInitializedError(DistributeError):
    """The remote exists but has no ledger files on master."""


class LocalCopyError(DistributeError):
    """The local copy is in use by another process or belongs to another remote."""


class WorkerNameError(DistributeError):
    """The worker name is invalid or already used by a live worker."""


class InvalidJobError(DistributeError):
    """A job string cannot be stored in the ledger (e.g. it contains a newline)."""


class LockLostError(DistributeError):
    """The remote lock was broken while we held it; our change was fenced off and discarded."""


class JobStateError(DistributeError):
    """The call does not fit the worker's state (e.g. finish_job without a running job)."""


class MergeConflictError(DistributeError):
    """Merging the job branch into master conflicted; master is untouched, the branch kept."""

    def __init__(self, job: str, paths: list[str]) -> None:
        self.job = job
        self.paths = paths
        super().__init__(
            f"job {job!r} could not be merged into master: conflicting files {', '.join(paths)}; "
            "master is unchanged and the job branch is kept"
        )


class MasterRewrittenError(DistributeError):
    """``master`` on the remote was replaced by a history that does not contain ours (a
    force-push): nothing was written, and nothing will be until a person looks."""

    def __init__(self, ours: str, theirs: str) -> None:
        self.ours = ours
        self.theirs = theirs
        super().__init__(
            f"master on the remote was rewritten outside the lock: it was {ours[:12]} and is now "
            f"{theirs[:12]}, which does not contain it (a force-push?); nothing was written. "
            "If the rewrite was meant, run the worker again; otherwise push the old master back")


class RefRejectedError(DistributeError):
    """The remote refused a ref of our atomic push (e.g. a server hook, or a branch that already
    exists); nothing was written."""

    def __init__(self, refused: dict[str, str]) -> None:
        self.refused = refused
        super().__init__("the remote refused our update: " + "; ".join(
            f"{ref} {why}" for ref, why in sorted(refused.items())) + "; nothing was written")
