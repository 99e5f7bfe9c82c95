"""The fault-injection simulation of the protocol (issue 23): the harness itself, then a range of
seeds. ``benchmarks/simulate.py`` runs thousands; a failing seed here prints the command that
replays it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from support.faultplan import FaultPlan, Rates, busy_answer, ok_answer
from support.invariants import check_remote, done_records, records
from support.simulation import Config, job_names, run_seed, run_seeds, worker_names

from distribute.repo import faults
from distribute.repo.porcelain import refused_refs
from distribute.repo.transport import _is_transport_error, diagnose

pytestmark = pytest.mark.slow

#: Seeds run in CI, three at once (each in a process of its own), in batches of at most 26:
#: ``(first seed, count, workers, jobs)``. 210 seeds: 6 of 4 workers and 12 jobs, 48 of 3 workers
#: and 4 jobs (~1.3 s each so, on 2 cores), 156 of 2 workers and 3 jobs (~0.8 s each). A hang
#: costs its timeout. ``benchmarks/simulate.py`` runs thousands.
SEED_SETS = ((0, 6, 4, 12), (1000, 48, 3, 4), (3000, 156, 2, 3))
BATCH = 26
PARALLEL = 3
BATCHES = [(first, min(BATCH, start + count - first), workers, jobs)
           for start, count, workers, jobs in SEED_SETS
           for first in range(start, start + count, BATCH)]


#: Late joiners (issue 28): ``(first seed, count, workers, jobs, seconds between two starts)``. The
#: first worker works alone meanwhile, without the lock, until the second comes. Only seeds whose
#: host is trusted (no misreports: a worker reading its pushes back always takes the lock).
LATE = (5000, 24, 2, 12, 1.5)
#: A fault's log line (:mod:`support.faultplan`) on a lockless push: master's lease, and the
#: lock's lease "absent" (a take has no lease on master; a release leases the lock's value).
LOCKLESS_FAULT = re.compile(r"fault (\w+): .* git push --force-with-lease=refs/heads/master:\S+ "
                            r".*--force-with-lease=refs/distribute/lock:( |$)", re.M)


def test_fault_texts_are_what_the_transport_expects() -> None:
    """The plan's answers are classified as git's own would be: a broken connection is a
    transport error worth retrying; a busy ref refuses the push as a whole, naming no ref as
    lost (nothing changed: it is retried, never taken for a lost compare-and-swap)."""
    from support.faultplan import HUNG_UP
    for text in HUNG_UP:
        assert _is_transport_error(text) and diagnose(text).transient
    args = ["push", "--porcelain", "--atomic", "--force-with-lease=refs/distribute/lock:",
            "origin", "abc:refs/distribute/lock", "+def:refs/heads/master", ":refs/heads/w/j"]
    answer = busy_answer(args)
    assert answer.count("(failed)") == 3 and refused_refs(answer) == {}
    assert "!" not in ok_answer(args) and ok_answer(args).count("refs/") == 3


def test_pushes_answered_ok_yet_never_applied_are_caught() -> None:
    """A plan that misreports a third of the pushes (answered ok, never run): the workers read
    their pushes back (the simulation turns that on for such a plan), every invariant holds, and
    no worker ever waits out a lease: no lock left on the remote by a release taken for done, no
    job left running by a finish taken for done. (Trusting those answers, the same seed breaks
    the lock about ten times and requeues jobs: right in the end, but only through the leases.)"""
    # (leases long enough that a slow machine's hold never outlives one: a lease waited out
    # here is a release or a finish taken for done)
    config = Config(11, workers=2, jobs=4, faults=True, kills=False, lock_lease_s=30.0,
                    job_lease_s=45.0)
    config.rates = Rates(misreport=0.33)
    result = run_seed(11, config=config)
    assert result.ok, result.message()
    assert result.faults.get("misreport", 0) > 0
    assert "breaks the lock" not in result.log and "requeue" not in result.log.lower()


def test_seam_is_inert_by_default() -> None:
    """No injector is installed unless a test installs one."""
    assert faults.installed() is None
    assert faults.command_of(["-c", "protocol.version=0", "ls-remote", "origin"]) == "ls-remote"


def test_no_faults_passes(tmp_path: Path) -> None:
    """Without faults every invariant holds (the harness is not failing by itself)."""
    result = run_seed(1, workers=3, jobs=8, faults_on=False)
    assert result.ok, result.message()
    assert result.faults == {}


def test_a_worker_killed_mid_job_is_covered(tmp_path: Path) -> None:
    """A worker killed while it runs a job (at its job branch's first push): the survivor
    requeues the job once its lease ran out and does it."""
    config = Config(7, workers=2, jobs=4, faults=True, kills=True)
    config.checkpoint = 1.0
    config.rates = Rates(kill_at_push={"w1": "refs/heads/w1/"})
    result = run_seed(7, config=config, keep=tmp_path)
    assert result.ok, result.message()
    assert result.faults == {"kill": 1}
    done = done_records(tmp_path / "remote.git")
    assert sorted(e.job for e in done) == job_names(4)
    assert {e.worker for e in done} == {"w0"}


@pytest.mark.parametrize("after", [False, True])
def test_a_worker_killed_at_its_failures_push(tmp_path: Path, after: bool) -> None:
    """Every job fails on its first run; w1 (closing its jobs itself: a close hook) dies at the
    push of its first failure, which deletes its job branch, before or after the push ran: the
    failure landed whole (recorded, its tip a second parent on master, no branch left) or not at
    all (the job requeued after the lease and run again by w0); every invariant holds."""
    config = Config(9, workers=2, jobs=4, faults=True, kills=True)
    config.checkpoint, config.chain, config.retrying = 0.3, False, False
    config.fail_once = set(job_names(4))
    config.rates = Rates(kill_at_delete={"w1": "refs/heads/w1/"}, kill_after={"w1": after})
    config.unserved = {"w1"}
    result = run_seed(9, config=config, keep=tmp_path)
    assert result.ok, result.message()
    assert result.faults == {"kill": 1}
    failed = records(tmp_path / "remote.git", "failed.txt")
    done = done_records(tmp_path / "remote.git")
    assert sorted([e.job for e in failed] + [e.job for e in done]) == job_names(4)
    assert failed and all(e.tip for e in failed)  # (each failure kept its attempt's commits)
    assert ("w1" in {e.worker for e in failed}) == after  # (its failure landed, or not)


def test_checker_detects_a_broken_ledger(tmp_path: Path) -> None:
    """The checker is not vacuous: a job recorded done twice, and a done record naming another
    worker than the result's, are found on a remote edited by hand."""
    config = Config(3, workers=2, jobs=3, faults=False)
    assert run_seed(3, config=config, keep=tmp_path).ok
    bare = tmp_path / "remote.git"
    work = tmp_path / "edit"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True)
    lines = (work / "done.txt").read_text().splitlines()
    first = lines[0].split("\t")
    first[1] = "w9" if first[1] != "w9" else "w8"
    (work / "done.txt").write_text("\n".join(["\t".join(first), *lines[1:], lines[1]]) + "\n")
    for args in (["add", "done.txt"], ["-c", "user.name=p", "-c", "user.email=p@x", "commit",
                                       "-qm", "broken by hand"], ["push", "-q", "origin",
                                                                  "master"]):
        subprocess.run(["git", "-C", str(work), *args], check=True)
    found = {name for name, _ in check_remote(bare, config, job_names(3))}
    assert {"done more than once", "result not by its worker"} <= found


