"""Real git servers on 127.0.0.1 for tests: ``git daemon`` and smart HTTP.

Both serve every bare repository below a root directory, accept pushes, and can
be stopped and restarted on the same port (for outage tests). :class:`DelayProxy`
puts a network round-trip time in front of any of them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import io
import os
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Sequence, cast
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
                       ("receive.denyNonFastForwards", "false"),
                       ("uploadpack.allowFilter", "true")):
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
            owner._advertisements += "/info/refs" in self.path
            if "/info/refs" in self.path:  # one per git operation: its ref advertisement
                push = "service=git-receive-pack" in self.path
                owner._operations.append((time.monotonic(), "push" if push else "read"))
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
        self._lock, self._requests, self._advertisements = threading.Lock(), 0, 0
        self._operations: list[tuple[float, str]] = []

    @property
    def requests(self) -> int:
        """Number of HTTP requests received so far (including ones rejected with 401)."""
        with self._lock:
            return self._requests

    @property
    def advertisements(self) -> int:
        """Number of ref advertisements asked for (``GET .../info/refs``) so far."""
        with self._lock:
            return self._advertisements

    def operations(self, kind: str) -> list[float]:
        """When each git operation of ``kind`` began (``time.monotonic()``): ``push`` (a push's
        ref advertisement) or ``read`` (a fetch, clone or ls-remote's), as a host counts them."""
        with self._lock:
            return [at for at, what in self._operations if what == kind]

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
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler(), False)
        socketserver.TCPServer.server_bind(self._server)  # skip HTTPServer's reverse DNS lookup
        self._server.server_activate()
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def _handler(self) -> type[_GitHandler]:
        """The request handler class, bound to this server."""
        return type("_Handler", (_GitHandler,), {"owner": self})

    def stop(self) -> None:
        """Stop accepting and close the listening socket (in-flight requests may finish)."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None and thread is not None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that adds latency: git's traffic as to a host far away.

    Every connection accepted on ``port`` opens one to ``(target_host, target_port)``. Whatever
    is read on either side is written to the other ``delay_s`` seconds after it was read, in
    order (each direction has its own queue of ``(due time, bytes)``), so a request and its
    answer take ``2 * delay_s`` longer: ``delay_s=0.025`` is a 50 ms round trip, a hosted forge
    seen from another continent. Bandwidth is not limited; a bounded queue per direction passes
    back-pressure on to the sender. An end of stream travels like data: once the bytes read before
    it are delivered, the other side gets ``shutdown(SHUT_WR)`` (half-close), and a connection
    pair is closed when both directions have ended. When either side fails (reset, broken pipe,
    or the target refuses the connection), both sides are closed at once.

    Not modelled: the handshakes. The client's ``connect()`` completes at once (the kernel accepts
    it here) and the first bytes then take ``delay_s`` like all others, while a real host costs a
    round trip for TCP's handshake and one or two more for TLS before the first request leaves.

    All connections are served by one asyncio event loop in a background thread, so dozens of
    concurrent connections cost no threads and nothing polls. ``stop()`` closes the listening
    socket and resets the connections in flight; ``start()`` again listens on the same port::

        with SmartHttpServer(root) as http, DelayProxy(http.port, delay_s=0.025) as proxy:
            url = proxy.via(http.url())   # or f"http://127.0.0.1:{proxy.port}/remote.git"
    """

    CHUNK = 65536  # bytes read at once
    QUEUE_CHUNKS = 256  # chunks in flight per direction (up to 16 MiB) before reading pauses
    BACKLOG = 128  # listen backlog (like the benchmarks' HTTP server)

    def __init__(self, target_port: int, delay_s: float = 0.025, target_host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, not {delay_s}")
        self.target = (target_host, int(target_port))
        self.delay_s = float(delay_s)
        self.port = port or 0  # 0: the OS picks one at the first start()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # one per connection, touched in the loop only
        self._lock, self._connections = threading.Lock(), 0

    @property
    def connections(self) -> int:
        """Number of client connections accepted so far."""
        with self._lock:
            return self._connections

    def __enter__(self) -> DelayProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def via(self, url: str) -> str:
        """``url`` of the target (e.g. ``http.url(name)``) with the proxy's port instead."""
        parts = urlsplit(url)
        if parts.port != self.target[1]:
            raise ValueError(f"{url} is not on the target port {self.target[1]}")
        netloc = parts.netloc.rsplit(":", 1)[0] + f":{self.port}"
        return parts._replace(netloc=netloc).geturl()

    def start(self, timeout: float = 10.0) -> None:
        """Listen on ``self.port`` (the same port again after ``stop()``) and start forwarding."""
        if self._loop is not None:
            raise RuntimeError("DelayProxy already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"DelayProxy-{self.target[1]}",
                                  daemon=True)
        thread.start()
        try:
            listen = asyncio.start_server(self._accept, "127.0.0.1", self.port,
                                          backlog=self.BACKLOG, reuse_address=True)
            self._server = asyncio.run_coroutine_threadsafe(listen, loop).result(timeout)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()
            raise
        self._loop, self._thread = loop, thread
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Close the listening socket, reset the connections in flight, end the loop's thread."""
        loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):  # e.g. a timeout: the loop is stopped regardless
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()
        self._server = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _accept(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        """Serve a new client connection in a task of our own (``stop()`` cancels it)."""
        with self._lock:
            self._connections += 1
        task = asyncio.get_running_loop().create_task(self._serve(client_in, client_out))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, client_in: asyncio.StreamReader,
                     client_out: asyncio.StreamWriter) -> None:
        """One client connection: connect to the target, pump both ways until both have ended."""
        writers, clean = [client_out], False
        try:
            target_in, target_out = await asyncio.open_connection(*self.target)
            writers.append(target_out)
            pumps = [asyncio.ensure_future(self._pump(client_in, target_out)),
                     asyncio.ensure_future(self._pump(target_in, client_out))]
            try:
                done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
                clean = all([pump.result() for pump in done])  # raises the first failure
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            pass  # refused, reset or broken pipe: both sides are reset below
        finally:
            for writer in writers:
                if clean:
                    writer.close()
                    continue
                sock = writer.get_extra_info("socket")
                if sock is not None:  # linger 0: the peer gets a reset, not an end of stream
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                writer.transport.abort()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> bool:
        """Copy ``source`` to ``sink``, each chunk ``delay_s`` after it was read; then half-close.

        A reader task stamps each chunk with its due time and queues it; this task writes the
        chunks in order, sleeping until each is due. An end of stream is queued like a chunk and
        becomes ``write_eof()`` (``shutdown(SHUT_WR)``); a read error is raised when it is due
        (the source is gone: both sides are reset). When writing fails, the sink is gone: the
        rest is dropped and False returned, while the other direction still delivers what the
        sink sent before (a server that answers and closes without reading the whole request).
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes | OSError]] = asyncio.Queue(self.QUEUE_CHUNKS)

        async def read() -> None:
            try:
                while True:
                    data = await source.read(self.CHUNK)
                    await queue.put((loop.time() + self.delay_s, data))
                    if not data:
                        return
            except OSError as exc:
                await queue.put((loop.time() + self.delay_s, exc))

        reader = asyncio.ensure_future(read())
        try:
            while True:
                due, item = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if isinstance(item, OSError):
                    raise item
                if not item:
                    break
                try:
                    sink.write(item)
                    await sink.drain()
                except OSError:
                    return False
            with contextlib.suppress(OSError):
                if sink.can_write_eof():
                    sink.write_eof()
                return True
            return False
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


SSHD = "/usr/sbin/sshd"


def ssh_available() -> bool:
    """Whether an OpenSSH server and client are installed (``apt-get install openssh-server``)."""
    return os.path.exists(SSHD) and all(shutil.which(p) for p in ("ssh", "ssh-keygen"))


def close_ssh_masters(*sockets: Path) -> None:
    """End the OpenSSH ControlMaster connections listening on ``sockets`` (``ssh -O exit``)."""
    for sock in sockets:
        subprocess.run(["ssh", "-F", os.devnull, "-o", f"ControlPath={sock}", "-O", "exit",
                        "127.0.0.1"], capture_output=True, check=False, timeout=30)


class SshServer:
    """``sshd -D`` on 127.0.0.1 for the current user, key login only, with throw-away keys.

    ``url(name)`` is an ``ssh://`` URL of ``root/name``. A client logs in with the options of
    :meth:`client_options`: as ``GIT_SSH_COMMAND`` (:meth:`ssh_command`, with one shared
    ControlMaster connection when ``reuse``) or as an ``ssh -F`` file (:meth:`write_client_config`).
    """

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root).resolve()
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bssh-", dir="/tmp"))  # short: socket path limit
        self.user = os.environ.get("USER") or _whoami()
        self.client_key = self.dir / "client_key"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SshServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, name: str = "remote.git") -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{self.root / name}"

    def client_options(self) -> dict[str, str]:
        """ssh client options that log in here: the key, no host key prompt, no password prompt."""
        return {"IdentityFile": str(self.client_key), "IdentitiesOnly": "yes", "BatchMode": "yes",
                "StrictHostKeyChecking": "no", "UserKnownHostsFile": "/dev/null",
                "LogLevel": "ERROR"}

    def ssh_command(self, reuse: bool = False) -> str:
        """A ``GIT_SSH_COMMAND`` for this server; ``reuse``: one ControlMaster connection."""
        opts = [f"-o {key}={value}" for key, value in self.client_options().items()]
        if reuse:
            opts += ["-o ControlMaster=auto", f"-o ControlPath={self.dir}/cm-%C",
                     "-o ControlPersist=300"]
        return "ssh " + " ".join(opts)

    def write_client_config(self, path: Path) -> Path:
        """Write the client options as an ssh config file (for ``ssh -F path``); return ``path``."""
        lines = ["Host *"] + [f"    {key} {value}" for key, value in self.client_options().items()]
        Path(path).write_text("\n".join(lines) + "\n")
        return Path(path)

    def start(self) -> None:
        d = self.dir
        for key in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
                           check=True)
        # sshd runs every command through the user's shell; Debian's bash then sources ~/.bashrc
        # (it sees SSH_CLIENT), which on a developer machine may cost 100+ ms (pyenv init...).
        # Git hosts use a fixed forced command instead, so keep the shell bare: with SHLVL=1 in
        # its environment bash does not source ~/.bashrc for a command run by sshd.
        pub = (d / "client_key.pub").read_text().strip()
        (d / "authorized_keys").write_text(f'environment="SHLVL=1" {pub}\n')
        (d / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}",
            f"PidFile {d / 'sshd.pid'}", f"AuthorizedKeysFile {d / 'authorized_keys'}",
            "StrictModes no", "UsePAM no", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password", f"AllowUsers {self.user}", "UseDNS no",
            "LogLevel ERROR", "PermitUserEnvironment SHLVL", "MaxStartups 200:30:400",
            "MaxSessions 200", "PrintMotd no",
            "AcceptEnv GIT_PROTOCOL", ""]))  # git's protocol v2, as git hosts speak it over ssh
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory (root only)
        self._log = open(d / "sshd.log", "wb")  # noqa: SIM115 - open while sshd runs
        self._proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                                      stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=self._log, start_new_session=True)
        deadline = time.monotonic() + 10
        while not _port_open(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("sshd did not start: " + (d / "sshd.log").read_text())
            time.sleep(0.05)

    def stop(self) -> None:
        """End the ControlMaster connections of :meth:`ssh_command`, then sshd and its sessions."""
        close_ssh_masters(*self.dir.glob("cm-*"))
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _whoami() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def busiest(times: Sequence[float], window_s: float) -> int:
    """The most events of ``times`` (seconds, any order) in any ``window_s`` seconds."""
    ordered, most, first = sorted(times), 0, 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= window_s:
            first += 1
        most = max(most, last - first + 1)
    return most
