"""Talking to the remote: fetch, ls-remote and compare-and-swap pushes, with retries.

These are the atomic operations everything else is built on:

* :meth:`Transport.fetch` — bring ``master`` and the coordination refs up to date;
* :meth:`Transport.ls_remote` — read a few refs cheaply (one round trip, no objects);
* :meth:`Transport.push_result` / :meth:`Transport.push` — a compare-and-swap push of one or many
  refs, ``--atomic`` so that either every ref moves or none does, with the server's verdict per ref.

Transport failures are retried with jittered exponential back-off (``DISTRIBUTE_NET_RETRIES``). A
push whose outcome is unknown (the connection broke after the server may have applied it) is
settled by reading the refs back. A push the host answered "ok" counts as applied only once seen
to land (read back) wherever the host is not known to report truthfully (:mod:`.verify`,
``DISTRIBUTE_VERIFY_PUSHES``): one not seen is pushed again, as one whose answer was lost.

Until a :class:`Transport` has once reached the remote (its *first contact*: every command-line
command, and a worker's clone or first fetch), failures that retrying cannot fix — an unknown
host, refused credentials, no repository at that path — are raised at once (:func:`diagnose`),
naming git's own cause (``ssh: Could not resolve hostname …``, ``Permission denied (publickey)``,
HTTP 403…) rather than its last line. After that, a running worker rides out outages as before:
every failure that looks like the network is retried.
"""
from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from ..exceptions import NotInitializedError, RemoteError
from ..protocol import fetch_refspecs
from ..redact import redact
from ..settings import count_setting
from .diagnosis import Failure, _cause, _classify, _error_class, _is_transport_error, diagnose
from .namespace import Namespaced
from .pacer import PUSH, READ, Pacer
from .porcelain import busy_reason, refused_refs
from .pushdir import PushDir
from .refusals import raise_host_rule
from .verify import seen_landed, verifies

__all__ = ["Failure", "PushResult", "RefUpdate", "Transport", "diagnose", "net_retries"]
log = logging.getLogger(__name__)

_SHA = re.compile(r"^[0-9a-f]{40}$")
#: Why a push answered "ok" is pushed again (and, when that goes on, why it failed).
_NOT_SEEN = "the host answered ok, but the push was not there when read back"


@dataclass(frozen=True)
class RefUpdate:
    """One ref to change in a push.

    ``new`` is the object to point at (``None`` deletes the ref). ``expect`` is the value the ref
    must have on the remote for the push to apply: a sha, ``""`` for "must not exist", or ``None``
    to overwrite unconditionally.
    """

    ref: str
    new: Optional[str]
    expect: Optional[str] = None


@dataclass
class PushResult:
    """The outcome of an atomic push: ``applied`` (every ref moved) or not, and for a refused push
    the refs the server or the lease check refused and why (``{ref: reason}``; refs refused only
    because another one was, ``atomic push failed``, are left out)."""

    applied: bool
    rejected: dict[str, str] = field(default_factory=dict)


def net_retries() -> int:
    """``DISTRIBUTE_NET_RETRIES``: retries of a git command that could not connect."""
    return count_setting("DISTRIBUTE_NET_RETRIES")


