"""A seeded fault plan behind the fault seam (:mod:`distribute.repo.faults`).

What the plan does to a worker's n-th git call depends only on the seed, the worker's name and n
(thread timing still decides which call is the n-th). Faults, for the commands that talk to the
remote (push, fetch, ls-remote):

* ``refuse``: the command is not run; git's answer is a broken connection;
* ``drop``: the command runs (a push lands), then the answer is lost: a broken connection;
* ``busy``: a push is not run and is answered ``[remote rejected] (failed)`` for every ref, as a
  host answers ``git push --porcelain --atomic`` when its ref transaction fails (a busy ref);
* ``misreport``: a push is not run, yet answered as applied (every ref ``ok``, exit 0), as a host
  that misreports answers it (GitLab/Gitaly has reported failed atomic pushes as successful); the
  simulation then has the workers verify pushes (``DISTRIBUTE_VERIFY_PUSHES=always``: its
  ``file://`` remote is otherwise trusted);
* ``stall``: the command waits before running (a few seeds: past the lock lease).

And for any git call of the workers that may die: ``kill`` (before the call, or after it ran):
:class:`SimulatedKill` is raised there and in every later git call of that worker, in all its
threads, as if the process had received SIGKILL between two calls.
"""
from __future__ import annotations

import collections
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from distribute.repo.faults import Outcome, command_of
from distribute.repo.process import GitProcess

log = logging.getLogger("simulation.faults")

NETWORK = ("push", "fetch", "ls-remote")
#: What git prints when the connection breaks (both classified transient by the transport).
HUNG_UP = ("fatal: the remote end hung up unexpectedly\n",
           "error: RPC failed; curl 56 Recv failure: Connection reset by peer\n"
           "fatal: the remote end hung up unexpectedly\n")
#: What ``git push --porcelain`` prints over smart HTTP when the server closes the connection
#: without an answer (``support.faultyhttp``): "Done" on stdout although nothing was reported.
HTTP_PUSH_DROPPED = (1, "Done\n", "error: RPC failed; curl 52 Empty reply from server\n"
                     "send-pack: unexpected disconnect while reading sideband packet\n"
                     "fatal: the remote end hung up unexpectedly\n")


class SimulatedKill(BaseException):
    """The worker's process died here (raised in each of its threads at its next git call)."""


@dataclass
class Rates:
    """Per-call probabilities of each fault, and the stall and kill plan of one seed."""

    refuse: float = 0.0
    drop: float = 0.0
    busy: float = 0.0
    stall: float = 0.0
    stall_max_s: float = 0.0
    misreport: float = 0.0
    #: ``{worker: n}``: the worker dies at its n-th git call (counted from when it is armed).
    kills: dict[str, int] = field(default_factory=dict)
    #: Whether a killed worker dies after its last call ran (else before running it).
    kill_after: dict[str, bool] = field(default_factory=dict)
    #: ``{worker: prefix}``: the worker dies at its first push of a ref starting with ``prefix``
    #: (e.g. its job branch: mid-job), before it runs.
    kill_at_push: dict[str, str] = field(default_factory=dict)
    #: ``{worker: prefix}``: the worker dies at its first push deleting a ref starting with
    #: ``prefix`` (e.g. its job branch: a finish or a failure), after it ran if ``kill_after``
    #: says so for that worker (at the first such push that applied), else before.
    kill_at_delete: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_seed(cls, seed: int, workers: list[str], lock_lease_s: float,
                 kills: bool = True) -> "Rates":
        """The rates of ``seed``: each fault on or off, at up to a few percent of the calls;
        up to all but the first worker killed; a quarter of the seeds stall past the lease."""
        rng = random.Random(f"rates:{seed}")

        def rate(top: float) -> float:
            return rng.uniform(0, top) if rng.random() < 0.7 else 0.0

        rates = cls(refuse=rate(0.08), drop=rate(0.08), busy=rate(0.06), stall=rate(0.03))
        rates.stall_max_s = 1.5 * lock_lease_s if rng.random() < 0.25 else 0.3
        if kills:
            for name in workers[1:]:  # the first worker is never killed: someone drains
                if rng.random() < 0.3:
                    rates.kills[name] = rng.randrange(5, 400)
                    rates.kill_after[name] = rng.random() < 0.5
        # (drawn last: the other choices of a seed stay what they were before misreports)
        rates.misreport = rng.uniform(0, 0.08) if rng.random() < 0.5 else 0.0
        return rates


