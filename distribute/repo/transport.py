"""Talking to the remote: fetch, ls-remote and compare-and-swap pushes, with retries.

These are the atomic operations everything else is built on:

* :meth:`Transport.fetch` — bring ``master`` and the coordination refs up to date;
* :meth:`Transport.ls_remote` — read a few refs cheaply (one round trip, no objects);
* :meth:`Transport.push_result` / :meth:`Transport.push` — a compare-and-swap push of one or many
  refs, ``--atomic`` so that either every ref moves or none does, with the server's verdict per ref.

Transport failures are retried with jittered exponential back-off (``DISTRIBUTE_NET_RETRIES``). A
push whose outcome is unknown (the connection broke after the server may have applied it) is
settled by reading the refs back.
"""
from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..exceptions import NotARemoteError, NotInitializedError, RemoteError
from ..protocol import FETCH_REFSPECS
from ..redact import redact
from ..settings import count
from .process import GitProcess

log = logging.getLogger(__name__)

_SHA = re.compile(r"^[0-9a-f]{40}$")
_TRANSPORT_HINTS = (
    "could not read from remote", "unable to access", "connection refused", "connection reset",
    "early eof", "the remote end hung up", "timed out", "could not resolve", "failed to connect",
    "unable to connect", "broken pipe", "unexpected disconnect", "protocol error",
)
_NOT_A_REMOTE_HINTS = (
    "does not appear to be a git repository", "not found", "not exported", "unsupported protocol",
    "not allowed", "not a git repository", "does not exist", "no such remote", "invalid",
    "repository not found", "no such file",
)


