"""ssh remotes against a real ``sshd`` on 127.0.0.1: git commands share one OpenSSH connection.

The library sets ``GIT_SSH_COMMAND`` to ``ssh -o ControlMaster=auto ...`` itself, so the client's
key and host-key settings come from an ssh config file: ``ssh`` on ``PATH`` is a two-line script
that logs its arguments and runs the real ``ssh -F <config>`` (OpenSSH reads ``~/.ssh/config``
from the passwd entry's home, not from ``$HOME``, so a temporary ``HOME`` would not do).
"""
from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from support.gitservers import SshServer, close_ssh_masters, make_bare, ssh_available
from support.remotes import jobs_in

from distribute import init_remote, queue_jobs_func, worker_from_url
from distribute.repo.process import git_env

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not ssh_available(),
                                 reason="no sshd (apt-get install openssh-server)")]


@dataclass
class SshClient:
    """The test's ssh client set-up: where sockets go, the ``ssh -F`` file, the call log."""

    control_dir: Path
    config: Path
    calls: Path
    real_ssh: str

    def logged_calls(self) -> list[str]:
        """The argument lines of every ``ssh`` run through ``PATH`` so far."""
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def sockets(self) -> list[Path]:
        return sorted(p for p in self.control_dir.iterdir() if stat.S_ISSOCK(p.lstat().st_mode))

    def check(self, socket: Path) -> subprocess.CompletedProcess[str]:
        """``ssh -O check``: is a ControlMaster listening on ``socket``? (stderr names its pid)"""
        return subprocess.run([self.real_ssh, "-F", str(self.config), "-O", "check",
                               "-o", f"ControlPath={socket}", "127.0.0.1"],
                              capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with SshServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def ssh_remote(sshd: SshServer, tmp_path: Path) -> str:
    """An empty bare repository of this test, reached through ``ssh://``."""
    name = f"{tmp_path.name}.git"
    make_bare(sshd.root, name)
    return sshd.url(name)


@pytest.fixture
def ssh_client(sshd: SshServer, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[SshClient]:
    """``ssh`` on ``PATH`` logs in to ``sshd``; sockets go to a private short directory."""
    real_ssh = shutil.which("ssh")
    assert real_ssh is not None
    control_dir = Path(tempfile.mkdtemp(prefix="dssh-", dir="/tmp"))  # 0700, short path
    client = SshClient(control_dir, sshd.write_client_config(tmp_path / "ssh_config"),
                       tmp_path / "ssh-calls.log", real_ssh)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >>{shlex.quote(str(client.calls))}\n'
                       f'exec {shlex.quote(real_ssh)} -F {shlex.quote(str(client.config))} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DISTRIBUTE_SSH_CONTROL_DIR", str(control_dir))
    monkeypatch.delenv("GIT_SSH_COMMAND", raising=False)
    monkeypatch.delenv("GIT_SSH", raising=False)
    yield client
    close_ssh_masters(*control_dir.iterdir())
    shutil.rmtree(control_dir, ignore_errors=True)


def user_ssh_command(tmp_path: Path) -> tuple[str, Path]:
    """A user's own ssh command: a script that notes that it ran, then runs ``ssh`` (PATH)."""
    ran = tmp_path / "user-ssh-ran.log"
    script = tmp_path / "user ssh"  # a blank: the command must be quoted as given
    script.write_text(f'#!/bin/sh\necho ran >>{shlex.quote(str(ran))}\nexec ssh "$@"\n')
    script.chmod(0o755)
    return shlex.quote(str(script)), ran


def claim_and_finish(url: str, path: Path) -> str:
    """One worker takes one job, writes a result and finishes it; the job."""
    worker = worker_from_url(url, path, "w")
    try:
        job = worker.get_next_job(queue_jobs_func)
        assert job is not None
        Path(worker.job_dir, "result.txt").write_text(f"result of {job}\n")
        worker.finish_job()
    finally:
        worker.close()
    return job


def test_worker_shares_one_ssh_connection(ssh_remote: str, ssh_client: SshClient,
                                          tmp_path: Path) -> None:
    assert init_remote(ssh_remote, ["job0", "job1"]) is True
    [socket] = ssh_client.sockets()
    first = ssh_client.check(socket)
    assert first.returncode == 0, first.stderr
    assert claim_and_finish(ssh_remote, tmp_path / "w") == "job0"
    calls = ssh_client.logged_calls()
    assert len(calls) >= 4 and all("ControlMaster=auto" in c and "ControlPersist=60" in c
                                   and f"ControlPath={ssh_client.control_dir}/%C" in c
                                   for c in calls), calls
    assert ssh_client.sockets() == [socket]
    again = ssh_client.check(socket)
    assert again.returncode == 0, again.stderr
    assert again.stderr == first.stderr  # "Master running (pid=N)": the same connection all along
    assert jobs_in(ssh_remote, "done.txt", tmp_path) == ["job0"]


def test_reuse_off_opens_a_connection_per_command(ssh_remote: str, ssh_client: SshClient,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTRIBUTE_SSH_REUSE", "0")
    assert "GIT_SSH_COMMAND" not in git_env()
    init_remote(ssh_remote, ["job0"])
    assert claim_and_finish(ssh_remote, tmp_path / "w") == "job0"
    calls = ssh_client.logged_calls()
    assert len(calls) >= 4 and not any("Control" in c for c in calls), calls
    assert list(ssh_client.control_dir.iterdir()) == []
    assert jobs_in(ssh_remote, "done.txt", tmp_path) == ["job0"]


def test_a_user_ssh_command_is_used_as_is(ssh_remote: str, ssh_client: SshClient,
                                          tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    command, ran = user_ssh_command(tmp_path)
    monkeypatch.setenv("GIT_SSH_COMMAND", command)
    assert git_env()["GIT_SSH_COMMAND"] == command
    init_remote(ssh_remote, ["job0"])
    assert claim_and_finish(ssh_remote, tmp_path / "w") == "job0"
    calls = ssh_client.logged_calls()
    assert len(ran.read_text().splitlines()) == len(calls) >= 4
    assert not any("Control" in c for c in calls), calls
    assert list(ssh_client.control_dir.iterdir()) == []


def test_core_ssh_command_config_is_respected(ssh_remote: str, ssh_client: SshClient,
                                              tmp_path: Path) -> None:
    command, ran = user_ssh_command(tmp_path)
    gitconfig = tmp_path / "gitconfig"
    subprocess.run(["git", "config", "--file", str(gitconfig), "core.sshCommand", command],
                   check=True)
    env = dict(os.environ, GIT_CONFIG_GLOBAL=str(gitconfig))
    # a new process: whether core.sshCommand is set is asked once per process
    proc = subprocess.run([sys.executable, "-m", "distribute", "init", ssh_remote], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = ssh_client.logged_calls()
    assert calls and len(ran.read_text().splitlines()) == len(calls)
    assert not any("Control" in c for c in calls), calls
    assert list(ssh_client.control_dir.iterdir()) == []


@pytest.mark.parametrize("reuse", ["", "0"])
def test_node_entry_shares_the_deploy_key_connection(sshd: SshServer, ssh_remote: str,
                                                     tmp_path: Path, reuse: str) -> None:
    """docker/entrypoint.sh: the deploy key's ssh connections are shared through ~/.ssh/config
    (read by ssh from the passwd home; here it is given with -F, known hosts to /dev/null)."""
    home = tmp_path / "home"
    home.mkdir()
    control_dir = Path(tempfile.mkdtemp(prefix="dssh-", dir="/tmp"))
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, "DISTRIBUTE_SSH_KEY": sshd.client_key.read_text(),
           "DISTRIBUTE_SSH_CONTROL_DIR": str(control_dir), "DISTRIBUTE_SSH_REUSE": reuse}
    git = ('c=$HOME/.ssh/config; [ -e "$c" ] || c=/dev/null; '
           'GIT_SSH_COMMAND="$GIT_SSH_COMMAND -F $c -o UserKnownHostsFile=/dev/null" '
           'exec git ls-remote "$1"')
    try:
        proc = subprocess.run(["bash", str(ROOT / "docker" / "entrypoint.sh"), "sh", "-c", git,
                               "sh", ssh_remote], env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        sockets = list(control_dir.iterdir())
        if reuse == "0":
            assert not (home / ".ssh" / "config").exists() and sockets == []
        else:
            assert "ControlMaster auto" in (home / ".ssh" / "config").read_text()
            assert len(sockets) == 1 and stat.S_ISSOCK(sockets[0].lstat().st_mode)
    finally:
        close_ssh_masters(*control_dir.iterdir())
        shutil.rmtree(control_dir, ignore_errors=True)


def test_node_entry_leaves_a_user_ssh_config_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host example\n    User me\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "DISTRIBUTE_SSH_KEY": "not a key"}
    proc = subprocess.run(["bash", str(ROOT / "docker" / "entrypoint.sh"), "true"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (home / ".ssh" / "config").read_text() == "Host example\n    User me\n"
