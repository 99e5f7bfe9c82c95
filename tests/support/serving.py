"""Helpers of the serving tests (``test_serving*.py``): a dead holder's lock, workers waiting in
line in threads, polling a condition, and faults at a chosen git call through the fault seam
(``distribute/repo/faults.py``)."""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from distribute import Worker, worker_from_url
from distribute.protocol import LOCK_REF, WAIT_PREFIX
from support.remotes import git_out

#: A worker in line waits for a dead holder's lock this long before breaking it: longer than any
#: test, so that only the serving worker (short lease) takes over.
PATIENT_LEASE_S = 600.0


def bare_git(bare: Path, *args: str, stdin: str = "") -> str:
    return subprocess.run(["git", "-c", "user.name=ghost", "-c", "user.email=ghost@example.com",
                           "--git-dir", str(bare), *args], input=stdin, check=True,
                          capture_output=True, text=True).stdout.strip()


def hold_lock_as_dead_holder(bare: Path) -> None:
    """Set the lock ref to a marker of a holder that never renews or releases it."""
    tree = bare_git(bare, "mktree")
    marker = bare_git(bare, "commit-tree", tree, "-m",
                      "lock ghost 2026-01-01T00:00:00Z 000000000000")
    bare_git(bare, "update-ref", LOCK_REF, marker)


def wait_refs(bare: Path) -> list[str]:
    return bare_git(bare, "for-each-ref", "--format=%(refname)", WAIT_PREFIX).split()


def until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll ``condition`` until it holds (fail after ``timeout_s``: something is stuck)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class InLine:
    """Run ``call`` in a thread (a worker waiting in line) and keep what it returned or raised."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.result = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def join(self) -> Any:
        self._thread.join(120)
        assert not self._thread.is_alive(), "the waiter never came back"
        if self.error is not None:
            raise self.error
        return self.result


def patient(url: str, tmp: Path, name: str) -> Worker:
    return worker_from_url(url, path=tmp / name, name=name, lock_lease_s=PATIENT_LEASE_S)


def server(url: str, tmp: Path, name: str = "holder") -> Worker:
    """A worker that breaks the dead holder's lock soon, and skips an idle first-in-line soon."""
    return worker_from_url(url, path=tmp / name, name=name, lock_lease_s=1.0, poll_max_s=0.2)


def subjects(url: str, tmp: Path) -> list[str]:
    return git_out(url, "log", "--first-parent", "--reverse", "--format=%s", "master",
                   tmp=tmp).splitlines()


class OneShot:
    """An injector that acts once, at the first git command of worker ``name`` for which
    ``when(args)`` holds: ``act(run)`` returns the outcome (or raises)."""

    def __init__(self, name: str, when: Callable[[list[str]], bool],
                 act: Callable[[Callable[[], Any]], Any]) -> None:
        self.name, self.when, self.act = name, when, act
        self.fired = False

    def around(self, process: Any, args: list[str], run: Callable[[], Any]) -> Any:
        if self.fired or process.name != self.name or not self.when(args):
            return run()
        self.fired = True
        return self.act(run)


class Chain:
    """Injectors applied in turn: each one sees the command as the one before passes it on."""

    def __init__(self, *injectors: Any) -> None:
        self.injectors = injectors

    def around(self, process: Any, args: list[str], run: Callable[[], Any]) -> Any:
        for injector in reversed(self.injectors):
            run = (lambda inner, r: lambda: inner.around(process, args, r))(injector, run)
        return run()


def pushes(*refs: str) -> Callable[[list[str]], bool]:
    """A push naming all of ``refs``."""
    return lambda args: "push" in args and all(any(a.endswith(":" + r) for a in args)
                                               for r in refs)


def releases(*refs: str) -> Callable[[list[str]], bool]:
    """A push that releases the lock (deletes it) and names all of ``refs`` (a lone worker's
    take names ``master`` too, leasing it at its last push: not a release)."""
    named = pushes(*refs)
    return lambda args: named(args) and f":{LOCK_REF}" in args
