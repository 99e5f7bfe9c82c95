"""Keeping a big remote lean: moving results to the sharded layout, pruning refs nobody needs.

* :func:`upgrade_layout` moves every ``updates/<slug>/`` of a remote in the first, flat layout
  to ``updates/<ab>/<cd>/<slug>/`` in one commit under the lock (``distribute upgrade``);
* :func:`prune` deletes heartbeat refs of workers without running jobs, wait refs older than the
  lock lease, and the branches of jobs that are done (their commits stay reachable through the
  merge on master; failed jobs keep theirs) (``distribute prune``).
"""
from __future__ import annotations

import logging
import time
from typing import Optional

from .exceptions import DistributeError, RemoteError
from .protocol import (
    HEARTBEAT_PREFIX,
    LAYOUT_FILE,
    QUEUE,
    SHARDED,
    TRACKING_PREFIX,
    UPDATES_DIR,
    WAIT_PREFIX,
    commit_message,
    heartbeat_ref,
    job_slug,
    layout_text,
    remote_ref,
    slug_path,
)
from .repo import RefUpdate
from .repo.plumbing import IndexEntry
from .transaction import Transaction
from .worker import Worker

log = logging.getLogger(__name__)


def upgrade_layout(worker: Worker) -> Optional[int]:
    """Move the remote's results to the sharded layout in one commit; return the number of job
    directories moved, or ``None`` if the remote already has that layout. Refused while jobs run
    (their branches still use the old paths)."""

    def edit(txn: Transaction) -> Optional[int]:
        if txn.workspace.layout >= SHARDED:
            return None
        running = txn.workspace.ledger().running
        if running:
            raise DistributeError(
                f"{len(running)} job(s) are running ({', '.join(e.job for e in running[:5])}); "
                "upgrade when no job runs (stop the workers, or wait for an idle moment)")
        moved, tree = _sharded_tree(worker, txn.base)
        commit = worker.clone.commit_tree(tree, commit_message(
            worker.name, QUEUE, f"{worker.name} moved {moved} job directories to the sharded "
                                f"layout ({UPDATES_DIR}/<ab>/<cd>/<slug>)"), [txn.base])
        txn.workspace.checkout(commit)
        return moved

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
        entries.append(IndexEntry("100644", clone.write_blob(layout_text(SHARDED)), LAYOUT_FILE))
        try:
            index.update(entries)
        except RemoteError as exc:
            raise DistributeError(f"cannot rearrange the results: {exc}") from None
        return len(slugs), index.write_tree()


def prune(worker: Worker, branches: bool = True) -> dict[str, list[str]]:
    """Delete refs nobody needs; returns ``{"heartbeats": [...], "waits": [...], "branches":
    [...]}`` (the refs deleted). Deleting a live worker's heartbeat or wait ref is harmless: it
    pushes it again."""
    snap = worker.snapshot()
    ledger = snap["ledger"]
    refs = {remote_ref(r): sha for r, sha in worker.clone.local_refs(TRACKING_PREFIX).items()}
    busy = {heartbeat_ref(e.worker, e.session) for e in ledger.running}
    now = time.time()
    updates: dict[str, list[RefUpdate]] = {"heartbeats": [], "waits": [], "branches": []}
    for ref, sha in refs.items():
        if ref.startswith(HEARTBEAT_PREFIX) and ref not in busy:
            updates["heartbeats"].append(RefUpdate(ref, None, expect=sha))
        elif ref.startswith(WAIT_PREFIX):
            age = now - (worker.clone.commit_time(sha) or now)
            if age >= worker.lock_lease_s:
                updates["waits"].append(RefUpdate(ref, None, expect=sha))
    if branches:
        done = {(e.worker, job_slug(e.job)) for e in ledger.done}
        for ref, sha in worker.clone.ls_remote("refs/heads/*").items():
            name = ref[len("refs/heads/"):]
            owner, _, rest = name.partition("/")
            if (owner, rest.partition("@")[0]) in done:
                updates["branches"].append(RefUpdate(ref, None, expect=sha))
    deleted: dict[str, list[str]] = {kind: [] for kind in updates}
    for kind, batch in updates.items():
        for start in range(0, len(batch), 4000):  # one atomic push per 4 000 refs
            chunk = batch[start:start + 4000]
            if worker.clone.push(chunk):
                deleted[kind] += [u.ref for u in chunk]
            else:
                log.warning("some %s changed while pruning; run prune again", kind)
    return deleted
