"""Keeping a big remote lean: moving results to the sharded layout, pruning refs nobody needs.

* :func:`upgrade_layout` moves every ``updates/<slug>/`` of a remote in the first, flat layout
  to ``updates/<ab>/<cd>/<slug>/`` and rolls the older records of ``done.txt`` into done segments,
  in one commit under the lock (``distribute upgrade``);
* :func:`prune` deletes heartbeat refs of workers without running jobs, wait refs older than the
  lock lease, and the spent branches of jobs that are done or failed (their tips in master's
  history) in few pushes (``distribute prune``); first, :func:`keep_branches` puts the tips of
  those branches that master lacks (failed jobs' branches kept by older versions, attempts that
  never merged) into master's history, so that nothing is lost.
"""
from __future__ import annotations

import functools
import logging
import re
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .archive import next_segment, segments, split_recent
from .exceptions import DistributeError, RemoteError
from .ledger import Ledger, split_lines
from .protocol import (
    DONE_FILE,
    HEARTBEAT_PREFIX,
    LAYOUT_FILE,
    QUEUE,
    SHARDED,
    TRACKING_PREFIX,
    UPDATES_DIR,
    WAIT_PREFIX,
    commit_message,
    heartbeat_ref,
    job_branch,
    job_slug,
    layout_text,
    parse_namespace,
    remote_ref,
    segment_path,
    slug_path,
)
from .repo import RefUpdate
from .repo.bulkdelete import delete_refs, merged_into
from .repo.localcopy import MANY_BRANCHES
from .repo.namespace import branches_of
from .repo.plumbing import IndexEntry
from .repo.trees import add_files, splice
from .transaction import Transaction
from .worker import Worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upgrade:
    """What :func:`upgrade_layout` changed: job directories ``moved`` to the sharded layout
    (``None``: the remote had it already), done records put into ``segments`` new segments
    (``archived`` records in all)."""

    moved: Optional[int]
    segments: int = 0
    archived: int = 0


def upgrade_layout(worker: Worker) -> Optional[Upgrade]:
    """Leave the remote as a fresh remote of its size would be, in one commit under the lock:
    results moved to the sharded layout, and the older records of ``done.txt`` in done segments
    (:func:`~distribute.archive.split_recent`). Returns what changed, or ``None`` if nothing
    needed to. Moving results is refused while jobs run (their branches still use the old
    paths); rolling ``done.txt`` alone is not."""

    def edit(txn: Transaction) -> Optional[Upgrade]:
        flat = txn.workspace.layout < SHARDED
        done_text = worker.clone.show(txn.base, DONE_FILE) or ""
        chunks, recent = split_recent(split_lines(done_text))
        if not flat and not chunks:
            return None
        running = txn.workspace.ledger().running
        if flat and running:
            raise DistributeError(
                f"{len(running)} job(s) are running ({', '.join(e.job for e in running[:5])}); "
                "upgrade when no job runs (stop the workers, or wait for an idle moment)")
        moved, tree = _sharded_tree(worker, txn.base) if flat else (0, txn.base)
        if chunks:
            tree = _rolled_tree(worker, tree, txn.base, chunks, recent)
        what = [f"moved {moved} job directories to the sharded layout "
                f"({UPDATES_DIR}/<ab>/<cd>/<slug>)"] if flat else []
        if chunks:
            what.append(f"put {sum(map(len, chunks))} done records into {len(chunks)} segments")
        commit = worker.clone.commit_tree(tree, commit_message(
            worker.name, QUEUE, f"{worker.name} {' and '.join(what)}"), [txn.base])
        txn.workspace.checkout(commit)
        return Upgrade(moved if flat else None, len(chunks), sum(map(len, chunks)))

    return worker.transact(edit)


def _sharded_tree(worker: Worker, base: str) -> tuple[int, str]:
    """The tree of ``base`` with ``updates/<slug>/...`` moved to the sharded paths, and the layout
    file written, built in a temporary index (the worker's own index is left alone)."""
    clone = worker.clone
    with clone.scratch_index() as index:
        try:
            index.read_tree(base)
        except RemoteError as exc:
            raise DistributeError(f"cannot read master's tree: {exc}") from None
        entries: list[IndexEntry] = []
        slugs: set[str] = set()
        for entry in index.entries(f"{UPDATES_DIR}/"):
            parts = entry.path.split("/")
            if len(parts) < 3:
                continue  # a file directly under updates/: not a job's
            slug = parts[1]
            slugs.add(slug)
            entries.append(IndexEntry("0", "0" * 40, entry.path))  # remove the old path
            entries.append(entry._replace(path=f"{slug_path(slug)}/{'/'.join(parts[2:])}"))
        namespace = parse_namespace(clone.show(base, LAYOUT_FILE))  # (kept as recorded)
        entries.append(IndexEntry("100644", clone.write_blob(layout_text(SHARDED, namespace)),
                                  LAYOUT_FILE))
        try:
            index.update(entries)
        except RemoteError as exc:
            raise DistributeError(f"cannot rearrange the results: {exc}") from None
        return len(slugs), index.write_tree()


