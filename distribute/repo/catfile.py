"""A long-lived ``git cat-file`` per local copy: names and objects read without a process each.

A worker's cycle asks its copy many small questions — what ``HEAD`` is, the sha of a job's
directory in a commit, the trees on the way to it, a done segment's listing — each once a git
process of its own (~2 ms here, most of it starting git). :class:`CatFile` keeps one
``git cat-file --batch-check`` (names: sha, kind, size) and one ``git cat-file --batch`` (names
and contents) running in the copy and asks them one name at a time, ~0.1 ms each.

It answers exactly as ``git rev-parse --verify <name>`` and ``git cat-file -p <name>`` would at
that moment: git reads refs afresh for every name (a ref moved, packed or deleted since is seen)
and looks for packs written since it started when an object is not found (a fetch's). In a
partial copy it fetches missing objects on demand as any git command does. Names holding a line
break are not asked (``None``: the caller runs its own git command). A process that died or
answers nothing readable is stopped, and the question is not answered (``None`` again), so callers
always keep a plain git command as their fallback.
"""
from __future__ import annotations

import logging
import subprocess
import threading
import weakref
from typing import IO, Any, Optional

log = logging.getLogger(__name__)

#: ``(sha, kind, size)`` of an object found, as ``cat-file --batch-check`` prints it.
Header = tuple[str, str, int]


class CatFile:
    """One long-lived ``git cat-file --batch-check`` (``contents=False``) or ``--batch`` in the
    copy at ``path``, started on first use with the environment ``env``; thread-safe."""

    def __init__(self, path: str, env: dict[str, str], contents: bool) -> None:
        self._path = path
        self._env = env
        self._contents = contents
        self._mutex = threading.Lock()
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._finalizer: Optional["weakref.finalize[Any, Any]"] = None
        #: How many git processes this reader started (for the benchmarks' counts).
        self.started = 0

    def ask(self, name: str) -> Optional[tuple[Optional[Header], bytes]]:
        """``(header, content)`` of ``name`` (``header`` ``None``: no such object; ``content``
        empty for ``--batch-check``), or ``None`` when the question could not be asked."""
        if not name or "\n" in name or "\r" in name or "\0" in name:
            return None
        with self._mutex:
            try:
                proc = self._process()
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(name.encode("utf-8", "surrogateescape") + b"\n")
                proc.stdin.flush()
                return _answer(proc.stdout, self._contents)
            except (OSError, ValueError, EOFError) as exc:
                log.debug("git cat-file in %s stopped answering (%s); restarting it later",
                          self._path, exc)
                self._stop()
                return None

    def close(self) -> None:
        """Stop the process (a later question starts it again)."""
        with self._mutex:
            self._stop()

    def _process(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        self._proc = subprocess.Popen(
            ["git", "cat-file", "--batch" if self._contents else "--batch-check"],
            cwd=self._path, env=self._env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, start_new_session=True)
        self.started += 1
        self._finalizer = weakref.finalize(self, _end, self._proc)
        return self._proc

    def _stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # (ends the process)
        self._proc, self._finalizer = None, None


def _answer(stdout: IO[bytes], contents: bool) -> tuple[Optional[Header], bytes]:
    """Read one answer of ``cat-file --batch[-check]``."""
    line = stdout.readline()
    if not line.endswith(b"\n"):
        raise EOFError("no answer")
    parts = line.split()
    if len(parts) != 3 or not parts[2].isdigit():  # "<name> missing", "<name> ambiguous"…
        return None, b""
    header = (parts[0].decode("ascii"), parts[1].decode("ascii"), int(parts[2]))
    if not contents:
        return header, b""
    data = _read_exactly(stdout, header[2] + 1)
    return header, data[:-1]


def _read_exactly(stdout: IO[bytes], size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = stdout.read(left)
        if not chunk:
            raise EOFError("answer cut short")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Close a reader's input (git exits at its end) and reap it; kill it if it lingers."""
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
