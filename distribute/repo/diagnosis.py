"""Reading git's failures against the remote: what went wrong, and whether retrying helps.

:func:`diagnose` classifies git's stderr (:class:`Failure`); :mod:`.transport` uses it to
decide what to retry and which error to raise (and re-exports :func:`diagnose`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..exceptions import HostUnsupportedError, NotARemoteError, RemoteError
from ..redact import redact

#: Today's test for "the network, not the remote, failed": used once the remote was reached.
_TRANSPORT_HINTS = (
    "could not read from remote", "unable to access", "connection refused", "connection reset",
    "early eof", "the remote end hung up", "timed out", "could not resolve", "failed to connect",
    "unable to connect", "broken pipe", "unexpected disconnect", "protocol error",
)
_NOT_A_REMOTE_HINTS = (
    "does not appear to be a git repository", "not found", "not exported", "unsupported protocol",
    "not allowed", "not a git repository", "does not exist", "no such remote",
    "repository not found", "no such file",
)
#: (kind, phrases of git, ssh, curl or the server) for failures that retrying cannot fix; the
#: first kind that matches wins.
_PERMANENT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("no-atomic", ("does not support --atomic push",)),
    ("not-found", ("repository not found", "does not appear to be a git repository",
                   "not a git repository", "not exported", "could not be found",
                   "' not found", "' does not exist")),
    ("not-allowed", ("not allowed", "unsupported protocol")),
    ("unknown-host", ("could not resolve hostname", "could not resolve host:", "unable to look up",
                      "name or service not known", "nodename nor servname",
                      "no address associated with hostname")),
    ("host-key", ("host key verification failed", "remote host identification has changed")),
    ("auth", ("permission denied (", "permission denied, please", "authentication failed",
              "could not read username", "could not read password", "access denied", "denied to ",
              "not authorized", "invalid username or password",
              "write access to repository not granted")),
)
#: Failures worth retrying: the network or the server had a bad moment.
_TRANSIENT = _TRANSPORT_HINTS + (
    "temporary failure in name resolution", "try again", "couldn't connect",
    "network is unreachable", "no route to host", "connection closed",
    "kex_exchange_identification", "rpc failed",
    "gnutls", "openssl", "ssl_error", "ssl connect", "tls connect", "handshake", "http/2",
    "operation too slow", "transfer closed",
)
_FATAL = re.compile(r"^(fatal|error): ")
_HTTP_STATUS = re.compile(r"(?:returned error: |RPC failed; HTTP )(\d{3})")
_BOILERPLATE = ("could not read from remote repository", "please make sure you have the correct",
                "and the repository exists")
_PROGRESS = re.compile(r"^remote: *(counting|compressing|enumerating|total|resolving|"
                       r"processing|writing)\b", re.IGNORECASE)
_HINTS = {
    "no-atomic": "this host does not support atomic pushes (git push --atomic), which the lock "
                 "protocol needs to move the lock, master and a job's refs all or nothing; use a "
                 "host or git server that supports them",
    "not-found": "no repository there: check the path; a new remote is an empty bare repository "
                 "made with git init --bare, a hosted one must be visible to the key or token",
    "not-allowed": "not a usable git remote",
    "unknown-host": "unknown host: check the host name, and that this machine is online",
    "host-key": "the host's ssh key is unknown or changed: check it, then add it to "
                "~/.ssh/known_hosts",
    "auth": "access refused: check the ssh key or token and its access to this repository",
}


@dataclass(frozen=True)
class Failure:
    """What a failed git command against the remote says: git's ``cause`` (the most telling
    line or two of its stderr), the ``kind`` of failure, and whether retrying may help."""

    #: "no-atomic", "not-found", "not-allowed", "unknown-host", "host-key", "auth", "transient"
    #: or "other"
    kind: str
    cause: str

    @property
    def permanent(self) -> bool:
        """Retrying cannot fix it: an unknown host, refused credentials, no repository there."""
        return self.kind in _HINTS

    @property
    def transient(self) -> bool:
        """The network or the server had a bad moment (refused, reset, timeout, 5xx, 429)."""
        return self.kind == "transient"

    def message(self, what: str) -> str:
        """One sentence for the user: what failed, git's cause, and what to do."""
        if self.permanent:
            return f"{what} failed: {self.cause} ({_HINTS[self.kind]})"
        return f"{what} failed: {self.cause}"


def diagnose(err: str) -> Failure:
    """Classify git's stderr of a failed command against the remote (see :class:`Failure`)."""
    low = err.lower()
    cause = _cause(err)
    status = _HTTP_STATUS.search(err)
    code = int(status.group(1)) if status else 0
    if code in (401, 403, 407):
        return Failure("auth", cause)
    if code == 404:
        return Failure("not-found", cause)
    for kind, phrases in _PERMANENT:
        if any(p in low for p in phrases) and "temporary failure" not in low:
            return Failure(kind, cause)
    if code in (408, 429) or code >= 500 or any(hint in low for hint in _TRANSIENT):
        return Failure("transient", cause)
    return Failure("other", cause)


def _cause(err: str) -> str:
    """The lines of git's stderr that say why: the specific ones (ssh's, curl's, the server's
    ``remote:`` explanation), not git's closing "Could not read from remote repository"."""
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    useful = [line for line in lines if not any(b in line.lower() for b in _BOILERPLATE)]
    phrases = [p for _, group in _PERMANENT for p in group] + list(_TRANSIENT) + ["returned error"]
    telling = [line for line in useful
               if any(p in line.lower() for p in phrases)
               or (line.startswith("remote:") and not _PROGRESS.match(line))]
    fatal = [line for line in useful if line.startswith(("fatal:", "error:"))]
    chosen = telling[:2] or fatal[:1] or useful[:1] or lines[:1] or ["(no message)"]
    return " / ".join(dict.fromkeys(_FATAL.sub("", line)[:300] for line in chosen))

def _is_transport_error(err: str) -> bool:
    """A failure worth retrying once the remote was reached: the remote could not be reached,
    rather than answered "no" (a running worker's outage rule)."""
    low = err.lower()
    if any(hint in low for hint in _NOT_A_REMOTE_HINTS) or "authentication failed" in low:
        return False
    return any(hint in low for hint in _TRANSPORT_HINTS)


def _error_class(err: str) -> type[RemoteError]:
    """:class:`HostUnsupportedError` for what the host can never do, else :class:`RemoteError`."""
    return HostUnsupportedError if diagnose(err).kind == "no-atomic" else RemoteError


def _classify(what: str, err: str) -> RemoteError:
    """The error to raise for a failure that is not retried (any more)."""
    failure = diagnose(err)
    if failure.kind in ("not-found", "not-allowed") or any(
            hint in err.lower() for hint in _NOT_A_REMOTE_HINTS):
        return NotARemoteError(redact(failure.message(what)))
    return _error_class(err)(redact(failure.message(what)))