def test_plan_is_deterministic() -> None:
    """What the plan does to a worker's n-th call depends on the seed alone."""
    rates = Rates.for_seed(5, ["w0", "w1", "w2"], 2.0)
    assert rates == Rates.for_seed(5, ["w0", "w1", "w2"], 2.0)
    assert "w0" not in rates.kills
    assert FaultPlan(5, rates).rates is rates


@pytest.mark.parametrize("first,count,workers,jobs", BATCHES)
def test_seeds(first: int, count: int, workers: int, jobs: int) -> None:
    """A batch of seeds: every invariant holds in each (else: the command replaying each failing
    seed)."""
    seeds = range(first, first + count)
    results = list(run_seeds(seeds, PARALLEL, workers=workers, jobs=jobs,
                             timeout_s=60 if jobs > 4 else 30))
    failed = [result.message() for result in results if not result.ok]
    assert not failed, f"{len(failed)} of {len(results)} seeds failed:\n" + "\n".join(failed)


def test_late_joiners_after_lockless_holds() -> None:
    """A worker alone holds no lock; the second one comes while it works: every invariant holds
    in each seed, lockless holds happened, were refused once the other came (and made again
    under the lock), and faults (lost answers, refusals) hit lockless pushes."""
    first, count, workers, jobs, stagger_s = LATE
    lease = Config(first).lock_lease_s
    seeds = [seed for seed in range(first, first + 10 * count)
             if Rates.for_seed(seed, worker_names(workers), lease).misreport == 0][:count]
    results = list(run_seeds(seeds, PARALLEL, workers=workers, jobs=jobs, stagger_s=stagger_s,
                             timeout_s=60))
    failed = [result.message() for result in results if not result.ok]
    assert not failed, f"{len(failed)} of {len(results)} seeds failed:\n" + "\n".join(failed)
    logs = [result.log for result in results]
    assert sum(log.count("held without the lock (alone)") for log in logs) >= 2 * count
    assert sum("is not alone any more" in log for log in logs) >= count // 2
    hit = [kind for log in logs for kind, _ in LOCKLESS_FAULT.findall(log)]
    assert {"drop", "refuse"} & set(hit), hit