class Transport(Namespaced):
    """A :class:`GitProcess` in a local copy whose ``origin`` is the shared remote, its
    operations there paced to the worker's share of the fleet's budget (:class:`PacedProcess`),
    the coordination refs named as the code names them wherever the remote keeps them
    (:class:`~.namespace.Namespaced`)."""

    def __init__(self, path: object, name: str = "distribute", retries: Optional[int] = None,
                 backoff_s: float = 0.25, backoff_max_s: float = 20.0) -> None:
        super().__init__(path, name)
        self.retries = retries if retries is not None else net_retries()
        #: When (monotonic) the remote last could not be reached; 0.0 if never.
        self.unreachable_at = 0.0
        #: Whether a command of this transport has reached the remote. Until then (the first
        #: contact), failures that retrying cannot fix are raised at once.
        self.reached = False
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        #: Pushes answered "ok" that were read back (:mod:`.verify`), and those not seen landed.
        self.verified_pushes = 0
        self.misreported_pushes = 0
        #: Where a slim copy over smart HTTP pushes from (:mod:`.pushdir`), once made.
        self._push_dir: Optional[PushDir] = None

    def _worth_retrying(self, err: str) -> bool:
        """Before the first contact: only what :func:`diagnose` calls transient; after it, every
        failure that looks like the network (an outage must not stop a running worker)."""
        failure = diagnose(err)
        if not self.reached or failure.kind == "no-atomic":
            return failure.transient
        return _is_transport_error(err)

    def _network(self, args: list[str], what: str) -> tuple[int, str, str]:
        """Run a command that talks to the remote, retrying transport failures with back-off,
        each attempt paced to the worker's share of the budget (:mod:`.pacer`)."""
        pacer = self.pacer(args[args.index("--") + 1] if "clone" in args else None)
        kind = PUSH if "push" in args else READ  # (the atomic probe: a push's advertisement)
        self._fetching.now = kind == READ
        try:
            return self._attempts(args, what, pacer, kind)
        finally:
            self._fetching.now = False

    def _attempts(self, args: list[str], what: str, pacer: Pacer,
                  kind: str) -> tuple[int, str, str]:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            self.network_calls += 1
            with self._paced(kind, pacer):
                status, out, err = self._run(args)
            if status == 0:
                self.reached = True
                return status, out, err
            if not self._worth_retrying(err):
                if what in ("clone", "ls-remote", "fetch"):
                    raise _classify(what, err)
                return status, out, err
            if attempt == self.retries:
                break
            delay = self._back_off(what, err, delay)
        self.unreachable_at = time.monotonic()
        raise RemoteError(redact(f"{what} failed after {self.retries + 1} attempts: {_cause(err)}"))

    def _back_off(self, what: str, err: str, delay: float) -> float:
        """Say that ``what`` failed and why, sleep a jittered ``delay``; return the next delay.

        A failure that goes on after a first back-off is an outage: nobody may have been able to
        push meanwhile, so the lease clocks start again (``unreachable_at``); a single failed
        attempt is not (on a flaky link, lease clocks would never run out)."""
        if delay > self.backoff_s:
            self.unreachable_at = time.monotonic()
        log.warning("%s failed (%s); retrying in %.1fs", what, redact(_cause(err)), delay)
        time.sleep(delay * random.uniform(0.5, 1.0))
        return min(delay * 2, self.backoff_max_s)

    def _pause(self, delay: float) -> float:
        """Before pushing again what changed nothing (a busy ref, an "ok" not seen to land):
        sleep a jittered ``delay``; return the next delay."""
        time.sleep(delay * random.uniform(0.2, 1.0))
        return min(delay * 2, self.backoff_max_s)

    def fetch(self, *refspecs: str, depth: Optional[int] = None,
              deepen: Optional[int] = None) -> None:
        """Fetch ``master`` and the coordination refs (plus ``refspecs``) into
        ``refs/remotes/origin``.

        ``depth`` limits the history fetched (new shallow copies); ``deepen`` extends the history
        of a shallow copy by that many commits (a no-op for a complete one).
        """
        limit = [f"--depth={depth}"] if depth else []
        if deepen and (self.path / ".git" / "shallow").exists():
            limit = [f"--deepen={deepen}"]
        # --refmap=: the refspecs given are all that is fetched (nothing lands in the places the
        # copy's configured refspec names, e.g. a branch namespace's coordination refs)
        args = ["fetch", "--quiet", "--prune", "--no-tags", "--refmap=", *limit, "origin",
                *fetch_refspecs(self.namespace), *(self.on_remote(r) for r in refspecs)]
        try:
            self._network(args, what="fetch")
            if not self.read_record():
                self._see_fleet()
                return
        except RemoteError as exc:
            if self._protocol and "unadvertised object" in str(exc):
                # a thin pack's delta base is a file this partial copy never had (one outside its
                # sparse checkout that changed): git fetches it on its own, with this command's
                # protocol, and only v2 may ask for any object
                saved, self._protocol = self._protocol, []
                try:
                    self._network(args, what="fetch")
                finally:
                    self._protocol = saved
                return
            if "couldn't find remote ref refs/heads/master" in str(exc):
                raise NotInitializedError(
                    "the remote has no master branch with a job ledger; initialise it with "
                    "`distribute init URL` or distribute.init_remote(url)") from None
            raise
        self.fetch(*refspecs, depth=depth, deepen=deepen)  # (from where master's record says)

    def fetch_branch(self, branch: str) -> None:
        """Fetch the remote's ``branch`` (into ``FETCH_HEAD``, and its tracking ref)."""
        self._network(["fetch", "--quiet", "origin", branch], what="fetch")

    def unshallow_master(self) -> Optional[str]:
        """Fetch the rest of ``master``'s history into this shallow copy (commits only when the
        copy is partial: ``--filter=tree:0``); ``None`` when done, else why not (one line)."""
        promisor = self.run("config", "--get", "remote.origin.promisor")[1].strip() == "true"
        args = ["fetch", "--quiet", "--no-tags", "--unshallow",
                *(["--filter=tree:0"] if promisor else []), "origin",
                "+refs/heads/master:refs/remotes/origin/master"]
        try:
            status, _, err = self._network(args, what="fetch of master's history")
        except RemoteError as exc:
            return str(exc)
        return None if status == 0 else (err.strip().splitlines() or ["no message"])[-1]

    def fetch_objects(self, shas: Sequence[str]) -> bool:
        """Fetch the objects ``shas`` (commits and trees without their files; blobs named here
        are sent) in one request, as a partial copy would fetch each one when first read.
        Transport failures are retried (:class:`RemoteError` when the remote stays out of
        reach); ``False`` if the remote refused: git will ask again when it reads them."""
        # -c first: this fetch keeps protocol v2 even over git://, only v2 may ask for any object
        args = ["-c", "fetch.negotiationAlgorithm=noop", "fetch", "--quiet", "--no-tags",
                "--no-write-fetch-head", "--filter=blob:none", "origin", *shas]
        return self._network(args, what="fetch of missing objects")[0] == 0

    def fetch_commit(self, sha: str) -> bool:
        """Make the remote's commit ``sha`` local (with what this copy fetches of its history:
        a partial copy's filter applies), e.g. a failed job's kept tip, which no ref but
        ``master`` reaches; ``True`` when it is here. Asked for by its id: protocol v2 (only v2
        may ask for any object, so ``-c`` first, also over ``git://``)."""
        def here() -> bool:
            return self.run("cat-file", "-e", f"{sha}^{{commit}}")[0] == 0

        if here():
            return True
        self._network(["-c", "protocol.version=2", "fetch", "--quiet", "--no-tags",
                       "--no-write-fetch-head", "origin", sha], what="fetch")
        return here()

    def ls_remote(self, *patterns: str, cheap: bool = False) -> dict[str, str]:
        """Return ``{ref: sha}`` for the remote refs matching ``patterns`` (one round trip).
        ``cheap``: one HTTP request instead of two (protocol v0), for frequent idle looks."""
        v0 = ["-c", "protocol.version=0"] if cheap and not self._protocol else []
        _, out, _ = self._network([*v0, "ls-remote", "origin", *map(self.on_remote, patterns)],
                                  what="ls-remote")
        refs: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, wire = line.partition("\t")
            ref = self.from_remote(wire)
            if _SHA.match(sha) and ref is not None:
                refs[ref] = sha
        if self.pacer().budget.limited:
            self.pacer().see(refs)
        return refs

    def push(self, updates: Sequence[RefUpdate], within_s: Optional[float] = None,
             read_back: bool = True) -> bool:
        """Apply ``updates`` atomically; ``True`` if applied, ``False`` if any lease or ref was
        refused (see :meth:`push_result` for which)."""
        if within_s is None and read_back:  # (as before: benchmarks wrap push_result)
            return self.push_result(updates).applied
        return self.push_result(updates, within_s=within_s, read_back=read_back).applied

    def push_result(self, updates: Sequence[RefUpdate], atomic: bool = True,
                    landed: Optional[Callable[[], bool]] = None,
                    within_s: Optional[float] = None, read_back: bool = True) -> PushResult:
        """Apply ``updates`` on the remote atomically and say which refs were refused, if any
        (see :meth:`_push_attempts`), each attempt paced to the worker's share of the budget
        (:mod:`.pacer`): never delayed when it renews or releases the lock this worker holds,
        at most ``within_s`` seconds if given (0: urgent).

        ``read_back=False``: an "ok" is taken as it is, even where the host may misreport
        (:mod:`.verify`), because the caller sees the refs land itself with the read it makes
        next (the lock's take: the hold's fetch; a wait ref's join: the waiter's next look),
        before it acts on the push: one read per push saved, and the fleet's read budget."""
        pacer = self.pacer()
        urgent, reserve = pacer.push_priority(updates)
        result = self._push_attempts(updates, atomic, landed, pacer, urgent or within_s == 0,
                                     within_s, reserve, read_back)
        pacer.pushed(updates, result.applied, result.rejected,
                     lambda rev: rev if _SHA.match(rev) else self._sha_of(rev))
        log.debug("push of %s: %s", " ".join(u.ref.rpartition("/")[2] if u.ref.startswith(
            "refs/heads/") else u.ref for u in updates), "applied" if result.applied else "refused")
        return result

    def _push_attempts(self, updates: Sequence[RefUpdate], atomic: bool,
                       landed: Optional[Callable[[], bool]], pacer: Pacer, urgent: bool,
                       within_s: Optional[float], reserve: int,
                       read_back: bool = True) -> PushResult:
        """Apply ``updates`` on the remote atomically and say which refs were refused, if any.
        Not ``atomic``: each ref is applied or refused on its own (``applied`` means all were).

        Transport errors are retried, and so are refusals that changed nothing because a ref was
        busy (``(failed)``, a ref lock held by another push): never taken for a lost
        compare-and-swap. When a retry is refused (or the retries run out) after an earlier
        attempt may have landed, ``landed()`` settles it (e.g. "our commit is in master's
        history", which others cannot undo); without it, the refs are read back: if they hold
        our values, the push counts as applied. An "ok" counts only once seen to land where the
        host may misreport (:meth:`_seen_landed`); one not seen is pushed again, as uncertain.
        """
        # --no-thin: a thin pack makes git walk every tree of the remote's master to find delta
        # bases, a cost that grows with the repository; our pushes carry a few small objects
        args = ["push", "--porcelain", "--atomic" if atomic else "--no-atomic", "--no-verify",
                "--no-thin"]
        args += [f"--force-with-lease={self.on_remote(u.ref)}:{u.expect}" for u in updates
                 if u.expect is not None]
        args.append("origin")
        sibling = self._sibling()
        values = self._values(updates) if sibling else [u.new for u in updates]
        if sibling is not None and any(u.new and v is None for u, v in zip(updates, values)):
            sibling, values = None, [u.new for u in updates]  # (a name only the copy knows)
        args += [f"{'+' if u.expect is None and u.new else ''}{new or ''}:{self.on_remote(u.ref)}"
                 for u, new in zip(updates, values)]
        uncertain = False
        delay = self.backoff_s
        err = ""
        for attempt in range(self.retries + 1):
            self.network_calls += 1
            with self._paced(PUSH, pacer, urgent, within_s, reserve if attempt == 0 else 0):
                status, out, err = self._run(args) if sibling is None else \
                    sibling.push(args, self.run)
            if status == 0:
                self.reached = True
                if not read_back or self._seen_landed(updates, atomic, landed):
                    return PushResult(True)
                uncertain, err = True, _NOT_SEEN
                if attempt < self.retries:
                    delay = self._pause(delay)
                continue
            # refs reported refused: an answer. (Over HTTP a lost answer prints "Done" too.)
            if any(line.startswith("!") for line in out.splitlines()):
                self.reached = True
                refused = refused_refs(out)
                raise_host_rule(refused, err)
                refused = {self.from_remote(ref) or ref: why for ref, why in refused.items()}
                if not refused and attempt < self.retries:  # busy: nothing changed, try again
                    log.info("push %s; retrying", busy_reason(out))
                    delay = self._pause(delay)
                    continue
                if uncertain and self._landed(updates, landed, atomic):
                    return PushResult(True)
                log.debug("push refused: %s", redact(out.strip()))
                return PushResult(False, refused)
            if not self._worth_retrying(err):
                raise _error_class(err)(redact(diagnose(err).message("push")))
            uncertain = True
            if attempt < self.retries:
                delay = self._back_off("push", err, delay)
        if err != _NOT_SEEN:
            self.unreachable_at = time.monotonic()
        if self._landed(updates, landed, atomic):
            return PushResult(True)
        raise RemoteError(redact(f"push failed after {self.retries + 1} attempts: {_cause(err)}"))

    def _sibling(self) -> Optional[PushDir]:
        """The sibling a push runs in (:mod:`.pushdir`): only for a slim copy over smart HTTP,
        and only for values known here by their ids (the sibling has no refs)."""
        git_dir = self.path / ".git"
        if not PushDir.wanted(git_dir, self.remote_url()):
            return None
        if self._push_dir is None:
            self._push_dir = PushDir(git_dir)
        return self._push_dir

    def _landed(self, updates: Sequence[RefUpdate], landed: Optional[Callable[[], bool]],
                atomic: bool = True) -> bool:
        """Whether a push whose answer was lost was applied after all."""
        if landed is None:
            return self._already_applied(updates, atomic)
        try:
            return landed()
        except RemoteError as exc:
            raise RemoteError(f"the outcome of a push is unknown: {exc}") from None

    def _already_applied(self, updates: Sequence[RefUpdate], atomic: bool = True) -> bool:
        try:
            return self._read_back(updates, atomic)
        except RemoteError:
            return False

    def _read_back(self, updates: Sequence[RefUpdate], atomic: bool) -> bool:
        """Whether the pushed refs, read back (one ``ls-remote`` of just those), show the push
        of ``updates`` landed (:func:`~.verify.seen_landed`); raises :class:`RemoteError`."""
        current = self.ls_remote(*(u.ref for u in updates))
        return seen_landed(updates, self._values(updates), current, atomic)

    def _seen_landed(self, updates: Sequence[RefUpdate], atomic: bool,
                     landed: Optional[Callable[[], bool]]) -> bool:
        """Whether a push the host answered "ok" landed: at once where the host is trusted
        (:func:`~.verify.verifies`); else when the refs read back show it
        (:func:`~.verify.seen_landed`) or, failing that, ``landed()`` does. The read is paced
        as any (part of the hold while the worker holds the lock)."""
        if not verifies(self.remote_url()):
            return True
        self.verified_pushes += 1
        try:
            if self._read_back(updates, atomic) or (landed is not None and landed()):
                return True
        except RemoteError as exc:
            log.warning("could not read back a push answered ok (%s); pushing again",
                        redact(str(exc)))
            return False
        self.misreported_pushes += 1
        log.warning("%s; pushing again (%s)", _NOT_SEEN,
                    redact(", ".join(u.ref for u in updates))[:300])
        return False

    def answers_trusted(self) -> bool:
        """Whether a push this host answers "ok" is taken as applied without reading it back
        (:func:`~.verify.verifies`: a remote on this machine, or ``DISTRIBUTE_VERIFY_PUSHES``)."""
        return not verifies(self.remote_url())

    def _values(self, updates: Sequence[RefUpdate]) -> list[Optional[str]]:
        """The shas ``updates`` put (``None``: a deletion)."""
        return [None if not u.new else u.new if _SHA.match(u.new) else self._sha_of(u.new)
                for u in updates]

    def _sha_of(self, rev: str) -> Optional[str]:
        answer = self.cat(f"{rev}^{{object}}")
        if answer is not None:
            return answer[0][0] if answer[0] else None
        status, out, _ = self._run(["rev-parse", "--verify", "--quiet", "--end-of-options",
                                    f"{rev}^{{object}}"])
        return out.strip() if status == 0 and out.strip() else None
