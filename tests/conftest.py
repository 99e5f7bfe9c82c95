"""Shared fixtures: real git remotes on this machine and helpers to inspect them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gitservers import GitDaemon, SmartHttpServer, make_bare  # noqa: E402

HERE = Path(__file__).parent
#: Short leases and polls, for worker and command processes started by the tests.
FAST = {"DISTRIBUTE_LOCK_LEASE_S": "2", "DISTRIBUTE_JOB_LEASE_S": "3",
        "DISTRIBUTE_POLL_MAX_S": "0.2", "DISTRIBUTE_POLL_S": "0.2"}


def cli_env(tmp: Path, extra: Optional[dict[str, str]] = None,
            fast: bool = True) -> dict[str, str]:
    """The environment of a ``python -m distribute`` process in a test: :data:`FAST` settings
    (unless not ``fast``), a command cache under ``tmp``, the tests' job modules importable,
    then ``extra``."""
    env = dict(os.environ, **(FAST if fast else {}), DISTRIBUTE_CACHE_DIR=str(tmp / "cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user git config, no stray settings from the developer's environment."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for key in list(os.environ):
        if key.startswith("DISTRIBUTE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def file_remote(tmp_path: Path) -> str:
    """An empty bare repository reached through ``file://``."""
    return "file://" + str(make_bare(tmp_path / "srv"))


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    root = tmp_path / "daemon"
    root.mkdir()
    make_bare(root)
    with GitDaemon(root) as d:
        yield d


@pytest.fixture
def daemon_remote(daemon: GitDaemon) -> str:
    """An empty bare repository served by ``git daemon --enable=receive-pack``."""
    return daemon.url("remote.git")


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[SmartHttpServer]:
    root = tmp_path / "http"
    root.mkdir()
    make_bare(root)
    with SmartHttpServer(root) as s:
        yield s


@pytest.fixture(params=["file", "daemon", "http"])
def any_remote(request: pytest.FixtureRequest) -> str:
    """An empty remote of each transport."""
    if request.param == "file":
        return request.getfixturevalue("file_remote")
    if request.param == "daemon":
        return request.getfixturevalue("daemon_remote")
    return request.getfixturevalue("http_server").url("remote.git")


def git_out(url: str, *args: str, tmp: Path) -> str:
    """Run a git command in a fresh mirror of ``url`` (fetched each call) and return stdout."""
    mirror = tmp / "inspect.git"
    if not mirror.exists():
        subprocess.run(["git", "init", "-q", "--bare", str(mirror)], check=True)
    subprocess.run(["git", "-C", str(mirror), "fetch", "-q", "--prune", url,
                    "+refs/*:refs/*"], check=True)
    return subprocess.run(["git", "-C", str(mirror), *args], check=True, capture_output=True,
                          text=True).stdout


def ledger_file(url: str, name: str, tmp: Path) -> list[str]:
    """The non-empty lines of a ledger file on the remote's master."""
    return [l for l in git_out(url, "show", f"master:{name}", tmp=tmp).splitlines() if l]


def spawn_worker(url: str, path: Path, name: str, mode: str, *opts: str) -> subprocess.Popen[str]:
    """Start ``tests/proc_worker.py`` as a separate process."""
    return subprocess.Popen(
        [sys.executable, str(HERE / "proc_worker.py"), url, str(path), name, mode, *opts],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_line(proc: subprocess.Popen[str], prefix: str) -> str:
    """Block until the process prints a line starting with ``prefix`` (it signals its state)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(f"exited without printing {prefix!r}: {proc.stderr.read()[-3000:]}")


def jobs_in(url: str, name: str, tmp: Path) -> list[str]:
    """The jobs (first fields) of a ledger file on the remote's master."""
    return [l.split("\t")[0] for l in ledger_file(url, name, tmp)]
