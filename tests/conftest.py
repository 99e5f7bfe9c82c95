"""Shared fixtures: real git remotes on this machine and one ``cli`` to run commands.

Plain helpers, fake servers and worker scripts live in ``tests/support/``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from support.gitservers import GitDaemon, SmartHttpServer, make_bare  # noqa: E402
from support.processes import Run, cli_env  # noqa: E402
from support.serving import Chain  # noqa: E402

from distribute import init_remote  # noqa: E402
from distribute.repo import faults  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    """Keep the Hub client off the internet and out of the user's cache, in this process and the
    ones it starts: its once-a-day user-agent registry lives in ``HF_HOME``; seeded here, it is
    never fetched."""
    home = Path(tempfile.mkdtemp(prefix="distribute-tests-hf-home-"))
    (home / ".agent_harnesses.json").write_text('{"standardEnvVars": [], "harnesses": {}}')
    os.environ["HF_HOME"] = str(home)
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))


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
def seam() -> Iterator[Callable[[Any], Any]]:
    """``seam(injector)`` adds a fault injector (e.g. ``support.serving.OneShot``) at the fault
    seam (``distribute/repo/faults.py``), beside those added before; none is left after the test."""
    installed: list[Any] = []

    def install(injector: Any) -> Any:
        installed.append(injector)
        faults.install(Chain(*installed))
        return injector

    yield install
    faults.install(None)


@pytest.fixture
def ledger_remote(tmp_path: Path) -> tuple[Path, str]:
    """A bare remote with an empty ledger, reached through ``file://``: ``(its path, its URL)``."""
    bare = make_bare(tmp_path)
    url = bare.resolve().as_uri()
    init_remote(url)
    return bare, url


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


@pytest.fixture
def http(tmp_path: Path) -> Iterator[SmartHttpServer]:
    """A smart-HTTP git server over an empty ``tmp_path/hosts``: the test makes its repositories
    there (e.g. the emulated hosts of :mod:`support.hosts`)."""
    root = tmp_path / "hosts"
    root.mkdir()
    with SmartHttpServer(root) as server:
        yield server


@pytest.fixture(params=["file", "daemon", "http"])
def any_remote(request: pytest.FixtureRequest) -> str:
    """An empty remote of each transport."""
    if request.param == "file":
        return request.getfixturevalue("file_remote")
    if request.param == "daemon":
        return request.getfixturevalue("daemon_remote")
    return request.getfixturevalue("http_server").url("remote.git")


@pytest.fixture
def this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes the test starts import this checkout's library, whatever is installed."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", path)


@pytest.fixture
def cli_fast() -> bool:
    """Whether ``cli`` commands get the short leases and polls of ``FAST``; a module that wants
    the defaults overrides this fixture."""
    return True


@pytest.fixture
def cli_settings() -> dict[str, Optional[str]]:
    """Environment every ``cli`` command of a module gets (``None`` removes a variable); a module
    overrides this fixture, e.g. with a fake service's address and key."""
    return {}


@pytest.fixture
def cli(tmp_path: Path, cli_fast: bool, cli_settings: dict[str, Optional[str]]) -> Run:
    """Run ``python -m distribute ARGS`` (or ``argv``) in ``tmp_path``; assert the exit code
    ``rc`` (unless None), no traceback (unless ``--debug``) and that no key or token given to any
    command of the test shows in the output; return the result."""
    secrets: set[str] = set()

    def run(*args: str, rc: Optional[int] = 0, env: Optional[dict[str, Optional[str]]] = None,
            stdin: Optional[str] = None, cwd: Optional[Path] = None,
            stdout: object = subprocess.PIPE, argv: Optional[list[str]] = None
            ) -> subprocess.CompletedProcess:
        given = {**cli_settings, **(env or {})}
        secrets.update(v for k, v in given.items() if v and k.endswith(("_KEY", "_TOKEN")))
        full = {k: v for k, v in cli_env(tmp_path, fast=cli_fast).items()
                if not k.startswith(("VAST_", "CONTAINER_"))}
        full.update(given)
        proc = subprocess.run(argv or [sys.executable, "-m", "distribute", *args],
                              input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                              stdout=stdout, stderr=subprocess.PIPE, text=True,
                              env={k: v for k, v in full.items() if v is not None},
                              cwd=cwd or tmp_path, timeout=120)
        if rc is not None:
            assert proc.returncode == rc, \
                f"{args}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr or "--debug" in args
        shown = (proc.stdout or "") + proc.stderr
        assert not [s for s in secrets if s in shown], "a key or token was printed"
        return proc

    return run
