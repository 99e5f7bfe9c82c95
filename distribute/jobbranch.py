"""A job's branch without the index: committing the job's directory, merging it into master, and
starting a new attempt from the checkpoint an earlier attempt left on its branch.

A job works in a directory of its own beside the checkout (``worker.job_dir``); staging it in the
copy's index at its place on master (``updates/<ab>/<cd>/<slug>/``, outside the sparse checkout)
would expand that index to every path of the repository. Instead its tree is built in a temporary
index and spliced into the branch's tree (:func:`distribute.repo.trees.splice`): the cost does not
grow with the number of jobs on master. A branch that changed anything outside its directory is
merged by ``git merge`` as before.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .exceptions import FileTooLargeError, MergeConflictError
from .protocol import job_path
from .redact import redact
from .repo import Clone, RefUpdate
from .repo.refusals import HOST_REFUSED_SIZE, host_limit_mb
from .repo.trees import splice, tree_of_directory
from .settings import number_setting
from .transaction import Transaction

if TYPE_CHECKING:  # pragma: no cover
    from .worker import Worker

log = logging.getLogger(__name__)


def commit_job_dir(clone: Clone, branch: str, path: str, directory: str, message: str) -> bool:
    """Commit the job's working ``directory`` (anywhere on disk) as ``path`` of the tree on
    ``branch`` (a local branch); ``False`` if nothing changed. Files the job changed in the
    checkout itself (rare: a job that writes beside its directory) are staged through the index
    and committed too."""
    ref = f"refs/heads/{branch}"
    tip = clone.resolve(ref)
    assert tip is not None
    too_big = oversized(directory, max_file_bytes(clone.remote_url()))
    if too_big:
        raise FileTooLargeError(too_big[0][1])
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


def max_file_bytes(url: Optional[str]) -> Optional[int]:
    """``DISTRIBUTE_MAX_FILE_MB`` in bytes (unset: 50 MB for a GitHub remote ``url``, else no
    limit; 0: no limit)."""
    github = bool(url) and re.search(r"(^|[@/.])github\.com[:/]", url or "") is not None
    mb = number_setting("DISTRIBUTE_MAX_FILE_MB", fallback=50.0 if github else 0.0)
    return int(mb * 1024 * 1024) if mb > 0 else None


def oversized(directory: str, limit: Optional[int]) -> list[tuple[Path, str]]:
    """The files of ``directory`` over ``limit`` bytes, each with one line naming it, its size
    and the limit (none when ``limit`` is ``None``)."""
    if limit is None or not directory or not os.path.isdir(directory):
        return []
    found = []
    for root, _, files in os.walk(directory):
        for name in files:
            path = Path(root, name)
            size = path.lstat().st_size
            if size > limit and not path.is_symlink():
                found.append((path, f"file {path.relative_to(directory)} is {size / 2**20:.2f} "
                              f"MB, over the limit of {limit / 2**20:.2f} MB "
                              "(DISTRIBUTE_MAX_FILE_MB): the job cannot be committed"))
    return sorted(found)


def drop_oversized(worker: "Worker", reason: str = "") -> list[str]:
    """Before failing the running job for ``reason``: delete the files of its directory over the
    limit (the host's, when ``reason`` is the host's refusal naming one, else
    ``DISTRIBUTE_MAX_FILE_MB``), so that its branch keeps the rest; after the host's refusal, the
    branch's commits the host never took are dropped too (failing commits the directory again).
    Returns the deleted files' one-line descriptions."""
    limit = max_file_bytes(worker.clone.remote_url())
    host_mb = host_limit_mb(reason) if HOST_REFUSED_SIZE in reason else None
    if host_mb is not None:
        limit = int(host_mb * 2**20) if limit is None else min(limit, int(host_mb * 2**20))
    found = oversized(worker.job_dir or "", limit)
    for path, _ in found:
        path.unlink()
    pushed = worker._branch_sha or worker._claim_head  # noqa: SLF001 - the job's own state
    if HOST_REFUSED_SIZE in reason and worker.working_branch and pushed:
        worker.clone.update_ref(f"refs/heads/{worker.working_branch}", pushed)
    return [line for _, line in found]


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


def keep_failed(txn: Transaction, branch: str, tip: Optional[str], pushed: Optional[str]) -> str:
    """Before a failure's ledger commit in ``txn``: keep the failed attempt's commits in master's
    history instead of on its branch, so that failed jobs leave no branch behind
    (``docs/protocol.md``, "Failed jobs' branches"). A commit with master's tree and the parents
    ``[master, tip]`` is checked out (the ledger edit is amended into it: one commit) and the
    push deletes the branch (lease: ``pushed``, its value on the remote; refused: it stays,
    nothing is lost). Returns the kept tip, or ``""`` when ``tip`` holds nothing master lacks (the
    branch goes all the same) or is not in this copy (the branch stays)."""
    clone = txn.workspace.clone
    if not tip or not clone.has_commit(tip):
        return ""
    kept = "" if clone.is_ancestor(tip, "HEAD") else tip
    if kept:
        tree = clone.resolve("HEAD^{tree}")
        assert tree is not None
        clone.checkout_detached(clone.commit_tree(tree, "keep", ["HEAD", tip]))
    if pushed:
        txn.optional.append(RefUpdate(f"refs/heads/{branch}", None, expect=pushed))
    return kept


def changed_only(clone: Clone, base: str, tip: str, path: str) -> bool:
    """Whether the branch changed nothing but ``path`` from ``base`` to ``tip``."""
    return all(p.startswith(path + "/") for p in clone.changed_paths(base, tip))


