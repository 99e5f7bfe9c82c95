"""Running git: the environment of every git process and a runner bound to one directory."""
from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Optional, Union

import git  # GitPython

from ..exceptions import DistributeError, RemoteError
from ..redact import redact
from ..settings import flag_setting, text_setting
from . import faults, ssh
from .catfile import CatFile, Header
from .loose import objects_dir, write_object

log = logging.getLogger(__name__)

#: Transports allowed by default; ``ext::`` and other command-running helpers are refused.
ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
#: Commands that get ``protocol.version=0`` over ``git://`` (not push: git pushes with v0 whatever
#: the setting, and a push from a partial copy may fetch missing files on its own, which needs v2).
NETWORK_COMMANDS = ("fetch", "ls-remote", "clone")
#: The oldest git whose ``push --atomic`` is all-or-nothing on every transport: before 2.24,
#: pushes over smart HTTP did not pass the atomic capability on to the server ("remote-curl: pass
#: on atomic capability to remote side"), so one refused ref could leave the others applied.
MIN_GIT = (2, 24)
_git_checked = False


class _RedactingFilter(logging.Filter):
    """GitPython logs commands and their output; make sure no credential survives in them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


logging.getLogger("git.cmd").addFilter(_RedactingFilter())


def git_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The environment for every git process: no prompts, no command-running transports.

    Unless the user chose an ssh command (``GIT_SSH_COMMAND``, ``GIT_SSH``, ``core.sshCommand``)
    or set ``DISTRIBUTE_SSH_REUSE=0``, ssh remotes share one OpenSSH connection per host between
    git commands (ControlMaster), which saves the connection set-up on every command.
    """
    env = dict(os.environ)
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", LC_ALL="C", GIT_PROTOCOL_FROM_USER="0")
    env.setdefault("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
    if extra:
        env.update(extra)
    ssh_command = _ssh_reuse_command(env)
    if ssh_command:
        env["GIT_SSH_COMMAND"] = ssh_command
    return env


class GitProcess:
    """Runs git in one directory with :func:`git_env` plus the committer identity ``name``.

    :meth:`git`, :meth:`run` and :meth:`run_bytes` take git command lines: only the git layer
    (``distribute/repo/``) calls them; the layers above call the named operations of
    :class:`~distribute.repo.clone.Clone` (``tests/test_layers.py`` checks).

    Counts the processes it started (``processes``) and those that talked to the remote
    (``network_calls``, kept by the transport), for benchmarks. Every command passes through the
    fault seam of :mod:`distribute.repo.faults` (inert unless a test installs an injector).
    """

    def __init__(self, path: os.PathLike[str] | str, name: str = "distribute") -> None:
        check_git_version()
        self.path = Path(path)
        #: The committer identity: a worker's name (how the fault seam tells workers apart).
        self.name = name
        self.network_calls = 0
        self.processes = 0
        self._env = git_env({
            "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": f"{name}@distribute",
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": f"{name}@distribute",
        })
        self._git = git.Git(str(self.path))
        #: The long-lived readers of :meth:`cat` (names only, and contents), made on first use.
        self._readers: dict[bool, CatFile] = {}
        #: Where :meth:`store` writes objects (``False``: leave it to git), once known.
        self._objects: Union[Path, bool, None] = None  # (never True)
        self._protocol: list[str] = []
        #: ``origin``'s URL once read (a checkpoint and a finish ask for it: no git process each
        #: time); forgotten when a command of this runner changes the copy's remotes.
        self._origin_url: Optional[str] = None
        #: ``origin``'s URL when this runner was made (``None``: no copy or no remote yet).
        self.origin_url = self.remote_url() if (self.path / ".git").is_dir() else None
        if (self.origin_url or "").startswith("git://"):
            # git:// with protocol v2 loses ~40 ms per request to small-packet delays; v0 does not.
            # (Only for our own round trips: the fetches git makes on its own for a partial
            # clone's missing files need v2, which lets them ask for any object.)
            self._protocol = ["-c", "protocol.version=0"]

    def git(self, *args: str, check: bool = True) -> str:
        """Run a local git command and return its stdout (stripped of the last newline)."""
        status, out, err = self._run(list(args))
        if check and status != 0:
            raise RemoteError(redact(f"git {args[0]} failed: {err.strip() or out.strip()}"))
        return out

    def run(self, *args: str, index: Optional[str] = None, stdin: Optional[str] = None
            ) -> tuple[int, str, str]:
        """Run a local git command; return ``(status, stdout, stderr)`` without raising.
        ``index`` is another index file to use (``GIT_INDEX_FILE``); ``stdin`` its input."""
        return self._run(list(args), index, stdin)

    def run_bytes(self, *args: str, stdin: bytes = b"") -> tuple[int, bytes, str]:
        """Run a local git command with binary input and output (``cat-file --batch``)."""
        self.processes += 1
        injector = faults.installed()
        if injector is None:
            return self._execute_bytes(list(args), stdin)
        output = [b""]

        def run() -> tuple[int, str, str]:
            status, output[0], err = self._execute_bytes(list(args), stdin)
            return status, "", err

        status, _, err = injector.around(self, list(args), run)
        return status, output[0], err

    def _execute_bytes(self, args: list[str], stdin: bytes) -> tuple[int, bytes, str]:
        with tempfile.TemporaryFile() as stream:
            stream.write(stdin)
            stream.seek(0)
            status, out, err = self._git.execute(
                ["git", *args], istream=stream, with_extended_output=True, with_exceptions=False,
                env=self._env, stdout_as_string=False, strip_newline_in_stdout=False,
                start_new_session=True)
        return int(status or 0), bytes(out or b""), str(err)

    def _run(self, args: list[str], index: Optional[str] = None,
             stdin: Optional[str] = None) -> tuple[int, str, str]:
        self.processes += 1
        if self._origin_url is not None and _changes_remotes(args):
            self._origin_url = None
        injector = faults.installed()
        if injector is None:
            return self._execute(args, index, stdin)
        return injector.around(self, args, lambda: self._execute(args, index, stdin))

    def _execute(self, args: list[str], index: Optional[str],
                 stdin: Optional[str]) -> tuple[int, str, str]:
        env = self._env if index is None else {**self._env, "GIT_INDEX_FILE": index}
        try:
            status, out, err = self._git.execute(
                ["git", *(self._protocol if args[0] in NETWORK_COMMANDS else ()), *args],
                with_extended_output=True, with_exceptions=False, env=env,
                istream=None if stdin is None else _text_stream(stdin),
                start_new_session=True)  # a terminal's Ctrl-C must not cut a push short
        except git.GitCommandNotFound as exc:  # pragma: no cover - git is a hard requirement
            raise RemoteError("git is not installed") from exc
        return int(status or 0), str(out), str(err)

    def cat(self, name: str, contents: bool = False
            ) -> Optional[tuple[Optional[Header], bytes]]:
        """Ask the copy's long-lived ``git cat-file`` about ``name`` (any rev, ``rev:path``…):
        ``(header, content)`` with ``header`` ``(sha, kind, size)`` or ``None`` when there is no
        such object, ``content`` the object's (only if ``contents``). ``None`` when it could not
        be asked (see :mod:`.catfile`): run a git command instead. Each question passes the fault
        seam as a ``cat-file`` command."""
        reader = self._readers.get(contents)
        if reader is None:
            reader = self._readers[contents] = CatFile(str(self.path), self._env, contents)
        started = reader.started
        answer: list[Optional[tuple[Optional[Header], bytes]]] = [None]

        def run() -> tuple[int, str, str]:
            answer[0] = self._ask(reader, name)
            return 0, "", ""

        injector = faults.installed()
        try:
            if injector is None:
                run()
            else:
                injector.around(self, ["cat-file", "--batch" if contents else "--batch-check"],
                                run)
        finally:
            self.processes += reader.started - started
        return answer[0]

    def store(self, kind: str, content: bytes) -> Optional[str]:
        """Write a small object of ``kind`` into the copy without a git process (:mod:`.loose`);
        its sha, or ``None`` when the copy is not one where that is done (ask git instead)."""
        if self._objects is None:
            self._objects = objects_dir(self.path) or False
        if isinstance(self._objects, bool):
            return None
        return write_object(self._objects, kind, content)

    def _ask(self, reader: CatFile, name: str) -> Optional[tuple[Optional[Header], bytes]]:
        return reader.ask(name)

    def close_readers(self) -> None:
        """Stop the long-lived readers of :meth:`cat` (the next question starts them again)."""
        for reader in self._readers.values():
            reader.close()

    def remote_url(self) -> Optional[str]:
        """The URL of ``origin``, or ``None`` when the copy has no such remote. Read once: later
        calls cost no git process until a command of this runner changes the copy's remotes
        (``git remote ...``, ``git config remote.origin.url ...``)."""
        if self._origin_url is None:
            status, out, _ = self._run(["config", "--get", "remote.origin.url"])
            if status != 0:
                return None
            self._origin_url = out.strip()
        return self._origin_url


def _changes_remotes(args: list[str]) -> bool:
    """Whether ``git *args`` may change the copy's remotes (and so origin's URL)."""
    command = faults.command_of(args)
    return command == "remote" or (command == "config" and "--get" not in args and any(
        a.lower() == "remote.origin.url" or a.endswith("-section") for a in args))


def _text_stream(text: str) -> BinaryIO:
    """A readable file holding ``text``, for a git process's standard input."""
    stream = tempfile.TemporaryFile()
    stream.write(text.encode("utf-8", "surrogateescape"))
    stream.seek(0)
    return stream


def check_git_version() -> None:
    """Refuse to work with a git older than :data:`MIN_GIT` (asked once per process)."""
    global _git_checked
    if _git_checked:
        return
    try:
        out = str(git.Git(os.sep).execute(["git", "--version"], env=git_env()))
    except (git.GitCommandNotFound, git.GitCommandError) as exc:
        raise RemoteError(f"git is not installed or does not run: {exc}") from None
    found = re.search(r"(\d+)\.(\d+)", out)
    version = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    if version < MIN_GIT:
        raise DistributeError(
            f"{out.strip() or 'this git'} is too old: git-distribute needs git "
            f"{MIN_GIT[0]}.{MIN_GIT[1]} or newer, whose pushes are all-or-nothing on every "
            "transport (older ones could apply part of a push over HTTP)")
    _git_checked = True


# ---- ssh connection reuse (git_env) -----------------------------------------------------------
#: Whether ``core.sshCommand`` is set: asked once per process (``None`` until then).
_core_ssh_command: Optional[bool] = None


def _ssh_reuse_command(env: dict[str, str]) -> Optional[str]:
    """A ``GIT_SSH_COMMAND`` sharing one connection per host (ControlMaster), or ``None`` when the
    user chose an ssh command, ``DISTRIBUTE_SSH_REUSE`` is off, or no safe socket directory exists.
    """
    if env.get("GIT_SSH_COMMAND") or env.get("GIT_SSH"):
        return None
    if not flag_setting("DISTRIBUTE_SSH_REUSE"):
        return None
    control_dir = ssh.control_dir(text_setting("DISTRIBUTE_SSH_CONTROL_DIR"))
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
