"""A smart-HTTP git server whose pushes fail at random, as a flaky host's do (issue 23).

:class:`FaultyHttpServer` is :class:`~support.gitservers.SmartHttpServer` (the real ``git
http-backend``) with a seeded draw on every push request (``POST .../git-receive-pack``):

- ``applied-then-dropped``: the push is applied, then the connection is closed without an answer
  (the client cannot know it landed);
- ``dropped``: the connection is closed before the push reaches the backend (nothing applied);
- ``busy``: nothing is applied and every ref is answered ``ng <ref> failed``, as a host's failed
  ref transaction is (GitHub's ``[remote rejected] (failed)``);
- ``unavailable`` (scripted only): nothing is applied, the answer is HTTP 503 (a throttled or
  overloaded host);
- ``misreported`` (scripted, or :attr:`PushFaultRates.misreported`): nothing is applied, yet every
  ref is answered ``ok`` (a host that reports success for a push it failed: gitaly #5991).

The faults sit at the network boundary: the project's real git client talks to it over loopback,
so what the worker sees is what git prints for such a host, not a made-up text.
"""
from __future__ import annotations

import collections
import gzip
import io
import random
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from support.gitservers import SmartHttpServer, _GitHandler

KINDS = ("applied-then-dropped", "dropped", "busy", "unavailable", "misreported")


@dataclass(frozen=True)
class PushFaultRates:
    """The share of push requests answered by each fault kind."""

    applied_then_dropped: float = 0.10
    dropped: float = 0.05
    busy: float = 0.05
    misreported: float = 0.0

    def draw(self, rng: random.Random) -> Optional[str]:
        """A fault kind, or ``None`` (the push is served as usual)."""
        roll = rng.random()
        rates = (self.applied_then_dropped, self.dropped, self.busy, 0.0, self.misreported)
        for kind, rate in zip(KINDS, rates):
            if roll < rate:
                return kind
            roll -= rate
        return None


def _pkt(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


def _commands(body: bytes) -> tuple[list[str], set[str]]:
    """The refs a receive-pack request updates, and the capabilities it asks for."""
    refs: list[str] = []
    caps: set[str] = set()
    at = 0
    while at + 4 <= len(body):
        size = int(body[at:at + 4], 16)
        if size == 0:  # flush: the commands end, the pack follows
            break
        line, at = body[at + 4:at + size], at + size
        command, _, wanted = line.rstrip(b"\n").partition(b"\0")
        caps |= set(wanted.decode().split())
        fields = command.decode().split(" ")
        if len(fields) == 3:  # <old> <new> <ref>; a shallow client sends "shallow <oid>" first
            refs.append(fields[2])
    return refs, caps


def busy_report(body: bytes, verdict: str = "ng {ref} failed") -> bytes:
    """receive-pack's answer when its ref transaction failed: ``ng <ref> failed`` for every ref
    of the request ``body`` (in side band 1 when the client asked for one); ``verdict`` another
    line per ref (``ok {ref}``: a misreport)."""
    refs, caps = _commands(body)
    report = _pkt(b"unpack ok\n") + b"".join(_pkt(f"{verdict.format(ref=ref)}\n".encode())
                                              for ref in refs) + b"0000"
    if caps & {"side-band-64k", "side-band"}:
        return _pkt(b"\x01" + report) + b"0000"
    return report


class _FaultyHandler(_GitHandler):
    owner: "FaultyHttpServer"

    def _handle(self) -> None:
        kind = None
        if self.command == "POST" and self.path.split("?")[0].endswith("/git-receive-pack"):
            kind = self.owner._draw()
        if kind is None:
            return super()._handle()
        self.close_connection = True
        if kind == "applied-then-dropped":
            answer, self.wfile = self.wfile, io.BytesIO()  # the backend's answer goes nowhere
            try:
                super()._handle()
            finally:
                self.wfile = answer
            return  # closing the connection without a byte of the answer
        body = self._read_body()
        if kind == "dropped":
            return
        if kind == "unavailable":
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            return self.end_headers()
        report = busy_report(body, "ok {ref}" if kind == "misreported" else "ng {ref} failed")
        self.send_response(200)
        for key, value in (("Content-Type", "application/x-git-receive-pack-result"),
                           ("Content-Length", str(len(report))), ("Connection", "close")):
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(report)

    do_GET = do_POST = _handle

    def _read_body(self) -> bytes:
        sink = io.BytesIO()
        sink.close = lambda: None  # type: ignore[method-assign]  # _pump_body closes its sink
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        self._pump_body(sink, chunked, int(self.headers.get("Content-Length") or 0))
        body = sink.getvalue()
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        return body


class FaultyHttpServer(SmartHttpServer):
    """:class:`SmartHttpServer` whose push requests fail at ``rates``, drawn from ``seed``, or as
    scripted with :meth:`next_pushes`; :attr:`injected` counts the push requests by what was done
    to them (``none``: served)."""

    def __init__(self, root: Path, rates: PushFaultRates, seed: int = 0, **options: Any) -> None:
        super().__init__(root, **options)
        self.rates = rates
        self._rng = random.Random(f"faulty-http:{seed}")
        self._draws = threading.Lock()
        self.injected: collections.Counter[str] = collections.Counter()
        self._script: collections.deque[Optional[str]] = collections.deque()

    def next_pushes(self, *kinds: Optional[str]) -> None:
        """Do ``kinds`` (of :data:`KINDS`, ``None``: serve) to the next push requests, in order,
        before drawing again."""
        assert all(kind is None or kind in KINDS for kind in kinds)
        with self._draws:
            self._script.extend(kinds)

    def _draw(self) -> Optional[str]:
        with self._draws:
            kind = self._script.popleft() if self._script else self.rates.draw(self._rng)
            self.injected[kind or "none"] += 1
            return kind

    def _handler(self) -> type[_GitHandler]:
        return type("_Handler", (_FaultyHandler,), {"owner": self})