@dataclass(frozen=True)
class RefUpdate:
    """One ref to change in a push.

    ``new`` is the object to point at (``None`` deletes the ref). ``expect`` is the value the ref must
    have on the remote for the push to apply: a sha, ``""`` for "must not exist", or ``None`` to
    overwrite unconditionally.
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
    """``DISTRIBUTE_NET_RETRIES`` (default 8): retries of a git command that could not connect."""
    return count("DISTRIBUTE_NET_RETRIES", 8, maximum=100)


class Transport(GitProcess):
    """A :class:`GitProcess` in a local copy whose ``origin`` is the shared remote."""

    def __init__(self, path: object, name: str = "distribute", retries: Optional[int] = None,
                 backoff_s: float = 0.25, backoff_max_s: float = 20.0) -> None:
        super().__init__(path, name)  # type: ignore[arg-type]
        self.retries = retries if retries is not None else net_retries()
        #: When (monotonic) the remote last could not be reached; 0.0 if never.
        self.unreachable_at = 0.0
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s

    def _network(self, args: list[str], what: str) -> tuple[int, str, str]:
        """Run a command that talks to the remote, retrying transport failures with back-off."""
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            self.network_calls += 1
            status, out, err = self._run(args)
            if status == 0 or not _is_transport_error(err):
                if status != 0 and what in ("clone", "ls-remote", "fetch"):
                    raise _classify(what, err)
                return status, out, err
            if attempt == self.retries:
                break
            delay = self._back_off(what, err, delay)
        self.unreachable_at = time.monotonic()
        raise RemoteError(redact(f"{what} failed after {self.retries + 1} attempts: {_first_line(err)}"))

    def _back_off(self, what: str, err: str, delay: float) -> float:
        """Say that ``what`` failed, sleep a jittered ``delay``; return the next (doubled) delay."""
        self.unreachable_at = time.monotonic()
        log.warning("%s failed (%s); retrying in %.1fs", what, redact(_first_line(err)), delay)
        time.sleep(delay * random.uniform(0.5, 1.0))
        return min(delay * 2, self.backoff_max_s)

    def fetch(self, *refspecs: str, depth: Optional[int] = None,
              deepen: Optional[int] = None) -> None:
        """Fetch ``master`` and the coordination refs (plus ``refspecs``) into ``refs/remotes/origin``.

        ``depth`` limits the history fetched (new shallow copies); ``deepen`` extends the history
        of a shallow copy by that many commits (a no-op for a complete one).
        """
        limit = [f"--depth={depth}"] if depth else []
        if deepen and (self.path / ".git" / "shallow").exists():
            limit = [f"--deepen={deepen}"]
        try:
            self._network(["fetch", "--quiet", "--prune", "--no-tags", *limit, "origin",
                           *FETCH_REFSPECS, *refspecs], what="fetch")
        except RemoteError as exc:
            if "couldn't find remote ref refs/heads/master" in str(exc):
                raise NotInitializedError(
                    "the remote has no master branch with a job ledger; initialise it with "
                    "`distribute init URL` or distribute.init_remote(url)") from None
            raise

    def ls_remote(self, *patterns: str) -> dict[str, str]:
        """Return ``{ref: sha}`` for the remote refs matching ``patterns`` (one round trip)."""
        _, out, _ = self._network(["ls-remote", "origin", *patterns], what="ls-remote")
        refs: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if _SHA.match(sha):
                refs[ref] = sha
        return refs

    def push(self, updates: Sequence[RefUpdate]) -> bool:
        """Apply ``updates`` atomically; ``True`` if applied, ``False`` if any lease or ref was
        refused (see :meth:`push_result` for which)."""
        return self.push_result(updates).applied

    def push_result(self, updates: Sequence[RefUpdate]) -> PushResult:
        """Apply ``updates`` on the remote atomically and say which refs were refused, if any.

        Transport errors are retried. When a retry is refused after an earlier attempt may have
        landed, the refs are read back: if they already hold our values, the push counts as applied.
        """
        args = ["push", "--porcelain", "--atomic", "--no-verify"]
        args += [f"--force-with-lease={u.ref}:{u.expect}" for u in updates if u.expect is not None]
        args.append("origin")
        args += [f"{'+' if u.expect is None and u.new else ''}{u.new or ''}:{u.ref}" for u in updates]
        uncertain = False
        delay = self.backoff_s
        err = ""
        for attempt in range(self.retries + 1):
            self.network_calls += 1
            status, out, err = self._run(args)
            if status == 0:
                return PushResult(True)
            if "Done" in out or any(line.startswith("!") for line in out.splitlines()):
                if uncertain and self._already_applied(updates):
                    return PushResult(True)
                log.debug("push refused: %s", redact(out.strip()))
                return PushResult(False, _refused_refs(out))
            if not _is_transport_error(err):
                raise RemoteError(redact(f"push failed: {_first_line(err)}"))
            uncertain = True
            if attempt < self.retries:
                delay = self._back_off("push", err, delay)
        self.unreachable_at = time.monotonic()
        if self._already_applied(updates):
            return PushResult(True)
        raise RemoteError(redact(f"push failed after {self.retries + 1} attempts: {_first_line(err)}"))

    def _already_applied(self, updates: Sequence[RefUpdate]) -> bool:
        try:
            current = self.ls_remote(*(u.ref for u in updates))
        except RemoteError:
            return False
        return all(current.get(u.ref) == self._sha_of(u.new) if u.new else u.ref not in current
                   for u in updates)

    def _sha_of(self, rev: str) -> Optional[str]:
        status, out, _ = self._run(["rev-parse", "--verify", "--quiet", "--end-of-options",
                                    f"{rev}^{{object}}"])
        return out.strip() if status == 0 and out.strip() else None


def _refused_refs(porcelain: str) -> dict[str, str]:
    """``{ref: reason}`` from ``git push --porcelain`` output, leaving out the refs refused only
    because the atomic push as a whole failed."""
    refused = {}
    for line in porcelain.splitlines():
        if not line.startswith("!"):
            continue
        parts = line.split("\t")
        if len(parts) >= 3 and "atomic push failed" not in parts[2]:
            refused[parts[1].rpartition(":")[2]] = parts[2].strip()
    return refused


def _first_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    fatal = [l for l in lines if l.startswith(("fatal:", "error:"))]
    return (fatal or lines or ["(no message)"])[0]


def _is_transport_error(err: str) -> bool:
    """A failure worth retrying: the remote could not be reached, rather than answered "no"."""
    low = err.lower()
    if any(hint in low for hint in _NOT_A_REMOTE_HINTS) or "authentication failed" in low:
        return False
    return any(hint in low for hint in _TRANSPORT_HINTS)


def _classify(what: str, err: str) -> RemoteError:
    low = err.lower()
    if any(hint in low for hint in _NOT_A_REMOTE_HINTS):
        return NotARemoteError(redact(f"{what}: not a git remote: {_first_line(err)}"))
    return RemoteError(redact(f"{what} failed: {_first_line(err)}"))