def _rolled_tree(worker: Worker, tree: str, base: str, chunks: list[list[str]],
                 recent: list[str]) -> str:
    """``tree`` with ``chunks`` of done records in new segments after those of ``base``, and
    ``recent`` left in ``done.txt`` (trees edited without an index: cheap on any remote)."""
    clone = worker.clone
    seq = next_segment(segments(clone, base))
    folders: dict[str, dict[str, str]] = {}  # (done/, then done/<seq // 1000>/ from the 1 000th)
    for number, chunk in enumerate(chunks, seq):
        folder, _, name = segment_path(number).rpartition("/")
        folders.setdefault(folder, {})[name] = clone.write_blob(
            "".join(line + "\n" for line in chunk))
    for folder, files in folders.items():
        tree = add_files(clone, tree, folder, files)
    return splice(clone, tree, DONE_FILE, clone.write_blob("".join(
        line + "\n" for line in recent)), blob=True)


def prune(worker: Worker, branches: bool = True, batch: int = 5000,
          progress: Optional[Callable[[int, int], None]] = None) -> dict[str, list[str]]:
    """Delete refs nobody needs; returns ``{"heartbeats": [...], "waits": [...], "branches":
    [...], "kept": [...]}`` (the refs deleted; ``kept``: the branches whose tips were first put
    into master's history, :func:`keep_branches`). Deleting a live worker's heartbeat or wait ref
    is harmless: it pushes it again. A job branch goes only when it is spent
    (:func:`spent_branches`), in pushes covering at most ``batch`` refs each
    (:func:`~distribute.repo.bulkdelete.delete_refs`); ``progress(deleted, total)`` follows
    them."""
    listed = worker.clone.ls_remote("refs/heads/*") if branches else {}
    snap = worker.snapshot()  # (after the listing: a branch listed is not a newer attempt's)
    ledger = snap["ledger"]
    refs = {remote_ref(r): sha for r, sha in worker.clone.local_refs(TRACKING_PREFIX).items()}
    busy = {heartbeat_ref(e.worker, e.session) for e in ledger.running}
    now = time.time()
    updates: dict[str, list[RefUpdate]] = {"heartbeats": [], "waits": []}
    for ref, sha in refs.items():
        if ref.startswith(HEARTBEAT_PREFIX) and ref not in busy:
            updates["heartbeats"].append(RefUpdate(ref, None, expect=sha))
        elif ref.startswith(WAIT_PREFIX):
            age = now - (worker.clone.commit_time(sha) or now)
            if age >= worker.lock_lease_s:
                updates["waits"].append(RefUpdate(ref, None, expect=sha))
    deleted: dict[str, list[str]] = {"heartbeats": [], "waits": [], "branches": [], "kept": []}
    for kind, few in updates.items():
        if few and worker.clone.push(few):  # (a few refs: one atomic push)
            deleted[kind] = [u.ref for u in few]
        elif few:
            log.warning("some %s changed while pruning; run prune again", kind)
    if branches:
        master = snap["master"]
        deleted["kept"], master = keep_branches(worker, listed, ledger, master)
        spent = spent_branches(worker, listed, ledger, master)
        if spent:
            log.info("deleting %d spent job branches of %d", len(spent),
                     len(branches_of(listed)) - 1)
            deleted["branches"] = delete_refs(worker.clone, listed, spent, batch,
                                              progress=progress)
    return deleted


_TWIN = re.compile(r"^(.*)-[0-9a-f]{6}$")


def _names(name: str) -> set[str]:
    """``name`` and, when it ends like a renamed twin (``-<6 hex>``), the name it was renamed
    from (a job's own slug may end that way too: both are candidates)."""
    twin = _TWIN.match(name)
    return {name, twin.group(1)} if twin else {name}


def settled_branches(listed: dict[str, str], ledger: Ledger) -> dict[str, str]:
    """The job branches of ``listed`` (``{ref: sha}``, the remote's ``refs/heads/*``) whose job
    is over: ``<owner>/<slug>[@<attempt>][-<6 hex>]`` of a job that is done (in ``done.txt`` or
    a segment) or failed, and neither queued, running nor waiting; a branch ``resume.txt``
    names (or a renamed twin of it) is never one, whatever its job."""
    active = set(ledger.queued) | {e.job for e in ledger.running} | set(ledger.parents)
    over = {job_slug(e.job) for e in [*ledger.done, *ledger.failed] if e.job not in active}
    resumed = set(ledger.resume.values())
    found = {}
    for ref, sha in branches_of(listed).items():
        name = ref[len("refs/heads/"):]
        owner, _, rest = name.partition("/")
        if not owner or _names(name) & resumed:
            continue
        if {rest_name.partition("@")[0] for rest_name in _names(rest)} & over:
            found[ref] = sha
    return found