def resume_job(worker: "Worker") -> int:
    """After a claim: fill the new job directory from the checkpoint the ledger names for the
    job (``resume.txt``: the branch of the attempt that was given back or requeued, or the kept
    tip of a failed one), commit and
    push it as this attempt's first checkpoint, and return the job's attempt number. An attempt
    that never checkpointed, or a branch that is gone, leaves the directory empty. Trouble here
    is logged, never raised: the job then starts from what could be restored."""
    job = worker.running_job or ""
    ledger = worker.workspace.ledger()
    entry = ledger.running_entry(job)
    attempt = entry.attempt if entry is not None else 1
    recorded = ledger.resume.get(job)
    if not recorded or not worker.job_dir:
        return attempt
    try:
        found = restore_directory(worker.clone, recorded, job_path(job, worker.workspace.layout),
                                  Path(worker.job_dir), ledger.resume_tips.get(job, ""))
        if found is not None:
            source, ref, tip = found
            log.info("%s resumes job %r (attempt %d) from %s", worker.name, job, attempt, source)
            first_checkpoint(worker, f"{worker.name} resumed job {job} from {source}", ref, tip)
    except Exception as exc:  # noqa: BLE001 - the job runs on from what it has
        log.warning("%s could not resume job %r from %s: %s", worker.name, job, recorded,
                    redact(exc))
    return attempt


def first_checkpoint(worker: "Worker", message: str, ref: str, tip: str) -> None:
    """Commit the restored job directory as the attempt's first checkpoint and push it. When it
    came from an earlier attempt's branch ``ref`` (whose tip was ``tip``), that commit has
    ``tip`` as a second parent and the push deletes ``ref`` (lease: ``tip``): the earlier
    attempt's commits live on in this branch's history, and no branch per attempt is left
    behind. Should that deletion be refused, the branch is pushed without it."""
    clone = worker.clone
    _, branch = worker._require_job()  # noqa: SLF001 - the job's own state
    if not worker._commit_job(message):  # noqa: SLF001
        return
    extra: list[RefUpdate] = []
    local = f"refs/heads/{branch}"
    head = clone.resolve(local)
    tree = clone.resolve(f"{head}^{{tree}}")
    if ref and head and tree:
        if not clone.is_ancestor(tip, head):
            merged = clone.commit_tree(tree, message, [*clone.parents_of(head), tip])
            clone.update_ref(local, merged, head)
        if ref != local:
            extra = [RefUpdate(ref, None, expect=tip)]
        elif worker._branch_sha == "":  # noqa: SLF001 - (a claim served for us, not pushed yet)
            worker._branch_sha = tip  # noqa: SLF001 - same name: our push moves it on from there
    beat = worker._heartbeat.update()  # noqa: SLF001
    if worker._push_branch(beat, *extra):  # noqa: SLF001
        return
    if ref == local and worker._branch_sha == tip:  # noqa: SLF001 - it moved: a name of our own
        worker._branch_sha = ""  # noqa: SLF001
    if not (extra or ref == local) or not worker._push_branch(beat):  # noqa: SLF001
        log.warning("%s could not push the resumed checkpoint of branch %s; the next "
                    "checkpoint pushes it", worker.name, branch)


def restore_directory(clone: Clone, branch: str, path: str, directory: Path,
                      kept: str = "") -> Optional[tuple[str, str, str]]:
    """Write the files of ``path`` on the remote's newest ``branch`` (or a renamed twin,
    ``<branch>-<6 hex>``) into ``directory``; when there is no such branch, those of the commit
    ``kept`` (a failed attempt's kept tip, in master's history: :func:`keep_failed`). Returns
    ``(what was read, its ref, its commit)`` (for a kept tip: ``<branch> (kept <sha>)``, no
    ref), or ``None`` when there was none or it holds no files there (its attempt never
    checkpointed)."""
    twin = re.compile(re.escape(f"refs/heads/{branch}") + r"(-[0-9a-f]{6})?$")
    found = {ref: sha for ref, sha in clone.ls_remote(f"refs/heads/{branch}*").items()
             if twin.match(ref)}
    if not found and kept and clone.fetch_commit(kept):
        found = {f"refs/heads/{branch} (kept {kept[:12]})": kept}
    elif not found:
        return None
    else:
        for ref in found:
            clone.fetch_branch(ref)
    ref = max(found, key=lambda r: clone.commit_time(found[r]) or 0.0)
    tip = found[ref]
    if not clone.files_under(tip, [path + "/"]):
        return None
    if clone.is_partial():
        for _ in range(3):  # a fetched tree brings its subtrees: then only files can be missing
            missing = clone.missing_objects(tip, [path + "/"])
            if not missing:
                break
            clone.fetch_objects(missing)
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "checkpoint.tar")
        clone.archive_tar(tip, [path + "/"], archive)
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.name.startswith(path + "/") and (member.isfile() or member.issym()):
                    _write_member(tar, member, directory / member.name[len(path) + 1:])
    return ref[len("refs/heads/"):], ref if " " not in ref else "", tip


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    """Write one file (or symlink) of a ``git archive`` of a job's directory at ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if member.issym():
        os.symlink(member.linkname, target)
        return
    source = tar.extractfile(member)
    assert source is not None
    with source, open(target, "wb") as out:
        shutil.copyfileobj(source, out)
    if member.mode & 0o111:
        target.chmod(0o755)
