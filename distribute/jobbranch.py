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

from .batch import Finished
from .bigfiles import LargeFiles, oversized, resolve_pointers, set_aside
from .exceptions import FileTooLargeError, MergeConflictError
from .protocol import job_path
from .redact import redact
from .repo import Clone, RefUpdate
from .repo.refusals import HOST_REFUSED_SIZE, host_limit_mb
from .repo.trees import splice, tree_of_directory
from .transaction import Transaction

if TYPE_CHECKING:  # pragma: no cover
    from .worker import Worker

log = logging.getLogger(__name__)


def commit_job_dir(clone: Clone, branch: str, path: str, directory: str, message: str,
                   job: str = "", files: Optional[LargeFiles] = None,
                   outside: bool = True) -> bool:
    """Commit the job's working ``directory`` (anywhere on disk) as ``path`` of the tree on
    ``branch`` (a local branch); ``False`` if nothing changed. Files the job changed in the
    checkout itself (rare: a job that writes beside its directory) are staged through the index
    and committed too (unless not ``outside``). A file over the size limit (``files``; default:
    ``DISTRIBUTE_MAX_FILE_MB``) goes to ``files.store`` with a pointer committed in its place
    (:func:`~distribute.bigfiles.set_aside`), or raises :class:`FileTooLargeError`."""
    ref = f"refs/heads/{branch}"
    tip = clone.resolve(ref)
    assert tip is not None
    files = files or LargeFiles(clone.remote_url())
    leave_out = set_aside(files.store, job, directory, files.limit())
    base = f"{tip}^{{tree}}"
    # (the index still holds the tree the job was claimed on: entries under ``path`` differ)
    if outside and any(not changed.startswith(path + "/")
                       for changed in clone.uncommitted_paths()):
        clone.stage_all()
        base = clone.write_tree()
    tree = splice(clone, base, path, tree_of_directory(clone, directory, leave_out))
    if tree == clone.resolve(f"{tip}^{{tree}}"):
        return False
    commit = clone.commit_tree(tree, message, [tip])
    clone.update_ref(ref, commit, tip)
    return True


def drop_oversized(worker: "Worker", reason: str = "") -> list[str]:
    """Before failing the running job for ``reason``: delete the files of its directory over the
    limit (the host's, when ``reason`` is the host's refusal naming one, else
    ``DISTRIBUTE_MAX_FILE_MB``), so that its branch keeps the rest; after the host's refusal, the
    branch's commits the host never took are dropped too (failing commits the directory again).
    Returns the deleted files' one-line descriptions."""
    limit = worker.large_files.limit()
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


def push_checkpoint(worker: "Worker", message: str) -> bool:
    """Push the running job's branch just committed (with its heartbeat); after the host's size
    refusal, once more with the files over the host's limit set aside (:func:`take_refused`).
    ``False`` when the branch was changed by someone else."""
    try:
        return worker._push_branch(worker._heartbeat.update())  # noqa: SLF001
    except FileTooLargeError as exc:
        if not take_refused(worker, str(exc)):
            raise
    worker._commit_job(message)  # noqa: SLF001 - the job's own state
    return worker._push_branch(worker._heartbeat.update())  # noqa: SLF001


def commit_kept(worker: "Worker", message: str) -> bool:
    """Commit the running job's directory on its branch before giving it back; files over the
    limit that cannot be set aside (no store, or the store failed) are deleted and left out
    rather than keeping the job from going back."""
    try:
        return worker._commit_job(message)  # noqa: SLF001 - the job's own state
    except FileTooLargeError as exc:
        log.warning("%s: %s; giving the job back without them", worker.name, exc)
        drop_oversized(worker)
        return worker._commit_job(message)  # noqa: SLF001


def take_refused(worker: "Worker", refusal: str) -> bool:
    """After the host's size refusal ``refusal`` of a push: with a store for big files
    (:class:`~distribute.bigfiles.LargeFiles`), take the host's limit from now on and put the
    running job's branch back where the remote has it, the jobs of the batch finished here
    committed again from their tips with their files over that limit set aside; ``True`` then
    (commit the running job's directory and push again). ``False``: no store, or nothing to gain
    (the job fails as it would without a store)."""
    if not worker.large_files.learn(refusal):
        return False
    for done in worker._finished:  # noqa: SLF001 - the worker's own batch
        if done.reason is None:
            try:
                recommit_finished(worker, done)
            except FileTooLargeError as exc:  # (the store failed) that job fails, saying why
                done.reason, done.servable = " ".join(str(exc).split()), False
    pushed = worker._branch_sha or worker._claim_head  # noqa: SLF001 - the job's own state
    if worker.working_branch and pushed:
        worker.clone.update_ref(f"refs/heads/{worker.working_branch}", pushed)
    return True


