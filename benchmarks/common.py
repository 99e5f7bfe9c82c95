"""Shared helpers of the benchmarks: remotes on 127.0.0.1, plain git, timing and tables.

Remotes come from ``tests/support/gitservers.py``: ``file://``, ``git daemon``, smart HTTP and
``SshServer``, an unprivileged-port ``sshd`` on loopback with throw-away keys (only when
``/usr/sbin/sshd`` exists: ``apt-get install openssh-server``).

Transport names used by every script:

* ``file``       ``file://`` URL of a bare repository;
* ``daemon``     ``git daemon`` (git://), git's default protocol (v2);
* ``daemon-v0``  the same daemon with ``-c protocol.version=0`` for the plain-git measurements
  (the library already switches git:// to v0 by itself, so for library runs it equals ``daemon``);
* ``http``       ``git http-backend`` behind the tests' threaded HTTP server (listen backlog raised
  from Python's 5 to 128, see :data:`HTTP_BACKLOG`);
* ``ssh``        sshd on loopback, a new ssh connection per git command (what GitHub users pay);
* ``ssh-reuse``  the same sshd through one OpenSSH ControlMaster connection (ControlPersist).
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
# The library of this checkout, unless PYTHONPATH names another one (PYTHONPATH=/old/checkout
# runs a script, and its worker processes, against that version).
if os.environ.get("PYTHONPATH"):
    sys.path.append(str(ROOT))
else:
    sys.path.insert(0, str(ROOT))
from support import gitservers
from support.gitservers import (  # noqa: F401 - busiest: for the benchmarks
    GitDaemon,
    SmartHttpServer,
    SshServer,
    busiest,
    make_bare,
    ssh_available,
)

HTTP_BACKLOG = 128  # listen backlog of the smart HTTP server (Python's default is 5)
TRANSPORTS = ("file", "daemon", "daemon-v0", "http", "ssh", "ssh-reuse")

#: The environment of plain-git measurements: no prompts, fixed identity, no user config.
BASE_ENV = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_AUTHOR_NAME="bench",
                GIT_AUTHOR_EMAIL="bench@bench", GIT_COMMITTER_NAME="bench",
                GIT_COMMITTER_EMAIL="bench@bench", LC_ALL="C")


def now() -> float:
    """A clock shared by all processes of this machine (CLOCK_MONOTONIC is system-wide on Linux)."""
    return time.monotonic()


class Remote:
    """One bare repository served over one transport: ``url``, ``env`` (for git and workers)
    and ``git_args`` (``-c`` options the plain-git measurements add, e.g. protocol v0)."""

    def __init__(self, kind: str, url: str, path: Path, env: dict[str, str],
                 git_args: Sequence[str] = ()) -> None:
        self.kind, self.url, self.path, self.env, self.git_args = kind, url, path, env, list(git_args)

    def apply_env(self) -> None:
        """Put this remote's git variables (e.g. GIT_SSH_COMMAND) into ``os.environ``; the library
        reads the process environment when it creates a clone."""
        for key in ("GIT_SSH_COMMAND",):
            if key in self.env:
                os.environ[key] = self.env[key]
            else:
                os.environ.pop(key, None)


class Servers:
    """Starts each kind of server at most once below ``root`` and makes bare repositories."""

    def __init__(self, root: Path, stack: ExitStack) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.stack = stack
        self._daemon: GitDaemon | None = None
        self._http: SmartHttpServer | None = None
        self._ssh: SshServer | None = None

    def remote(self, kind: str, name: str, create: bool = True) -> Remote:
        """A bare repository ``name`` (created empty unless it exists) served over ``kind``."""
        path = self.root / name
        if create and not path.exists():
            make_bare(self.root, name)
        env = dict(BASE_ENV)
        env.pop("GIT_SSH_COMMAND", None)
        if kind == "file":
            return Remote(kind, "file://" + str(path.resolve()), path, env)
        if kind in ("daemon", "daemon-v0"):
            if self._daemon is None:
                self._daemon = self.stack.enter_context(GitDaemon(self.root))
            args = ["-c", "protocol.version=0"] if kind == "daemon-v0" else []
            return Remote(kind, self._daemon.url(name), path, env, args)
        if kind == "http":
            if self._http is None:
                # Python's socketserver listens with a backlog of 5: with more than a few
                # workers polling, connection attempts overflow it and wait for a 1 s SYN
                # retry. Production git servers use far larger backlogs; so do the benchmarks.
                gitservers.ThreadingHTTPServer.request_queue_size = HTTP_BACKLOG
                self._http = self.stack.enter_context(SmartHttpServer(self.root))
            return Remote(kind, self._http.url(name), path, env)
        if kind in ("ssh", "ssh-reuse"):
            if not ssh_available():
                raise RuntimeError("no sshd: apt-get install openssh-server")
            if self._ssh is None:
                self._ssh = self.stack.enter_context(SshServer(self.root))
            env["GIT_SSH_COMMAND"] = self._ssh.ssh_command(reuse=kind == "ssh-reuse")
            return Remote(kind, self._ssh.url(name), path, env)
        raise ValueError(f"unknown transport {kind!r}; choose from {', '.join(TRANSPORTS)}")


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> str:
    """Run plain git; return stdout."""
    res = subprocess.run(["git", *args], cwd=cwd, env=env or BASE_ENV, capture_output=True,
                         text=True, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout


def timed(fn, *args, **kwargs) -> float:
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


def pct(xs: Iterable[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, round(p / 100 * len(xs) + 0.5) - 1))
    return xs[k]


def ms(s: float) -> str:
    return "-" if math.isnan(s) else f"{s * 1000:.1f}"




def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain-text table (first column left-aligned, the others right-aligned)."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                              for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def machine_line() -> str:
    """Cores, load and git version: the context every figure needs."""
    load = os.getloadavg()
    ver = git("--version").strip().removeprefix("git version ")
    import distribute

    return (f"machine: {os.cpu_count()} cores, load {load[0]:.2f}/{load[1]:.2f}, git {ver}, "
            f"python {sys.version.split()[0]}, library {Path(distribute.__file__).parent}")


def du(path: Path) -> int:
    """Bytes used on disk below ``path`` (allocated blocks, like ``du``)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


@contextlib.contextmanager
def workdir(prefix: str, keep: str | None = None) -> Iterator[Path]:
    """A temporary directory (or ``keep``, created and left behind)."""
    if keep:
        path = Path(keep).resolve()
        path.mkdir(parents=True, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix=prefix) as d:
            yield Path(d)


def parse_transports(value: str) -> list[str]:
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    for k in kinds:
        if k not in TRANSPORTS:
            raise SystemExit(f"unknown transport {k!r}; choose from {', '.join(TRANSPORTS)}")
    return kinds
