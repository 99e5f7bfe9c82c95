"""Tests for tests/gitservers.py: real clones and pushes against every server kind."""

from __future__ import annotations

import os
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.gitservers import DelayProxy, GitDaemon, SmartHttpServer, free_port, make_bare

LOCK = "refs/distribute/lock"


@pytest.fixture
def git_env(tmp_path: Path) -> dict[str, str]:
    """Environment for git subprocesses that ignores global/system config and never prompts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    home = tmp_path / "home"
    home.mkdir()
    env.update(
        HOME=str(home), GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="", SSH_ASKPASS="",
        GIT_AUTHOR_NAME="Test Author", GIT_AUTHOR_EMAIL="author@example.com",
        GIT_COMMITTER_NAME="Test Committer", GIT_COMMITTER_EMAIL="committer@example.com",
    )
    return env


def git(env: dict[str, str], *args: str, cwd: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run git, capturing output; with check, fail the test showing stderr."""
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=30)
    if check and proc.returncode != 0:
        pytest.fail(f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def ls_remote(env: dict[str, str], url: str) -> dict[str, str]:
    """Map ref name -> sha as advertised by the remote."""
    out = git(env, "ls-remote", url).stdout
    return {ref: sha for sha, ref in (line.split("\t") for line in out.splitlines())}


def commit(env: dict[str, str], repo: Path, name: str, content: str) -> str:
    """Write and commit a file; return the new HEAD sha."""
    (repo / name).write_text(content)
    git(env, "add", name, cwd=repo)
    git(env, "commit", "-q", "-m", f"add {name}", cwd=repo)
    return git(env, "rev-parse", "HEAD", cwd=repo).stdout.strip()


@pytest.fixture(params=["file", "daemon", "http", "http-auth"])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh empty bare repo served by each kind of server."""
    root = tmp_path / "srv"
    root.mkdir()
    bare = make_bare(root)
    if request.param == "file":
        yield bare.as_uri()
    elif request.param == "daemon":
        with GitDaemon(root) as daemon:
            yield daemon.url("remote.git")
    else:
        creds = ("alice", "s3cr:t@/") if request.param == "http-auth" else (None, None)
        with SmartHttpServer(root, *creds) as http:
            yield http.url("remote.git")


def test_push_clone_lease_atomic(remote_url: str, git_env: dict[str, str],
                                 tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    git(git_env, "clone", "-q", remote_url, str(a))
    git(git_env, "clone", "-q", remote_url, str(b))
    sha_a = commit(git_env, a, "hello.txt", "hello from a\n")
    git(git_env, "push", "-q", "origin", "HEAD:refs/heads/master", cwd=a)
    assert ls_remote(git_env, remote_url)["refs/heads/master"] == sha_a

    # Lease "ref must not exist yet": first wins, the second (different commit) is rejected.
    lease = [f"--force-with-lease={LOCK}:", "origin", f"HEAD:{LOCK}"]
    git(git_env, "push", "-q", *lease, cwd=a)
    sha_b = commit(git_env, b, "other.txt", "from b\n")
    assert sha_b != sha_a
    rejected = git(git_env, "push", *lease, cwd=b, check=False)
    assert rejected.returncode != 0
    assert "stale info" in rejected.stderr or "rejected" in rejected.stderr
    assert ls_remote(git_env, remote_url)[LOCK] == sha_a

    # Atomic push of two refs succeeds together...
    git(git_env, "push", "-q", "--atomic", "origin", "HEAD:refs/heads/x", "HEAD:refs/heads/y",
        cwd=a)
    # ...and fails together when one of them is rejected by its lease.
    failed = git(git_env, "push", "--atomic", f"--force-with-lease={LOCK}:", "origin",
                 f"HEAD:{LOCK}", "HEAD:refs/heads/z", cwd=b, check=False)
    assert failed.returncode != 0
    refs = ls_remote(git_env, remote_url)
    assert refs["refs/heads/x"] == refs["refs/heads/y"] == sha_a
    assert "refs/heads/z" not in refs and refs[LOCK] == sha_a

    git(git_env, "clone", "-q", remote_url, str(c))
    assert (c / "hello.txt").read_text() == "hello from a\n"
    assert git(git_env, "rev-parse", "HEAD", cwd=c).stdout.strip() == sha_a
    git(git_env, "fetch", "-q", "origin", f"{LOCK}:{LOCK}", cwd=c)
    assert git(git_env, "rev-parse", LOCK, cwd=c).stdout.strip() == sha_a


def test_basic_auth_rejects_bad_credentials(tmp_path: Path, git_env: dict[str, str]) -> None:
    make_bare(tmp_path)
    with SmartHttpServer(tmp_path, "alice", "right") as http:
        ok = git(git_env, "ls-remote", http.url())
        assert ok.returncode == 0
        bad = http.url().replace(":right@", ":wrong@")
        assert git(git_env, "ls-remote", bad, check=False).returncode != 0
        anonymous = git(git_env, "ls-remote", http.url(with_credentials=False), check=False)
        assert anonymous.returncode != 0
        assert http.requests >= 3


def test_http_counts_requests_and_large_push(tmp_path: Path, git_env: dict[str, str]) -> None:
    """A push bigger than http.postBuffer goes through chunked transfer encoding."""
    make_bare(tmp_path / "srv")
    work = tmp_path / "w"
    with SmartHttpServer(tmp_path / "srv") as http:
        assert http.url(with_credentials=True) == f"http://127.0.0.1:{http.port}/remote.git"
        git(git_env, "clone", "-q", http.url(), str(work))
        before = http.requests
        assert before >= 1
        commit(git_env, work, "big.bin", os.urandom(1 << 20).hex())  # ~2 MiB incompressible
        git(git_env, "-c", "http.postBuffer=65536", "push", "-q", "origin", "HEAD:master",
            cwd=work)
        assert http.requests > before
        git(git_env, "clone", "-q", http.url(), str(tmp_path / "again"))
        assert (tmp_path / "again" / "big.bin").read_text() == (work / "big.bin").read_text()


@pytest.mark.parametrize("kind", ["daemon", "http"])
def test_stop_and_restart_on_same_port(kind: str, tmp_path: Path,
                                       git_env: dict[str, str]) -> None:
    make_bare(tmp_path)
    server: GitDaemon | SmartHttpServer
    server = GitDaemon(tmp_path) if kind == "daemon" else SmartHttpServer(tmp_path)
    with server:
        url, port = server.url("remote.git"), server.port
        assert git(git_env, "ls-remote", url).returncode == 0
        server.stop()
        assert git(git_env, "ls-remote", url, check=False).returncode != 0
        server.start()
        assert server.port == port
        assert git(git_env, "ls-remote", url).returncode == 0
        server.stop()
        server.start()  # twice, to be sure a restart leaves nothing behind
        assert git(git_env, "ls-remote", url).returncode == 0


def test_daemon_on_explicit_port(tmp_path: Path, git_env: dict[str, str]) -> None:
    make_bare(tmp_path, "other.git")
    port = free_port()
    with GitDaemon(tmp_path, port=port) as daemon:
        assert daemon.url("other.git") == f"git://127.0.0.1:{port}/other.git"
        assert git(git_env, "ls-remote", daemon.url("other.git")).returncode == 0
        missing = git(git_env, "ls-remote", daemon.url("nope.git"), check=False)
        assert missing.returncode != 0


def _live_group_members(pgid: int) -> list[int]:
    """PIDs of non-zombie processes in process group ``pgid`` (Linux /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def test_daemon_stop_kills_per_connection_children(tmp_path: Path) -> None:
    make_bare(tmp_path)
    daemon = GitDaemon(tmp_path)
    daemon.start()
    assert daemon._proc is not None
    pgid = daemon._proc.pid
    with socket.create_connection(("127.0.0.1", daemon.port)):  # forks a child that waits
        deadline = time.monotonic() + 5
        while len(_live_group_members(pgid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)  # wrapper `git daemon`, `git-daemon`, `git-daemon --serve`
        assert len(_live_group_members(pgid)) >= 3
        daemon.stop()
        assert _live_group_members(pgid) == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", daemon.port), timeout=1).close()


@pytest.mark.parametrize("kind", ["http", "daemon"])
def test_delay_proxy_clone_and_push(kind: str, tmp_path: Path, git_env: dict[str, str]) -> None:
    make_bare(tmp_path / "srv")
    a, b = tmp_path / "a", tmp_path / "b"
    server: GitDaemon | SmartHttpServer
    server = GitDaemon(tmp_path / "srv") if kind == "daemon" else SmartHttpServer(tmp_path / "srv")
    with server, DelayProxy(server.port, delay_s=0.01) as proxy:
        direct = server.url("remote.git")
        url = proxy.via(direct)
        assert url == direct.replace(f":{server.port}/", f":{proxy.port}/")
        git(git_env, "clone", "-q", url, str(a))
        sha = commit(git_env, a, "hello.txt", "hello through the proxy\n")
        git(git_env, "push", "-q", "origin", "HEAD:refs/heads/master", cwd=a)
        assert ls_remote(git_env, direct)["refs/heads/master"] == sha  # the push landed
        git(git_env, "clone", "-q", url, str(b))
        assert (b / "hello.txt").read_text() == "hello through the proxy\n"
        assert git(git_env, "rev-parse", "HEAD", cwd=b).stdout.strip() == sha
        assert proxy.connections >= 3
        if isinstance(server, SmartHttpServer):
            assert server.requests >= proxy.connections  # one request per connection


def test_delay_proxy_large_bodies(tmp_path: Path, git_env: dict[str, str]) -> None:
    """A 2 MiB push (chunked) and a clone that brings it back, both through the proxy."""
    make_bare(tmp_path / "srv")
    work, again = tmp_path / "w", tmp_path / "again"
    with SmartHttpServer(tmp_path / "srv") as http, DelayProxy(http.port, 0.005) as proxy:
        git(git_env, "clone", "-q", proxy.via(http.url()), str(work))
        sha = commit(git_env, work, "big.bin", os.urandom(1 << 20).hex())  # ~2 MiB incompressible
        git(git_env, "-c", "http.postBuffer=65536", "push", "-q", "origin", "HEAD:master",
            cwd=work)
        assert ls_remote(git_env, http.url())["refs/heads/master"] == sha
        git(git_env, "clone", "-q", proxy.via(http.url()), str(again))
        assert (again / "big.bin").read_text() == (work / "big.bin").read_text()


class _ReverseHandler(socketserver.BaseRequestHandler):
    """Reads until the client's end of stream, then answers the bytes reversed and closes."""

    def handle(self) -> None:
        data = b""
        while chunk := self.request.recv(65536):
            data += chunk
        self.request.sendall(data[::-1])


class _ReverseServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    # Not Python's 5: a burst of connections would overflow it, and with SYN cookies the kernel
    # may then answer the proxy's first data with a reset (a listen overflow, not a proxy fault).
    request_queue_size = 128


def test_delay_proxy_half_close_order_and_concurrency(tmp_path: Path) -> None:
    """40 connections at once: each sends 300 kB in pieces, half-closes, reads the answer to EOF."""
    server = _ReverseServer(("127.0.0.1", 0), _ReverseHandler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    results: dict[int, bool] = {}

    def client(port: int, i: int) -> None:
        data = b"".join(b"%d:%d," % (i, k) for k in range(30000))
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            for k in range(0, len(data), 7000):
                s.sendall(data[k:k + 7000])
            s.shutdown(socket.SHUT_WR)  # the server answers only after this end of stream
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        results[i] = got == data[::-1]

    try:
        with DelayProxy(server.server_address[1], delay_s=0.01) as proxy:
            threads = [threading.Thread(target=client, args=(proxy.port, i)) for i in range(40)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert results == {i: True for i in range(40)}
            assert proxy.connections == 40
            port = proxy.port
            proxy.stop()
            proxy.start()  # again on the same port
            assert proxy.port == port
            client(port, 99)
            assert results[99]
    finally:
        server.shutdown()
        server.server_close()


def test_delay_proxy_resets_client_when_target_is_down() -> None:
    with DelayProxy(free_port(), delay_s=0.01) as proxy:
        with pytest.raises(ConnectionResetError):  # in connect() or in recv(): the proxy is fast
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
                s.recv(10)
