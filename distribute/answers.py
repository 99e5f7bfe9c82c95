"""A waiter's side of serving the line: asking with a request, and trusting only its answer.

A worker that waits for the lock with a :class:`~distribute.protocol.Request` may be served by
whoever holds the lock: the holder's push deletes the wait ref and carries, on master, one commit
per part it did (closing the job, claiming the next one), each with the request's id in its
:data:`~distribute.protocol.ANSWER_TRAILER`. The waiter decides only from that record: a part
found there was done in its name; a part not found was not, and the worker does it itself under
the lock. It never guesses from the ledger (a job of its own in ``running.txt`` may be an old
claim, and a failed job may be queued and claimed again).

A request is settled once it can no longer be served: its wait ref is gone (served or dropped)
or its worker deleted it (compare-and-swap on its value). A worker that lost sight of a request
(an error while it waited) settles it before its next claim or close (:meth:`Asker.settle`), so
that a late answer is taken rather than done twice or left behind.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence, TypeVar

from .coordination import RequestAnswered
from .protocol import (
    ANSWER_LOG_FORMAT,
    Request,
    job_branch,
    new_request_id,
    parse_answers,
    wait_ref,
)
from .repo import RefUpdate
from .transaction import MasterWriter, Transaction
from .workspace import Workspace

log = logging.getLogger(__name__)

T = TypeVar("T")
#: The parts of a request that were answered: ``{"close": [job, …], "claim": [job, …],
#: "none": [""]}`` (any may miss; ``none``: no job for it after its closes).
Answer = dict[str, list[str]]
#: Claimed jobs as the claim edit returns them: ``[job, branch]``, or ``[job, branch, "granted"]``
#: for one claimed for us by a holder (its branch is not on the remote yet).
Claimed = list[list[str]]


def read_answer(ws: Workspace, request: Request, base: str) -> Answer:
    """Sync ``ws`` and read what was done for ``request`` on master since ``base`` (the master
    its worker saw before it asked).

    Call this only once the request can no longer be served: the push that served it, if any,
    carried the answer to master together with the wait ref's deletion.
    """
    master = ws.sync()
    out = ws.clone.first_parent_log(f"{base}..{master}", ANSWER_LOG_FORMAT) if base else ""
    return parse_answers(out, request.id)


def withdraw(ws: Workspace, request: Request, base: str) -> Answer:
    """Settle a request whose outcome its worker did not see: take it out of line if it is still
    there (then nothing was done for it: ``{}``), else read its answer. Either way it can never
    be served afterwards."""
    ref = wait_ref(request.worker)
    value = ws.clone.ls_remote(ref).get(ref)
    if value is not None:
        parsed = Request.parse(ws.clone.messages([value]).get(value, ""))
        if parsed is not None and parsed.id == request.id and \
                ws.clone.push([RefUpdate(ref, None, expect=value)]):
            return {}
    return read_answer(ws, request, base)


class Asker:
    """One worker's requests: waits in line with them and settles each one exactly once."""

    def __init__(self, writer: MasterWriter, workspace: Workspace, name: str,
                 session: str) -> None:
        self.writer = writer
        self.workspace = workspace
        self.name = name
        self.session = session
        #: A request that may still be in line, whose outcome we did not see, and its base.
        self.pending: Optional[tuple[Request, str]] = None

    def ask(self, edit: Callable[..., T], request: Optional[Request],
            refs: Sequence[RefUpdate] = (), tip: Optional[Sequence[str]] = None,
            ) -> tuple[Optional[T], Optional[Answer]]:
        """Run ``edit`` as a write transaction, waiting in line with ``request``: ``(what edit
        returned, None)``, or ``(None, the parts answered)`` when a holder took the request out
        of line. When anything goes wrong while the request may still be in line, it stays
        pending until :meth:`settle`."""
        base = self.workspace.master or ""
        self.pending = (request, base) if request is not None else None
        if request is not None:
            edit = self._unless_answered(edit, request, base)
        try:
            result = self.writer.transact(edit, refs, request, tip)
        except RequestAnswered:
            assert request is not None
            answer = read_answer(self.workspace, request, base)
            self.pending = None
            log.debug("%s: request %s answered %s", self.name, request.id, answer or "nothing")
            return None, answer
        self.pending = None
        return result, None

    def _unless_answered(self, edit: Callable[..., T], request: Request,
                         base: str) -> Callable[..., T]:
        """``edit``, unless master already answers ``request``: a holder may have served it and
        deleted our wait ref while our join push was being retried, which then put the wait ref
        back. Holding the lock, we decide by the answer on master, never by our wait ref."""
        def guarded(txn: Transaction) -> T:
            if base and base != txn.base and parse_answers(self.workspace.clone.first_parent_log(
                    f"{base}..{txn.base}", ANSWER_LOG_FORMAT), request.id):
                log.info("%s: request %s was answered while we were back in line", self.name,
                         request.id)
                raise RequestAnswered(wait_ref(request.worker))
            return edit(txn)
        return guarded

    def claim(self, edit: Callable[..., Optional[Claimed]], spec: Optional[str],
              count: int = 1) -> Optional[Claimed]:
        """Claim up to ``count`` jobs with ``edit`` (the claim transaction's edit; ``spec``: its
        combinable next-job function, else ``None``): jobs an earlier request got for us, else
        ones a holder claims for us while we wait in line, else ours under the lock (then
        ``None`` always means that our next-job function said so)."""
        claimed = self.granted(self.settle().get("claim"))
        if claimed is None:
            request = Request(self.name, self.session, spec, id=new_request_id(),
                              claims=count) if spec else None
            claimed, answer = self.ask(edit, request)
            if answer is not None:  # taken out of line: claimed for us, or do it ourselves
                claimed = self.granted(answer.get("claim")) or self.writer.transact(edit)
        return claimed

    def settle(self) -> Answer:
        """The answer to a request whose outcome we missed (``{}``: none pending, or not served)."""
        if self.pending is None:
            return {}
        request, base = self.pending
        answer = withdraw(self.workspace, request, base)
        self.pending = None
        if answer:
            log.info("%s: an earlier request was served after all (%s)", self.name,
                     ", ".join(f"{part} {' '.join(jobs)}".strip()
                               for part, jobs in sorted(answer.items())))
        return answer

    def granted(self, jobs: Optional[list[str]]) -> Optional[Claimed]:
        """``[[job, branch, "granted"], …]`` of ``jobs`` claimed for us that are still ours
        (``None``: nothing claimed, or all requeued since: the answer is stale)."""
        ledger = self.workspace.ledger()
        found = []
        for job in jobs or ():
            entry = ledger.running_entry(job)
            if entry is not None and (entry.worker, entry.session) == (self.name, self.session):
                found.append([job, job_branch(self.name, job, entry.attempt), "granted"])
        return found or None
