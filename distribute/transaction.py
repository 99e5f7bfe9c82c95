"""The one write transaction: the only code that writes ``master``.

A hold of the lock goes: take the lock → sync (fetch, check out the newest ``master``) → the
caller's edit, as commits on top of it → one atomic push that moves ``master`` (compare-and-swap
on the commit we started from), the caller's other refs, and deletes the lock (compare-and-swap on
our lock value). A holder whose lock was broken cannot write: the push fails as a whole (fencing).

Outcomes of the push, each typed:

* applied — everything moved;
* **lock lost** — :class:`~distribute.exceptions.LockLostError`, nothing written;
* **master moved** outside the lock (a person pushed to it): when the new ``master`` contains
  ours (a fast-forward) our commits are replayed on top of it (``git rebase``; a merge is
  made again instead) and
  the push is tried again; when the replay conflicts, or the caller's ``still_valid`` check says
  its edit no longer holds, the edit is made again on the new ``master``. A ``master`` that no
  longer contains ours (a force-push) is :class:`~distribute.exceptions.MasterRewrittenError`;
* **ref refused** — :class:`~distribute.exceptions.RefRejectedError`, unless the caller's
  ``fix_refused`` changes its refs (e.g. a branch name already taken) and asks for another try;
  a waiter's request that could not be answered (its wait ref changed: it left the line) makes the
  edit run again on the same ``master`` without serving it.

A transaction started with a request (:class:`~distribute.protocol.Request`) waits in line with
it: when a holder serves it first, :class:`~distribute.coordination.RequestAnswered` is raised
and the edit never runs.

The lock is renewed in the background for the whole hold, so a long edit (a slow next-job
function, a big merge) keeps it.

A worker alone (:meth:`MasterWriter.known_master`) holds no lock: its edit starts on the master
its last push gave, and one atomic push moves master (compare-and-swap on that commit, as ever)
and the other refs, with a lease that the lock is absent. Refused (another worker came, or a
person pushed), the hold is made again under the lock.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from typing import Callable, Iterator, Optional, Sequence, TypeVar

from .coordination import RemoteLock
from .exceptions import (
    DistributeError,
    LockLostError,
    MasterRewrittenError,
    RefRejectedError,
    RemoteError,
)
from .protocol import (
    LOCK_REF,
    MASTER,
    ORIGIN_MASTER,
    TRACKING_PREFIX,
    Request,
    remote_ref,
)
from .redact import redact
from .repo import Clone, RefUpdate
from .workspace import Workspace

log = logging.getLogger(__name__)

T = TypeVar("T")
#: How often one hold follows a moving master before it gives up.
MAX_MOVES = 8


class Transaction:
    """What one edit of master is made of: commits on top of :attr:`base` in the workspace, plus
    other refs to move in the same atomic push."""

    def __init__(self, workspace: Workspace, base: str, refs: Sequence[RefUpdate],
                 lock: Optional[RemoteLock] = None) -> None:
        self.workspace = workspace
        self._lock = lock
        self.base = base
        self.refs = list(refs)
        #: Branches (``refs/heads/...``) to create at the commit master gets, in the same push.
        self.new_branches: list[str] = []
        #: Clean-up updates (e.g. pruning a dead heartbeat ref) dropped if the remote refuses them.
        self.optional: list[RefUpdate] = []
        #: After our commits were replayed on a moved master: does the edit still hold?
        self.still_valid: Optional[Callable[[], bool]] = None
        #: Given ``{ref: reason}`` of refused refs, adjust :attr:`refs` or :attr:`new_branches`
        #: and return ``True`` to try the push again.
        self.fix_refused: Optional[Callable[[dict[str, str]], bool]] = None
        self._checkpoint: Optional[tuple[str, int]] = None
        #: The edit raised, and what it committed before :meth:`checkpoint` landed all the same.
        self.checkpoint_landed = False
        #: ``{wait ref: value}`` of the waiters whose requests this transaction serves (their wait
        #: refs are deleted in its push), and the wait refs it must not serve (refused before).
        self.served: dict[str, str] = {}
        self.unservable: set[str] = set()

    def commit(self, message: str, amend: bool = False) -> bool:
        """Commit every change in the checkout on top of master; ``False`` if nothing changed
        (``amend``: into the last commit of this transaction, keeping its parents)."""
        return self.workspace.commit_all(message, amend)

    def head(self) -> str:
        """The commit master will point at if the transaction lands now."""
        return self.workspace.clone.resolve("HEAD") or self.base

    @contextlib.contextmanager
    def time_limit(self, seconds: float, what: str) -> Iterator[None]:
        """Keep the lock only ``seconds`` for ``what`` (e.g. a next-job function): past that it
        is no longer renewed, other workers break it, and this transaction cannot land."""
        if self._lock is not None:
            self._lock.limit_renewal(seconds, what)
        try:
            yield
        finally:
            if self._lock is not None:
                self._lock.limit_renewal(None)

    def checkpoint(self) -> None:
        """What is committed so far (and the refs added so far) lands even if the rest of the
        edit raises."""
        self._checkpoint = (self.head(), len(self.refs))

    def rewind(self) -> bool:
        """Drop what came after the checkpoint; ``False`` when there is no checkpoint to land."""
        if self._checkpoint is None or self._checkpoint[0] == self.base:
            return False
        head, n_refs = self._checkpoint
        self.workspace.clone.reset_hard(head)
        del self.refs[n_refs:]
        self.served = {ref: value for ref, value in self.served.items()
                       if any(u.ref == ref for u in self.refs)}
        self.new_branches.clear()
        self.optional.clear()
        self.still_valid = self.fix_refused = None
        return True


class MasterWriter:
    """Runs write transactions for one worker (see the module docstring)."""

    def __init__(self, workspace: Workspace, lock: RemoteLock) -> None:
        self.workspace = workspace
        self.lock = lock
        self.clone = workspace.clone
        #: The master this worker's last push that moved it gave (``None``: none yet).
        self.pushed_master: Optional[str] = None
        #: Whether a hold may go without the lock when the worker is alone (:meth:`_lockless`).
        self.lockless = True

    def transact(self, edit: Callable[[Transaction], T], refs: Sequence[RefUpdate] = (),
                 request: Optional[Request] = None,
                 tip: Optional[Sequence[str]] = None) -> T:
        """Hold the lock, sync, run ``edit(txn)`` and push its commits and ``refs`` atomically
        with the lock's release. Returns what ``edit`` returned. When ``edit`` raises, what it
        committed before :meth:`Transaction.checkpoint` still lands, and the exception goes on.
        With ``request``, wait in line with it (``tip``: see :meth:`RemoteLock.acquire`); it
        raises :class:`~distribute.coordination.RequestAnswered` when a holder served it.
        """
        known = self.known_master()
        if known is not None:  # alone: no lock (see :meth:`_lockless`), unless someone came
            try:
                return self._lockless(edit, refs, known)
            except _NotAlone:
                pass
        self.lock.acquire(request, tip)
        unservable: set[str] = set()
        took = time.monotonic()
        try:
            base = self._sync_holding(request, tip)
            for _ in range(MAX_MOVES):
                self.lock.start_renewing()  # (again after a master that moved)
                txn = Transaction(self.workspace, base, refs, self.lock)
                txn.unservable = unservable
                try:
                    result = edit(txn)
                except BaseException:
                    if txn.rewind():
                        txn.checkpoint_landed = self._push(txn) is None
                    raise
                redo = self._push(txn)
                if redo is None:
                    log.debug("%s held the lock %.2fs (served %d)", self.workspace.name,
                              time.monotonic() - took, len(txn.served))
                    return result
                base = redo
            raise DistributeError(f"master kept moving outside the lock ({MAX_MOVES} times in one "
                                  "hold); nothing was written")
        finally:
            self.lock.stop_renewing()
            if self.lock.value is not None:
                self.lock.release()

    def known_master(self) -> Optional[str]:
        """The master this worker last pushed, when a hold may start on it without a fetch and
        without the lock (:meth:`_lockless`): no sync since showed master elsewhere (a worker's
        first hold takes the lock: a fleet started together would collide), the last sync saw
        nobody else (:meth:`Workspace.alone`) less than a lock lease ago, the host's answers are
        trusted (a push answered ok is one that landed) and no fleet budget is counted from what
        fetches show. Else ``None``."""
        ws = self.workspace
        if not self.lockless or ws.master is None or ws.master != self.pushed_master or \
                not ws.alone() or \
                time.monotonic() - ws.synced_at >= self.lock.lease_s or \
                not self.clone.answers_trusted() or self.clone.pacer().budget.limited:
            return None
        return ws.master

    def _lockless(self, edit: Callable[[Transaction], T], refs: Sequence[RefUpdate],
                  known: str) -> T:
        """A hold without the lock, for a worker alone (:meth:`known_master`): the edit on
        ``known`` and one atomic push of master (compare-and-swap on ``known``) and the refs,
        fenced by the lock: a lease that it is absent, on a deletion that deletes nothing.
        Returns what ``edit`` returned once applied; raises :class:`_NotAlone` when master moved
        or the lock is taken (someone came): the hold is made again under the lock, from a fetch,
        and the next hold is lockless only if that fetch shows this worker alone again. An edit
        that writes nothing only checks that master is still ``known``. Nobody waits in line
        while the lock is free, so a request is never published and nobody is served here."""
        self.workspace.own_pushes_seen()
        txn = Transaction(self.workspace, self.workspace.resume(known), refs)
        try:
            result = edit(txn)
        except BaseException:
            if txn.rewind():
                txn.checkpoint_landed = self._push_lockless(txn)
            raise
        if self._push_lockless(txn):
            log.debug("%s held without the lock (alone)", self.workspace.name)
            return result
        log.info("%s is not alone any more (master moved or the lock is taken); the hold is "
                 "made again under the lock", self.workspace.name)
        raise _NotAlone()

    def _push_lockless(self, txn: Transaction) -> bool:
        """Push a lockless hold's ``txn`` (:meth:`_lockless`); ``True`` once applied."""
        head = txn.head()
        if head == txn.base and not txn.refs and not txn.optional and not txn.new_branches:
            return self.clone.ls_remote(MASTER, cheap=True).get(MASTER) == txn.base
        updates = [RefUpdate(MASTER, head, expect=txn.base)]  # (unchanged: a lease, not sent)
        updates += [RefUpdate(ref, head, expect="") for ref in txn.new_branches]
        pushed = _one_per_ref([*updates, *txn.refs, *txn.optional,
                               RefUpdate(LOCK_REF, None, expect="")])
        result = self.clone.push_result(pushed, landed=functools.partial(self._landed, head)
                                        if head != txn.base else None)
        if result.applied:
            self._pushed(pushed, head)
        elif "stale info" not in result.rejected.get(LOCK_REF, "stale info"):
            # a host that refuses to delete the absent lock (stock git allows it, warning): this
            # worker's holds take the lock from now on
            log.warning("%s: the host refuses the lockless push (%s); holding the lock from now "
                        "on", self.workspace.name, result.rejected[LOCK_REF])
            self.pushed_master = None
            self.lockless = False
        return result.applied

    def _pushed(self, pushed: Sequence[RefUpdate], head: Optional[str]) -> None:
        """After an applied push: ``head`` is master on the remote (``None``: unchanged), and
        the refs ``pushed`` hold what it gave them."""
        if head is not None:
            self.workspace.master = self.pushed_master = head
        for update in pushed:
            if update.new is None:
                self.workspace.remote_refs.pop(update.ref, None)
            else:
                self.workspace.remote_refs[update.ref] = update.new

    def _sync_holding(self, request: Optional[Request], tip: Optional[Sequence[str]]) -> str:
        """Sync once the lock is taken, and return master; the fetch shows whether the take
        landed (a host may answer ok for one it never applied): if not, wait for the lock again
        (:meth:`RemoteLock.seen`)."""
        for _ in range(MAX_MOVES):
            self.lock.start_renewing()
            base = self.workspace.sync()
            if self.lock.seen(self.workspace.remote_refs):
                return base
            self.lock.acquire(request, tip)
        raise RemoteError(f"the host answered ok for taking the lock {MAX_MOVES} times, yet the "
                          "lock was never there")

    def _push(self, txn: Transaction) -> Optional[str]:
        """Push ``txn``; ``None`` once applied, or the moved master to make the edit again on."""
        self.lock.stop_renewing()  # the release below must name the lock's last value
        for _ in range(MAX_MOVES):
            head = txn.head()
            updates = [RefUpdate(MASTER, head, expect=txn.base)] if head != txn.base else []
            updates += [RefUpdate(ref, head, expect="") for ref in txn.new_branches]
            release = self.lock.release_update()
            pushed = _one_per_ref([*updates, *txn.refs, *txn.optional, *self.lock.leftovers,
                                   release])
            result = self.clone.push_result(
                pushed, landed=functools.partial(self._landed, head) if updates else None)
            if result.applied:
                self.lock.forget()
                self._pushed(pushed, head if updates else None)
                return None
            if LOCK_REF in result.rejected or self._lock_gone(release):
                self.lock.forget()
                if not updates and not txn.refs:  # a hold that wrote nothing: nothing lost
                    return None
                raise LockLostError("the lock was broken while we held it (we were too slow); "
                                    "our change was discarded and master is untouched")
            if not result.rejected:  # the server's transaction failed as a whole: again, later
                time.sleep(random.uniform(0.05, 0.5))
                continue
            if MASTER in result.rejected and updates:
                moved = self._moved_master(txn.base)
                if not self._replay(txn, moved):
                    self.workspace.checkout(moved)
                    return moved
                continue
            refused = set(result.rejected)
            if refused & set(txn.served):  # (whatever else was refused: edit again, anew)
                log.info("%s: waiters left the line before being served: %s",
                         self.workspace.name, ", ".join(sorted(refused & set(txn.served))))
                txn.unservable.update(refused & set(txn.served))
                self.workspace.checkout(txn.base)
                return txn.base
            if refused & {u.ref for u in [*txn.optional, *self.lock.leftovers]}:
                # clean-ups someone else did: drop those, keep the rest
                txn.optional = [u for u in txn.optional if u.ref not in refused]
                self.lock.leftovers = [u for u in self.lock.leftovers if u.ref not in refused]
                continue
            if txn.fix_refused is not None and txn.fix_refused(result.rejected):
                continue
            raise RefRejectedError(result.rejected or {"(unknown)": "refused"})
        raise DistributeError(f"master kept moving outside the lock "
                              f"({MAX_MOVES} times in one hold)")

    def _landed(self, head: str) -> bool:
        """Whether ``head``, pushed to master by a push whose answer was lost, is in master's
        history on the remote: then that atomic push was applied (master only moves forward)."""
        master = self.clone.ls_remote(MASTER).get(MASTER)
        if master == head:
            return True
        self.clone.fetch()
        return self.clone.is_ancestor(head, ORIGIN_MASTER)

    def _lock_gone(self, release: RefUpdate) -> bool:
        return self.clone.ls_remote(release.ref).get(release.ref) != release.expect

    def _moved_master(self, ours: str) -> str:
        """The master that replaced ``ours`` on the remote, if it contains ours; else raise."""
        self.clone.fetch()
        self.workspace.done_index.stale()
        moved = self.clone.resolve(ORIGIN_MASTER) or ours
        if not self.clone.is_ancestor(ours, moved):
            raise MasterRewrittenError(ours, moved)
        log.warning("%s: master moved outside the lock (%s -> %s); making our change again on top",
                    self.workspace.name, ours[:12], moved[:12])
        self.workspace.observer.update({remote_ref(r): sha for r, sha in
                                        self.clone.local_refs(TRACKING_PREFIX).items()})
        return moved

    def _replay(self, txn: Transaction, moved: str) -> bool:
        """Replay our commits (``txn.base..HEAD``) on ``moved``; ``True`` if they still hold.

        A merge commit is never replayed (a rebase would redo the merge and drop the ledger edit
        made in the same commit): its edit is made again instead, as is an edit that served
        waiters (their requests are judged again on the new master).
        """
        if txn.served:
            return False
        if self.clone.count_merges(txn.base, "HEAD"):
            return False
        err = self.clone.rebase_onto(moved, txn.base)
        if err is not None:
            log.info("replaying on the moved master failed (%s); editing again", redact(err)[:200])
            return False
        txn.base = moved
        return txn.still_valid is None or txn.still_valid()


class _NotAlone(Exception):
    """A lockless hold found master moved or the lock taken: nothing of it was written."""


def _one_per_ref(updates: list[RefUpdate]) -> list[RefUpdate]:
    """``updates`` with the first update of each ref only (git refuses a push that names a ref
    twice; e.g. a heartbeat the edit moves and a clean-up would delete)."""
    kept: dict[str, RefUpdate] = {}
    for update in updates:
        kept.setdefault(update.ref, update)
    return list(kept.values())


def create_master(clone: Clone, message: str, expect: Optional[str]) -> bool:
    """Push the checkout's ``HEAD`` as the first ledger commit on master (compare-and-swap:
    ``expect`` is master's current value, or ``None`` when it does not exist). No lock is taken:
    workers only start once the ledger exists. ``False`` if someone else was first."""
    if not clone.commit_index(message):
        raise DistributeError("git commit failed: nothing to commit")
    return clone.push([RefUpdate(MASTER, clone.resolve("HEAD"), expect=expect or "")])
