"""The fault seam: one process-wide hook around every git process the package starts.

Every git command of the package runs through :meth:`GitProcess._run
<distribute.repo.process.GitProcess>` or :meth:`~distribute.repo.process.GitProcess.run_bytes`.
When a :class:`FaultInjector` is installed, those call ``injector.around(process, args, run)``
instead of ``run()``: the injector may run the command (``run()``) or not, delay it, change its
answer, or raise. It is how tests and simulations (``tests/support/simulation.py``,
``benchmarks/simulate.py``) refuse pushes, drop answers, stall calls past a lease or kill a
worker between two calls, deterministically, without a network or a mock of the code under test.

The seam is inert by default: nothing installs an injector but test code, no setting enables it,
and with none installed the cost is one global read per git process. ``process.name`` and
``process.path`` (a worker's local copy) tell which worker runs the command.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Optional, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from .process import GitProcess

#: What running a git command returns: ``(status, stdout, stderr)``.
Outcome = tuple[int, str, str]


class FaultInjector(Protocol):
    """Decides what happens to one git command: see the module's docstring."""

    def around(self, process: "GitProcess", args: list[str],
               run: Callable[[], Outcome]) -> Outcome:
        """Return the outcome of ``git *args`` in ``process``: ``run()``'s, or one made up."""
        ...  # pragma: no cover


_injector: Optional[FaultInjector] = None
_lock = threading.Lock()


def install(injector: Optional[FaultInjector]) -> Optional[FaultInjector]:
    """Make ``injector`` see every git command of this process from now on (``None``: none);
    return the one installed before. For tests and simulations only."""
    global _injector
    with _lock:
        previous, _injector = _injector, injector
    return previous


def installed() -> Optional[FaultInjector]:
    """The injector installed, or ``None`` (a plain read: assignment is atomic)."""
    return _injector


def command_of(args: list[str]) -> str:
    """The git subcommand of ``args`` (``push``, ``fetch``...), past ``-c key=value`` options."""
    index = 0
    while index < len(args) and args[index].startswith("-"):
        index += 2 if args[index] == "-c" else 1
    return args[index] if index < len(args) else ""