def spent_branches(worker: Worker, listed: dict[str, str], ledger: Ledger,
                   master: str) -> set[str]:
    """The job branches of ``listed`` (``{ref: sha}``, the remote's ``refs/heads/*``) that are
    spent: their job is over (:func:`settled_branches`: done or failed, and not queued, running,
    waiting, nor resuming from them) and their tip is in ``master``'s history, so that deleting
    them loses no commit. Any other branch stays: a running job's, one holding commits master
    lacks (until :func:`keep_branches`), one that is not a job's."""
    candidates = settled_branches(listed, ledger)
    merged = merged_into(worker.clone, master, set(candidates.values()))
    return {ref for ref, sha in candidates.items() if sha in merged}


#: Branch tips one commit of :func:`keep_branches` puts into master's history (one lock hold
#: each): its parents besides master.
KEEP_BATCH = 100


def keep_branches(worker: Worker, listed: dict[str, str], ledger: Ledger, master: str,
                  batch: int = KEEP_BATCH) -> tuple[list[str], str]:
    """Put the tips of the settled job branches (:func:`settled_branches`) that ``master``'s
    history lacks into it: one commit per ``batch`` tips, under the lock, with master's tree,
    the tips as further parents and, in ``failed.txt``, each failed attempt's kept tip recorded
    where its record names that branch (so that ``requeue --resume`` finds it once the branch
    is gone); ``git log --first-parent`` shows one commit per batch. Those branches are then
    spent (:func:`spent_branches`). Returns the refs kept and the master after the last
    commit."""
    candidates = settled_branches(listed, ledger)
    merged = merged_into(worker.clone, master, set(candidates.values()))
    todo = sorted(ref for ref, sha in candidates.items() if sha not in merged)
    kept: list[str] = []
    for start in range(0, len(todo), batch):
        chunk = {ref: candidates[ref] for ref in todo[start:start + batch]}
        worker.clone.fetch(*chunk)  # (their commits, before the lock: with this copy's filter)
        master = worker.transact(functools.partial(_keep, worker, chunk=chunk)) or master
        kept += chunk
        log.info("kept %d of %d branches in master's history", len(kept), len(todo))
    return kept, master


def _keep(worker: Worker, txn: Transaction, chunk: dict[str, str]) -> Optional[str]:
    """One commit of :func:`keep_branches` in ``txn``; master's new head, ``None`` if every tip
    was in its history already."""
    clone = txn.workspace.clone
    tips = sorted({sha for sha in chunk.values() if not clone.is_ancestor(sha, txn.base)})
    if not tips:
        return None
    tree = clone.resolve(f"{txn.base}^{{tree}}")
    assert tree is not None
    clone.checkout_detached(clone.commit_tree(tree, "keep", [txn.base, *tips]))
    ledger = txn.workspace.ledger()
    for entry in ledger.failed:
        branch = f"refs/heads/{job_branch(entry.worker, entry.job, entry.attempt)}"
        found = [ref for ref in chunk if branch in _names(ref)]
        if found and not entry.tip:
            entry.tip = max((chunk[ref] for ref in found), key=lambda sha: (
                clone.commit_time(sha) or 0.0))
    ledger.write(txn.workspace.root)
    txn.commit(commit_message(worker.name, QUEUE, f"{worker.name} kept {len(tips)} job "
                              f"branches in master's history"), amend=True)
    return txn.head()


#: Branches ``prune`` deletes per second, measured (``benchmarks/prune.py``, 20 000 branches, a
#: 2-core machine): over smart HTTP (batches posted) and over the other transports (pattern
#: pushes): what its time estimate assumes.
PRUNE_RATE = {"http": 5000.0, "git": 600.0}


def prune_hint(worker: Worker, url: str) -> Optional[str]:
    """One line on what ``distribute prune`` would do and about how long it would take, when the
    remote keeps :data:`MANY_BRANCHES` branches or more; ``None`` otherwise."""
    count = len(branches_of(worker.clone.ls_remote("refs/heads/*"))) - 1
    if count < MANY_BRANCHES:
        return None
    rate = PRUNE_RATE["http" if url.lower().startswith(("http://", "https://")) else "git"]
    seconds = 10 + count / rate  # (plus reading the refs and master's history)
    took = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
    return (f"{url} keeps {count} branches, which every push of every worker lists: "
            f"`distribute prune {url}` deletes those of done and failed jobs, keeping their "
            f"commits in master's history, in about {took}")
