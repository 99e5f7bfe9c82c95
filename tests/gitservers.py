"""Real git servers on 127.0.0.1 for tests: ``git daemon`` and smart HTTP.

Both serve every bare repository below a root directory, accept pushes, and can
be stopped and restarted on the same port (for outage tests).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import io
import os
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import quote, unquote, urlsplit


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def make_bare(root: Path, name: str = "remote.git") -> Path:
    """Create an empty bare repo ``root/name`` (HEAD -> master) accepting any push; return it."""
    path = Path(root) / name
    subprocess.run(["git", "init", "-q", "--bare", "-b", "master", str(path)], check=True)
    for key, value in (("http.receivepack", "true"), ("receive.denyDeletes", "false"),
                       ("receive.denyNonFastForwards", "false")):
        subprocess.run(["git", "--git-dir", str(path), "config", key, value], check=True)
    return path


class GitDaemon:
    """``git daemon`` serving ``base_path`` over git://, receive-pack enabled."""

    def __init__(self, base_path: Path, port: int | None = None) -> None:
        self.base_path = Path(base_path).resolve()  # daemon's whitelist check uses real paths
        self.port = port if port is not None else free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> GitDaemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, name: str = "remote.git") -> str:
        """URL of repository ``name`` below the base path."""
        return f"git://127.0.0.1:{self.port}/{name}"

    def start(self, timeout: float = 10.0) -> None:
        """Start the daemon on ``self.port`` and wait until it accepts TCP connections."""
        if self._proc is not None or _port_open(self.port):
            raise RuntimeError(f"GitDaemon already running, or port {self.port} is taken")
        cmd = ["git", "daemon", "--reuseaddr", f"--base-path={self.base_path}", "--export-all",
               "--enable=receive-pack", "--listen=127.0.0.1", f"--port={self.port}",
               str(self.base_path)]
        with tempfile.TemporaryFile() as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=log, start_new_session=True)
            deadline = time.monotonic() + timeout
            while not _port_open(self.port):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log.seek(0)
                    err = log.read().decode(errors="replace")
                    raise RuntimeError(f"git daemon did not come up on port {self.port}: {err}")
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill the daemon's process group (incl. per-connection children); wait for the port."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)  # leader not reaped yet, so the pgid is still ours
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
                break
        deadline = time.monotonic() + 5
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)


class _GitHandler(BaseHTTPRequestHandler):
    """Runs ``git http-backend`` as a CGI for each request; one request per connection."""

    protocol_version = "HTTP/1.1"  # so that ``Expect: 100-continue`` is answered
    owner: SmartHttpServer  # set on a per-server subclass
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Keep test output quiet."""

    def _handle(self) -> None:
        self.close_connection = True
        owner = self.owner
        with owner._lock:
            owner._requests += 1
        if owner.username is not None:
            want = base64.b64encode(f"{owner.username}:{owner.password}".encode()).decode()
            got = self.headers.get("Authorization", "")
            if not (got.startswith("Basic ") and hmac.compare_digest(got[6:].strip(), want)):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                return self.end_headers()
        parts = urlsplit(self.path)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "HTTP_"))}
        for key, value in self.headers.items():  # incl. Git-Protocol, Content-Encoding (gzip)
            if key.lower() not in ("authorization", "content-type", "content-length"):
                env["HTTP_" + key.upper().replace("-", "_")] = value
        env.update(GIT_PROJECT_ROOT=str(owner.root), GIT_HTTP_EXPORT_ALL="1",
                   PATH_INFO=unquote(parts.path), QUERY_STRING=parts.query,
                   REQUEST_METHOD=self.command, REMOTE_ADDR=self.client_address[0],
                   REMOTE_USER=owner.username or "anonymous", GATEWAY_INTERFACE="CGI/1.1",
                   SERVER_PROTOCOL="HTTP/1.1", CONTENT_TYPE=self.headers.get("Content-Type", ""))
        length = int(self.headers.get("Content-Length") or 0)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if not chunked and "Content-Length" in self.headers:
            env["CONTENT_LENGTH"] = str(length)  # without it, http-backend reads to EOF
        proc = subprocess.Popen(["git", "http-backend"], env=env, stdout=subprocess.PIPE,
                                stdin=subprocess.PIPE if chunked or length else subprocess.DEVNULL)
        out = cast(io.BufferedReader, proc.stdout)
        writer = None
        if proc.stdin is not None:  # separate thread: the CGI may answer before reading it all
            writer = threading.Thread(target=self._pump_body, daemon=True,
                                      args=(proc.stdin, chunked, length))
            writer.start()
        try:
            status, reason, headers = 200, "OK", []
            while line := out.readline().decode("latin-1").rstrip("\r\n"):
                key, _, value = line.partition(":")
                if key.strip().lower() == "status":
                    code, _, reason = value.strip().partition(" ")
                    status = int(code)
                else:
                    headers.append((key.strip(), value.strip()))
            self.send_response(status, reason or None)
            for key, value in headers + [("Connection", "close")]:
                self.send_header(key, value)
            self.end_headers()
            while chunk := out.read1(65536):
                self.wfile.write(chunk)
            self.wfile.flush()
        finally:
            out.close()
            proc.wait()
            if writer is not None:
                writer.join(timeout=5)

    do_GET = do_POST = _handle

    def _pump_body(self, sink: IO[bytes], chunked: bool, length: int) -> None:
        """Stream the request body (decoding chunked transfer encoding) to the CGI's stdin."""
        try:
            while True:
                if chunked:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    data = self.rfile.read(size)
                    self.rfile.readline()  # CRLF; trailers are ignored (connection gets closed)
                else:
                    data = self.rfile.read(min(length, 65536)) if length > 0 else b""
                    length -= len(data)
                if not data:
                    break
                sink.write(data)
        except (OSError, ValueError):
            pass  # client went away or CGI exited early
        finally:
            with contextlib.suppress(OSError):
                sink.close()


class SmartHttpServer:
    """``git http-backend`` over smart HTTP from a background thread, optional basic auth."""

    def __init__(self, root: Path, username: str | None = None, password: str | None = None,
                 port: int | None = None) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.root = Path(root).resolve()
        self.username, self.password = username, password
        self.port = port or 0  # 0: the OS picks one at the first start()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock, self._requests = threading.Lock(), 0

    @property
    def requests(self) -> int:
        """Number of HTTP requests received so far (including ones rejected with 401)."""
        with self._lock:
            return self._requests

    def __enter__(self) -> SmartHttpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, name: str = "remote.git", with_credentials: bool = True) -> str:
        """URL of repository ``name``; ``user:pass@`` included if auth is set and wanted."""
        cred = ""
        if with_credentials and self.username is not None:
            cred = f"{quote(self.username, safe='')}:{quote(self.password or '', safe='')}@"
        return f"http://{cred}127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        """Start serving on ``self.port`` (the same port again after ``stop()``)."""
        if self._server is not None:
            raise RuntimeError("SmartHttpServer already running")
        handler = type("_Handler", (_GitHandler,), {"owner": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler, False)
        socketserver.TCPServer.server_bind(self._server)  # skip HTTPServer's reverse DNS lookup
        self._server.server_activate()
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close the listening socket (in-flight requests may finish)."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None and thread is not None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
