"""Starting and watching the processes of the tests: workers, ``python -m distribute``, pools."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable, Optional

from . import SUPPORT_DIR

#: Short leases and polls, for worker and command processes started by the tests.
FAST = {"DISTRIBUTE_LOCK_LEASE_S": "2", "DISTRIBUTE_JOB_LEASE_S": "3",
        "DISTRIBUTE_POLL_MAX_S": "0.2", "DISTRIBUTE_POLL_S": "0.2"}
#: The ``cli`` fixture: ``cli(*args, rc=0, env=None, ...)`` runs a command and checks it.
Run = Callable[..., subprocess.CompletedProcess]


def cli_env(tmp: Path, extra: Optional[dict[str, str]] = None,
            fast: bool = True) -> dict[str, str]:
    """The environment of a ``python -m distribute`` process in a test: :data:`FAST` settings
    (unless not ``fast``), a command cache under ``tmp``, the tests' job modules importable,
    then ``extra``."""
    env = dict(os.environ, **(FAST if fast else {}), DISTRIBUTE_CACHE_DIR=str(tmp / "cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SUPPORT_DIR), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def spawn_worker(url: str, path: Path, name: str, mode: str, *opts: str) -> subprocess.Popen[str]:
    """Start ``tests/support/proc_worker.py`` as a separate process."""
    return subprocess.Popen(
        [sys.executable, str(SUPPORT_DIR / "proc_worker.py"), url, str(path), name, mode, *opts],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_line(proc: subprocess.Popen[str], prefix: str) -> str:
    """Block until the process prints a line starting with ``prefix`` (it signals its state)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return line.strip()
    assert proc.stderr is not None
    raise AssertionError(f"exited without printing {prefix!r}: {proc.stderr.read()[-3000:]}")


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (git runs in sessions of its own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Pool:
    """Worker processes whose output is drained in threads (so pipes never fill up)."""

    def __init__(self, url: str, tmp: Path, *opts: str) -> None:
        self.url, self.tmp, self.opts = url, tmp, opts
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.logs: dict[str, list[str]] = {}
        self.took = 0
        self._mutex = threading.Lock()

    def start(self, name: str) -> None:
        """Start worker ``name`` in ``drain`` mode with the pool's options."""
        proc = spawn_worker(self.url, self.tmp / name, name, "drain", *self.opts)
        self.procs[name], self.logs[name] = proc, []
        threading.Thread(target=self._pump, args=(proc.stdout, name, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(proc.stderr, name, False), daemon=True).start()

    def _pump(self, stream: IO[str], name: str, is_stdout: bool) -> None:
        for line in stream:
            with self._mutex:
                self.logs[name].append(line)
                if is_stdout and line.startswith("TOOK"):
                    self.took += 1

    def wait_took(self, count: int, timeout: float = 300) -> None:
        """Block until the pool's workers have taken ``count`` jobs in all."""
        deadline = time.monotonic() + timeout
        while self.took < count:
            assert time.monotonic() < deadline, f"only {self.took} jobs taken"
            time.sleep(0.05)

    def kill(self, name: str) -> None:
        """SIGKILL worker ``name`` and reap it."""
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def wait_all(self, timeout: float = 240) -> None:
        """Wait for every worker not killed; each must exit 0."""
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            if proc.returncode == -signal.SIGKILL:
                continue
            try:
                proc.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{name} still running:\n" + "".join(self.logs[name][-60:]))
            assert proc.returncode == 0, "".join(self.logs[name][-40:])

    def log_text(self) -> str:
        """Everything the workers printed so far."""
        return "".join(line for lines in self.logs.values() for line in lines)
