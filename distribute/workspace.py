"""The worker's checkout of ``master``: syncing it with the remote (one fetch), resuming on a
master known without one (:meth:`~distribute.transaction.MasterWriter.known_master`), and
committing in it. The write transaction (:mod:`distribute.transaction`) edits master here."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

from .archive import DoneIndex
from .coordination import Observer
from .exceptions import NotInitializedError
from .ledger import Ledger
from .protocol import (
    FLAT,
    HEARTBEAT_PREFIX,
    LAYOUT_FILE,
    LEDGER_FILES,
    LOCK_REF,
    ORIGIN_MASTER,
    TRACKING_PREFIX,
    UPDATES_DIR,
    WAIT_PREFIX,
    parse_layout,
    remote_ref,
)
from .repo import Clone

log = logging.getLogger(__name__)


class Workspace:
    """The worker's checkout: syncing it with the remote and committing in it."""

    def __init__(self, clone: Clone, observer: Observer, name: str) -> None:
        self.clone = clone
        self.observer = observer
        self.name = name
        #: ``{refs/distribute/...: sha}`` as of the last sync.
        self.remote_refs: dict[str, str] = {}
        #: The master commit of the last sync.
        self.master: Optional[str] = None
        #: How results are laid out on master (:data:`~distribute.protocol.SHARDED` or ``FLAT``).
        self.layout = FLAT
        self.done_index = DoneIndex(clone)
        self._initialized = False
        #: When (monotonic) the last sync looked at the remote; the coordination refs that are
        #: this worker's own (its heartbeat): with no others seen, a hold may skip the fetch.
        self.synced_at = 0.0
        self.own_refs: set[str] = set()

    @property
    def root(self) -> Path:
        """The checkout's directory."""
        return self.clone.path

    def ledger(self) -> Ledger:
        """The ledger as it is in the checkout now (older done records looked up in the done
        segments of the commit checked out)."""
        ledger = Ledger.read(self.root)
        ledger.done_lookup = lambda job: self.done_index.contains("HEAD", job)
        return ledger

    def sync(self) -> str:
        """Fetch and check out the newest master (detached, clean); return its sha."""
        self.clone.fetch()
        tracking = self.clone.local_refs("refs/remotes/origin/")
        self.remote_refs = {remote_ref(r): sha for r, sha in tracking.items()
                            if r.startswith(TRACKING_PREFIX)}
        self.observer.update(self.remote_refs, self.clone.unreachable_at)
        base = tracking.get(ORIGIN_MASTER)
        if base is None or (not self._initialized and not set(LEDGER_FILES) <= set(
                self.clone.tree_names(base))):
            raise NotInitializedError(
                "the remote has no job ledger on master; initialise it with "
                "`distribute init URL` or distribute.init_remote(url)")
        self._initialized = True
        self.synced_at = time.monotonic()
        return self.resume(base)

    def resume(self, base: str) -> str:
        """Check out ``base`` as the newest master (see :meth:`sync`; without it, a hold on the
        master this worker last pushed, :meth:`~distribute.transaction.MasterWriter.known_master`).
        """
        self.master = base
        self.checkout(base)
        self.layout = read_layout(self.root)
        return base

    def own_pushes_seen(self) -> None:
        """Take this worker's own refs as its last pushes left them, instead of as the last sync
        saw them (a hold without a fetch: a checkpoint or a lone beat moved the heartbeat
        since)."""
        for ref in self.own_refs:
            pushed, value = self.clone.pacer().pushed_value(ref)
            if pushed and value is None:
                self.remote_refs.pop(ref, None)
            elif pushed and value is not None:
                self.remote_refs[ref] = value

    def alone(self) -> bool:
        """Whether the last sync saw no coordination ref but this worker's own: no lock, no
        waiter, no other worker's heartbeat."""
        others = (LOCK_REF, WAIT_PREFIX, HEARTBEAT_PREFIX)
        return all(ref in self.own_refs or not ref.startswith(others) for ref in self.remote_refs)

    def checkout(self, commit: str) -> None:
        """Check out ``commit`` detached, dropping any change and untracked file in the copy."""
        self.clone.abort_interrupted()
        self.done_index.stale()
        if self.clone.clean_at(commit):  # (one process instead of two: the usual claim)
            return
        self.clone.checkout_detached(commit, force=True)
        removed = [line for line in self.clone.clean_untracked()
                   if not (line.startswith(f"Removing {UPDATES_DIR}/") and line.endswith("/"))]
        if removed:  # (a job directory left empty by the last claim is not worth a warning)
            log.warning("%s discarded untracked files in its copy: %s", self.name,
                        ", ".join(line.removeprefix("Removing ") for line in removed[:10]))

    def commit_all(self, message: str, amend: bool = False) -> bool:
        """Commit every change in the work tree; ``False`` if there was none. ``amend`` puts the
        changes into the last commit instead (keeping its parents), whatever they are."""
        self.clone.stage_all()
        return self.clone.commit_index(message, amend=amend)


def read_layout(root: Path) -> int:
    """The layout of results in the checkout at ``root`` (see :data:`LAYOUT_FILE`)."""
    try:
        return parse_layout((root / LAYOUT_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return FLAT
