"""A job's branch without the index: committing the job's directory and merging it into master.

A job works in a directory of its own beside the checkout (``worker.job_dir``); staging it in the
copy's index at its place on master (``updates/<ab>/<cd>/<slug>/``, outside the sparse checkout)
would expand that index to every path of the repository. Instead its tree is built in a temporary
index and spliced into the branch's tree (:func:`distribute.repo.trees.splice`): the cost does not
grow with the number of jobs on master. A branch that changed anything outside its directory is
merged by ``git merge`` as before.
"""
from __future__ import annotations

from typing import Optional

from .exceptions import MergeConflictError
from .redact import redact
from .repo import Clone
from .repo.trees import splice, tree_of_directory


def commit_job_dir(clone: Clone, branch: str, path: str, directory: str, message: str) -> bool:
    """Commit the job's working ``directory`` (anywhere on disk) as ``path`` of the tree on
    ``branch`` (a local branch); ``False`` if nothing changed. Files the job changed in the
    checkout itself (rare: a job that writes beside its directory) are staged through the index
    and committed too."""
    ref = f"refs/heads/{branch}"
    tip = clone.resolve(ref)
    assert tip is not None
    base = f"{tip}^{{tree}}"
    # (the index still holds the tree the job was claimed on: entries under ``path`` differ)
    if any(not changed.startswith(path + "/") for changed in clone.uncommitted_paths()):
        clone.stage_all()
        base = clone.write_tree()
    tree = splice(clone, base, path, tree_of_directory(clone, directory))
    if tree == clone.resolve(f"{tip}^{{tree}}"):
        return False
    commit = clone.commit_tree(tree, message, [tip])
    clone.update_ref(ref, commit, tip)
    return True


def merge_job(clone: Clone, job: str, path: str, base: Optional[str], branch: str) -> None:
    """Merge ``branch`` into the checked-out master (``--no-ff``, not yet committed: the caller
    commits with ``--amend`` semantics, see :func:`merged_fast`). ``base`` is the commit the job
    was claimed on. Raises :class:`MergeConflictError` on a conflict (master untouched)."""
    tip = clone.resolve(f"refs/heads/{branch}")
    assert tip is not None
    if (base is not None and changed_only(clone, base, tip, path)
            and clone.object_at("HEAD", path) == clone.object_at(base, path)):
        take_directory(clone, path, tip)
        return
    err = clone.merge_no_commit(f"refs/heads/{branch}")
    if err is not None:
        conflicts = clone.conflicted_paths()
        clone.abort_merge()
        raise MergeConflictError(job, conflicts or [redact(err.strip())[:200]])


def merged_fast(clone: Clone) -> bool:
    """Whether the merge just made is a commit already (made by :func:`merge_job`'s fast path, so
    the finish is committed with ``--amend``) rather than a ``git merge`` waiting for its commit."""
    return not (clone.path / ".git" / "MERGE_HEAD").exists()


def take_directory(clone: Clone, path: str, tip: str) -> None:
    """Merge ``tip`` into the checked-out master by taking its directory ``path`` (right when the
    branch changed nothing else, and master's ``path`` is still what the branch started from):
    the merge commit is checked out, to be amended with the ledger edit. Only the trees on
    ``path`` are read (of ``tip``: one small fetch in a slim copy)."""
    tree = splice(clone, "HEAD", path, clone.object_at(tip, path))
    merge = clone.commit_tree(tree, "merge", ["HEAD", tip])
    clone.checkout_detached(merge)


def changed_only(clone: Clone, base: str, tip: str, path: str) -> bool:
    """Whether the branch changed nothing but ``path`` from ``base`` to ``tip``."""
    return all(p.startswith(path + "/") for p in clone.changed_paths(base, tip))