class FaultPlan:
    """A :class:`~distribute.repo.faults.FaultInjector` following :class:`Rates` for ``seed``.

    Only the calls of armed workers (by the committer name of their git processes) are faulted:
    a worker is armed once it has started.
    """

    def __init__(self, seed: int, rates: Rates) -> None:
        self.seed = seed
        self.rates = rates
        self.counts: collections.Counter[str] = collections.Counter()
        self.calls = 0
        self._index: collections.Counter[str] = collections.Counter()
        self._armed: set[str] = set()
        self._dead: set[str] = set()
        self._lock = threading.Lock()

    def arm(self, worker: str) -> None:
        """Fault ``worker``'s git calls from now on."""
        with self._lock:
            self._armed.add(worker)

    def kill(self, worker: str) -> None:
        """``worker`` is dead: each of its later git calls raises :class:`SimulatedKill`."""
        with self._lock:
            self._dead.add(worker)

    def dead(self, worker: str) -> bool:
        """Whether ``worker`` was killed."""
        with self._lock:
            return worker in self._dead

    def around(self, process: GitProcess, args: list[str],
               run: Callable[[], Outcome]) -> Outcome:
        """Decide the fate of one git call (see the module's docstring)."""
        worker = process.name
        with self._lock:
            self.calls += 1
            if worker in self._dead:
                raise SimulatedKill(worker)
            if worker not in self._armed:
                return run()
            self._index[worker] += 1
            index = self._index[worker]
        if self.rates.kills.get(worker) == index:
            if self.rates.kill_after.get(worker):
                run()
            self.kill(worker)
            self._count("kill", worker, index, args)
            raise SimulatedKill(worker)
        command = command_of(args)
        prefix = self.rates.kill_at_push.get(worker)
        if prefix and command == "push" and any(f":{prefix}" in arg for arg in args):
            self.kill(worker)
            self._count("kill", worker, index, args)
            raise SimulatedKill(worker)
        prefix = self.rates.kill_at_delete.get(worker)
        if prefix and command == "push" and any(arg.startswith(f":{prefix}") for arg in args):
            if self.rates.kill_after.get(worker):
                outcome = run()
                if outcome[0] != 0:  # refused (a lockless hold that met the lock): not this one
                    return outcome
            self.kill(worker)
            self._count("kill", worker, index, args)
            raise SimulatedKill(worker)
        if command not in NETWORK:
            return run()
        return self._network(random.Random(f"{self.seed}:{worker}:{index}"), command, args, run,
                             (worker, index))

    def _network(self, rng: random.Random, command: str, args: list[str],
                 run: Callable[[], Outcome], where: tuple[str, int]) -> Outcome:
        rates = self.rates
        if rng.random() < rates.stall:
            self._count("stall", *where, args)
            time.sleep(rng.uniform(0.1, 1.0) * rates.stall_max_s)
        roll = rng.random()
        hung_up = rng.choice([(128, "", text) for text in HUNG_UP]
                             + ([HTTP_PUSH_DROPPED] if command == "push" else []))
        if roll < rates.refuse:
            self._count("refuse", *where, args)
            return hung_up
        roll -= rates.refuse
        if roll < rates.drop:
            self._count("drop", *where, args)
            run()
            return hung_up
        roll -= rates.drop
        if command == "push" and roll < rates.busy:
            self._count("busy", *where, args)
            return 1, busy_answer(args), "error: failed to push some refs to 'origin'\n"
        roll -= rates.busy
        if command == "push" and roll < rates.misreport:
            self._count("misreport", *where, args)
            return 0, ok_answer(args), ""
        return run()

    def _count(self, kind: str, worker: str, index: int, args: list[str]) -> None:
        with self._lock:
            self.counts[kind] += 1
        shown = [a for a in args if a.startswith(("refs/", "+", "--force-with-lease")) or
                 ":refs/" in a]
        log.info("fault %s: %s call %d: git %s %s", kind, worker, index, command_of(args),
                 " ".join(shown)[:400])


def _refspecs(args: list[str]) -> list[tuple[str, str]]:
    """``(source, destination)`` of each refspec of ``git push ... origin <refspec>...``."""
    return [(src, dst) for src, _, dst in (spec.lstrip("+").partition(":")
                                           for spec in args[args.index("origin") + 1:])]


def ok_answer(args: list[str]) -> str:
    """What ``git push --porcelain`` prints when the host answers every ref ``ok`` (applied or
    not: a misreport)."""
    lines = ["To origin"] + [f"{' ' if src else '-'}\t{src or '(delete)'}:{dst}\t"
                             f"{'[deleted]' if not src else 'ok'}" for src, dst in _refspecs(args)]
    return "\n".join(lines + ["Done"]) + "\n"


def busy_answer(args: list[str]) -> str:
    """What ``git push --porcelain --atomic`` prints when the server's ref transaction fails:
    every ref ``[remote rejected] (failed)`` (as it does against
    :class:`support.faultyhttp.FaultyHttpServer`)."""
    lines = ["To origin"]
    for src, dst in _refspecs(args):
        lines.append(f"!\t{src or '(delete)'}:{dst}\t[remote rejected] (failed)")
    return "\n".join(lines + ["Done"]) + "\n"