def recommit_finished(worker: "Worker", done: Finished) -> None:
    """Commit a job of the batch finished here (not closed yet) again on top of what its branch
    has on the remote, from the files of its local tip, with its files over the limit set aside
    (the host refused them); ``done.tip`` becomes the new commit. Raises
    :class:`FileTooLargeError` when the store cannot take them (the branch is then back where
    the remote has it)."""
    path = job_path(done.job, worker.workspace.layout)
    branch = f"refs/heads/{done.branch}"
    with tempfile.TemporaryDirectory(prefix="distribute-recommit-") as tmp:
        directory = Path(tmp, "job")
        directory.mkdir()
        _extract(worker.clone, done.tip, path, directory)
        worker.clone.update_ref(branch, done.pushed or done.claim_head)
        commit_job_dir(worker.clone, done.branch, path, str(directory),
                       f"{worker.name} update on job {done.job}", done.job, worker.large_files,
                       outside=False)
    done.tip = worker.clone.resolve(branch) or done.tip


def resolve_checked_out(worker: "Worker", paths: list[str]) -> None:
    """Write the files the pointers under ``paths`` of the checkout stand for beside them (from
    the worker's store for big files), each made ignored by git in this copy."""
    root = Path(worker.path)
    for path in paths:
        resolve_pointers(worker.large_files.store, root / path, lambda target: worker.clone.exclude(
            "/" + _ignore_pattern(target.relative_to(root).as_posix())))


def _ignore_pattern(rel: str) -> str:
    """``rel`` as a gitignore pattern matching that path alone."""
    escaped = re.sub(r"([\\*?\[\]!#])", r"\\\1", rel)
    return escaped[:-1] + "\\ " if escaped.endswith(" ") else escaped


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
                                  Path(worker.job_dir), ledger.resume_tips.get(job, ""),
                                  worker.working_branch or "")
        if found is not None:
            source, ref, tip = found
            log.info("%s resumes job %r (attempt %d) from %s", worker.name, job, attempt, source)
            resolve_pointers(worker.large_files.store, Path(worker.job_dir))
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
                      kept: str = "", own: str = "") -> Optional[tuple[str, str, str]]:
    """Write the files of ``path`` on the remote's newest ``branch`` (or a renamed twin,
    ``<branch>-<6 hex>``) into ``directory``; when there is no such branch, those of the commit
    ``kept`` (a failed attempt's kept tip, in master's history: :func:`keep_failed`). Returns
    ``(what was read, its ref, its commit)`` (for a kept tip: ``<branch> (kept <sha>)``, no
    ref), or ``None`` when there was none or it holds no files there (its attempt never
    checkpointed). ``own``: the new attempt's branch, never read when it is a twin (renamed at
    the claim, which made it: it may be the newest); one of the same name as ``branch`` (a claim
    served to us: created by our first push) is not on the remote yet."""
    twin = re.compile(re.escape(f"refs/heads/{branch}") + r"(-[0-9a-f]{6})?$")
    skip = f"refs/heads/{own}" if own and own != branch else ""
    found = {ref: sha for ref, sha in clone.ls_remote(f"refs/heads/{branch}*").items()
             if twin.match(ref) and ref != skip}
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
    _extract(clone, tip, path, directory)
    return ref[len("refs/heads/"):], ref if " " not in ref else "", tip


def _extract(clone: Clone, tip: str, path: str, directory: Path) -> None:
    """Write the files of ``path`` in commit ``tip`` (its objects present) into ``directory``."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "checkpoint.tar")
        clone.archive_tar(tip, [path + "/"], archive)
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.name.startswith(path + "/") and (member.isfile() or member.issym()):
                    _write_member(tar, member, directory / member.name[len(path) + 1:])


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
