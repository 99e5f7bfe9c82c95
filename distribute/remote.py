"""The only module that runs git.

A :class:`Clone` is a local copy of the shared remote (always called ``origin``). Its network
operations are the atomic primitives everything else is built on:

* :meth:`Clone.fetch` — bring ``master`` and the coordination refs up to date;
* :meth:`Clone.ls_remote` — read a few refs cheaply (one round trip, no objects);
* :meth:`Clone.push` — a compare-and-swap push of one or many refs, ``--atomic`` so that either
  every ref moves or none does.

Transport failures are retried with jittered exponential back-off. A push whose outcome is unknown
(the connection broke after the server may have applied it) is resolved by reading the refs back.
"""
from __future__ import annotations

import logging
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import git  # GitPython

from .exceptions import NotARemoteError, NotInitializedError, RemoteError
from .redact import redact

log = logging.getLogger(__name__)


class _RedactingFilter(logging.Filter):
    """GitPython logs commands and their output; make sure no credential survives in them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


logging.getLogger("git.cmd").addFilter(_RedactingFilter())

#: Transports allowed by default; ``ext::`` and other command-running helpers are refused.
ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
ZERO_SHA = "0" * 40
ORIGIN_MASTER = "refs/remotes/origin/master"
_INCLUDED_FILE = "distribute-included-paths"
_SHA = re.compile(r"^[0-9a-f]{40}$")
# (not push: git pushes with v0 whatever the setting, and a push from a partial copy may fetch
# missing files on its own, which must be allowed v2)
_V0_COMMANDS = ("fetch", "ls-remote", "clone")
_TRANSPORT_HINTS = (
    "could not read from remote", "unable to access", "connection refused", "connection reset",
    "early eof", "the remote end hung up", "timed out", "could not resolve", "failed to connect",
    "unable to connect", "broken pipe", "unexpected disconnect", "protocol error",
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


def _validate_url(url: str) -> str:
    if not url or url.startswith("-") or any(c in url for c in "\n\r\0"):
        raise NotARemoteError(f"not a usable git remote URL: {redact(url)!r}")
    return url


def git_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The environment for every git process: no prompts, no command-running transports.

    Unless the user chose an ssh command (``GIT_SSH_COMMAND``, ``GIT_SSH``, ``core.sshCommand``)
    or set ``DISTRIBUTE_SSH_REUSE=0``, ssh remotes share one OpenSSH connection per host between
    git commands (ControlMaster), which saves the connection set-up on every command.
    """
    env = dict(os.environ)
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_ASKPASS="true",
        LC_ALL="C",
        GIT_PROTOCOL_FROM_USER="0",
    )
    env.setdefault("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
    if extra:
        env.update(extra)
    ssh_command = _ssh_reuse_command(env)
    if ssh_command:
        env["GIT_SSH_COMMAND"] = ssh_command
    return env


class Clone:
    """A local copy of the remote; every git command of the package goes through it."""

    def __init__(self, path: os.PathLike[str] | str, name: str = "distribute",
                 retries: Optional[int] = None, backoff_s: float = 0.25,
                 backoff_max_s: float = 20.0) -> None:
        self.path = Path(path)
        self.retries = retries if retries is not None else _default_retries()
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        #: Number of git processes that talked to the remote, and of all git processes.
        self.network_calls = 0
        self.processes = 0
        self._env = git_env({
            "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": f"{name}@distribute",
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": f"{name}@distribute",
        })
        self._git = git.Git(str(self.path))
        self._empty_tree: Optional[str] = None
        self._protocol: list[str] = []
        if (self.path / ".git").is_dir() and (self.remote_url() or "").startswith("git://"):
            # git:// with protocol v2 loses ~40 ms per request to small-packet delays; v0 does not.
            # (Only for our own round trips: the fetches git makes on its own for a partial
            # clone's missing files need v2, which lets them ask for any object.)
            self._protocol = ["-c", "protocol.version=0"]

    # ---- creation -----------------------------------------------------------------------------
    @classmethod
    def clone(cls, url: str, path: os.PathLike[str] | str, *, slim: bool = False,
              **kwargs: object) -> "Clone":
        """Clone ``url`` into ``path`` (which must not exist) and return the :class:`Clone`.

        ``slim`` makes the copy a worker needs and no more: ``master``'s last commit only (shallow),
        no file contents but those checked out (partial clone), and a sparse checkout of the
        top-level files (the ledger). Later fetches bring the new commits with their files up to
        1 MB; anything else is fetched from the remote when git needs it.
        """
        _validate_url(url)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not slim:
            probe = cls(target.parent, **kwargs)  # type: ignore[arg-type]
            probe._network(["clone", "--quiet", "--no-checkout", "--origin", "origin", "--", url,
                            str(target)], what="clone")
            return cls(target, **kwargs)  # type: ignore[arg-type]
        clone = cls._slim(url, target, partial=True, **kwargs)
        if clone is None:  # the server cannot send single files later: take them all now
            shutil.rmtree(target)
            clone = cls._slim(url, target, partial=False, **kwargs)
        assert clone is not None
        return clone

    @classmethod
    def _slim(cls, url: str, target: Path, partial: bool, **kwargs: object) -> Optional["Clone"]:
        """A shallow sparse copy, partial if ``partial``; ``None`` if the server turned out unable
        to send missing files on demand (it speaks only protocol v0 and does not allow it)."""
        cls(target.parent, **kwargs).git("init", "--quiet", "--", str(target))  # type: ignore[arg-type]
        clone = cls(target, **kwargs)  # type: ignore[arg-type]
        clone.git("remote", "add", "origin", "--", url)
        clone.git("sparse-checkout", "set", "--cone")
        settings = [("advice.updateSparsePath", "false"), ("fetch.showForcedUpdates", "false")]
        if partial:
            settings += [("remote.origin.promisor", "true"),
                         ("remote.origin.partialclonefilter", "blob:none")]
        for key, value in settings:
            clone.git("config", key, value)
        clone = cls(target, **kwargs)  # type: ignore[arg-type]  # (sees the URL: git:// tuning)
        try:
            clone.fetch(depth=1)
        except NotInitializedError:
            return clone  # a new remote: the worker says so; later fetches are whole and small
        if partial:
            status, _, err = clone.run("checkout", "--quiet", "--detach", ORIGIN_MASTER)
            if status != 0 and "promisor remote" in err:
                log.info("%s cannot send files on demand; cloning without a filter", redact(url))
                return None
            # later fetches bring the blobs of new commits (ledgers, results) in the same round
            # trip, instead of one request per checkout
            clone.git("config", "remote.origin.partialclonefilter", "blob:limit=1m")
        return clone

    # ---- running git --------------------------------------------------------------------------
    def git(self, *args: str, check: bool = True) -> str:
        """Run a local git command in the clone and return its stdout (stripped of the last newline)."""
        status, out, err = self._run(list(args))
        if check and status != 0:
            raise RemoteError(redact(f"git {args[0]} failed: {err.strip() or out.strip()}"))
        return out

    def run(self, *args: str) -> tuple[int, str, str]:
        """Run a local git command; return ``(status, stdout, stderr)`` without raising."""
        return self._run(list(args))

    def _run(self, args: list[str]) -> tuple[int, str, str]:
        self.processes += 1
        try:
            status, out, err = self._git.execute(
                ["git", *(self._protocol if args[0] in _V0_COMMANDS else ()), *args],
                with_extended_output=True,
                with_exceptions=False, env=self._env,
            )
        except git.GitCommandNotFound as exc:  # pragma: no cover - git is a hard requirement
            raise RemoteError("git is not installed") from exc
        return int(status or 0), str(out), str(err)

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
        raise RemoteError(redact(f"{what} failed after {self.retries + 1} attempts: {_first_line(err)}"))

    def _back_off(self, what: str, err: str, delay: float) -> float:
        """Say that ``what`` failed, sleep a jittered ``delay``; return the next (doubled) delay."""
        log.warning("%s failed (%s); retrying in %.1fs", what, redact(_first_line(err)), delay)
        time.sleep(delay * random.uniform(0.5, 1.0))
        return min(delay * 2, self.backoff_max_s)

    # ---- network primitives -------------------------------------------------------------------
    def fetch(self, *refspecs: str, depth: Optional[int] = None,
              deepen: Optional[int] = None) -> None:
        """Fetch ``master`` and the coordination refs (plus ``refspecs``) into ``refs/remotes/origin``.

        ``depth`` limits the history fetched (new shallow copies); ``deepen`` extends the history
        of a shallow copy by that many commits (a no-op for a complete one).
        """
        specs = ["+refs/heads/master:refs/remotes/origin/master",
                 "+refs/distribute/*:refs/remotes/origin/distribute/*", *refspecs]
        limit = [f"--depth={depth}"] if depth else []
        if deepen and (self.path / ".git" / "shallow").exists():
            limit = [f"--deepen={deepen}"]
        args = ["fetch", "--quiet", "--prune", "--no-tags", *limit, "origin", *specs]
        try:
            self._network(args, what="fetch")
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
        """Apply ``updates`` on the remote atomically; ``True`` if applied, ``False`` if any lease failed.

        Transport errors are retried. When a retry is rejected after an earlier attempt may have
        landed, the refs are read back: if they already hold our values, the push counts as applied.
        """
        args = ["push", "--porcelain", "--atomic", "--no-verify"]
        for u in updates:
            if u.expect is not None:
                args.append(f"--force-with-lease={u.ref}:{u.expect}")
        args.append("origin")
        for u in updates:
            src = u.new or ""
            args.append(f"{'+' if u.expect is None and u.new else ''}{src}:{u.ref}")
        uncertain = False
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            self.network_calls += 1
            status, out, err = self._run(args)
            if status == 0:
                return True
            if "Done" in out or any(line.startswith("!") for line in out.splitlines()):
                if uncertain and self._already_applied(updates):
                    return True
                log.debug("push rejected: %s", redact(out.strip()))
                return False
            if not _is_transport_error(err):
                raise RemoteError(redact(f"push failed: {_first_line(err)}"))
            uncertain = True
            if attempt < self.retries:
                delay = self._back_off("push", err, delay)
        if self._already_applied(updates):
            return True
        raise RemoteError(redact(f"push failed after {self.retries + 1} attempts: {_first_line(err)}"))

    def _already_applied(self, updates: Sequence[RefUpdate]) -> bool:
        try:
            current = self.ls_remote(*(u.ref for u in updates))
        except RemoteError:
            return False
        return all(current.get(u.ref) == self.resolve(u.new) if u.new else u.ref not in current
                   for u in updates)

    # ---- local helpers ------------------------------------------------------------------------
    def resolve(self, rev: str) -> Optional[str]:
        """The sha of ``rev`` in the clone, or ``None`` if it does not exist."""
        status, out, _ = self._run(["rev-parse", "--verify", "--quiet", "--end-of-options",
                                    f"{rev}^{{object}}"])
        return out.strip() if status == 0 and out.strip() else None

    def show(self, rev: str, path: str) -> Optional[str]:
        """The text of ``path`` at ``rev``, or ``None`` if absent."""
        status, out, _ = self._run(["cat-file", "-p", f"{rev}:{path}"])
        return out if status == 0 else None

    def make_marker(self, message: str) -> str:
        """Create a parentless commit with an empty tree (used as lock and heartbeat values)."""
        if self._empty_tree is None:
            self._empty_tree = self.git("hash-object", "-t", "tree", "-w", os.devnull)
        return self.git("commit-tree", self._empty_tree, "-m", message).strip()

    def stage_all(self) -> None:
        """``git add --all``, including paths outside a sparse checkout (a job's new files)."""
        self.git("add", "--sparse", "--all")

    def sparse_paths(self) -> Optional[list[str]]:
        """The directories the user asked to check out in a sparse copy; ``None`` if not sparse."""
        if not (self.path / ".git" / "info" / "sparse-checkout").exists():
            return None
        chosen = self.path / ".git" / _INCLUDED_FILE
        return chosen.read_text(encoding="utf-8").splitlines() if chosen.exists() else []

    def set_sparse_paths(self, paths: Sequence[str], *extra: str) -> None:
        """Check out the top-level files, ``paths`` (remembered) and ``extra`` (not remembered)."""
        unique = list(dict.fromkeys(paths))
        (self.path / ".git" / _INCLUDED_FILE).write_text(
            "".join(p + "\n" for p in unique), encoding="utf-8")
        self.git("sparse-checkout", "set", "--cone", "--", *unique, *extra)

    def abort_interrupted(self) -> None:
        """Abort a merge or rebase left behind by a killed process (cheap when there is none)."""
        git_dir = self.path / ".git"
        if (git_dir / "MERGE_HEAD").exists():
            log.warning("aborting a merge left unfinished in %s", self.path)
            self.git("merge", "--abort", check=False)
        if (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists():
            log.warning("aborting a rebase left unfinished in %s", self.path)
            self.git("rebase", "--abort", check=False)

    def local_refs(self, prefix: str) -> dict[str, str]:
        """``{ref: sha}`` for local refs under ``prefix``."""
        out = self.git("for-each-ref", "--format=%(objectname) %(refname)", prefix)
        return {ref: sha for sha, _, ref in (l.partition(" ") for l in out.splitlines()) if ref}

    def remote_url(self) -> Optional[str]:
        """The URL of ``origin``, or ``None`` when the clone has no such remote."""
        status, out, _ = self._run(["config", "--get", "remote.origin.url"])
        return out.strip() if status == 0 else None


def _default_retries() -> int:
    """``DISTRIBUTE_NET_RETRIES`` (default 8): retries of a git command that could not connect."""
    from .config import get_env  # late: config is a leaf, but keep this module's imports minimal

    value = get_env("DISTRIBUTE_NET_RETRIES", "8") or "8"
    return int(value) if value.isdigit() else 8


def _first_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    fatal = [l for l in lines if l.startswith(("fatal:", "error:"))]
    return (fatal or lines or ["(no message)"])[0]


_NOT_A_REMOTE_HINTS = (
    "does not appear to be a git repository", "not found", "not exported", "unsupported protocol",
    "not allowed", "not a git repository", "does not exist", "no such remote", "invalid",
    "repository not found", "no such file",
)


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


# ---- ssh connection reuse (git_env) -----------------------------------------------------------
#: Whether ``core.sshCommand`` is set: asked once per process (``None`` until then).
_core_ssh_command: Optional[bool] = None


def _ssh_reuse_command(env: dict[str, str]) -> Optional[str]:
    """A ``GIT_SSH_COMMAND`` sharing one connection per host (ControlMaster), or ``None`` when the
    user chose an ssh command, ``DISTRIBUTE_SSH_REUSE`` is off, or no safe socket directory exists.
    """
    if env.get("GIT_SSH_COMMAND") or env.get("GIT_SSH"):
        return None
    from . import config, ssh  # late: config must not be a top-level import here

    if not config.get_flag("DISTRIBUTE_SSH_REUSE", True):
        return None
    control_dir = ssh.control_dir(config.get_env("DISTRIBUTE_SSH_CONTROL_DIR"))
    if control_dir is None or _core_ssh_command_set(env):
        return None
    return ssh.reuse_command(control_dir)


def _core_ssh_command_set(env: dict[str, str]) -> bool:
    """Whether git's ``core.sshCommand`` is set (it yields to ``GIT_SSH_COMMAND``, so we must not
    set that then); git is asked once per process."""
    global _core_ssh_command
    if _core_ssh_command is None:
        try:
            status, out, _ = git.Git(os.sep).execute(
                ["git", "config", "--get", "core.sshCommand"], with_extended_output=True,
                with_exceptions=False, env=env)
            _core_ssh_command = status == 0 and bool(str(out).strip())
        except git.GitCommandNotFound:  # pragma: no cover - git is a hard requirement
            _core_ssh_command = True
    return _core_ssh_command
