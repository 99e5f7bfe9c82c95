"""Hosts whose rules differ from a stock git server (issue 25), emulated on loopback with git's
own mechanisms (:mod:`support.hosts`): no atomic pushes, branches and tags only, files too big.

Each test runs the real ``python -m distribute`` (or real workers) against a real git server; the
host's refusal must end in one line saying what the host refuses, never in retries. A host taking
only branches and tags is no refusal any more: its coordination refs live in a branch namespace.
"""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from support.gitservers import GitDaemon, SmartHttpServer, make_bare
from support.hosts import branches_only_bare, no_atomic_bare, size_limited_bare
from support.invariants import master_file
from support.processes import Run, cli_env
from support.remotes import assert_settled, jobs_in, ledger_file

from distribute import DistributeError, WorkerNameError, init_remote, settings, worker_from_url
from distribute.bigfiles import max_file_bytes
from distribute.maintenance import prune
from distribute.protocol import (BRANCH_COORD_PREFIX, COORD_PREFIX, check_worker_name,
                                 fetch_refspecs, from_remote, layout_text, on_remote,
                                 parse_layout, parse_namespace)
from distribute.report.publish import is_page_branch
from distribute.repo.refusals import custom_refs_refused, host_limit_mb, too_large
from distribute.repo.transport import diagnose


def _push(tmp_path: Path, url: str, refspec: str, big: int = 0) -> subprocess.CompletedProcess:
    """Push a one-commit repository (a file of ``big`` bytes) to ``url`` as ``refspec``."""
    work = tmp_path / "w"
    if not work.exists():
        subprocess.run(["git", "init", "-q", str(work)], check=True)
        (work / "x.bin").write_bytes(b"x" * big)
        subprocess.run(["git", "-C", str(work), "add", "x.bin"], check=True)
        subprocess.run(["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t",
                        "commit", "-qm", "x"], check=True)
    return subprocess.run(["git", "-C", str(work), "push", "--porcelain", "--atomic", url,
                           refspec], capture_output=True, text=True)


def _remote_refs(repo: Path) -> str:
    return _git(repo, "for-each-ref")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), *args], capture_output=True,
                          text=True, check=True).stdout


def _job_file(tmp_path: Path, jobs: list[str]) -> str:
    path = tmp_path / "jobs.txt"
    path.write_text("".join(job + "\n" for job in jobs))
    return str(path)


# ---- the emulations ------------------------------------------------------------------------------
def test_emulated_hosts_refuse_as_the_real_ones_do(tmp_path: Path, http: SmartHttpServer) -> None:
    """Over smart HTTP: no atomic push, custom refs refused, a 2 MB file refused with GH001."""
    no_atomic_bare(http.root, "na.git")
    branches_only_bare(http.root, "bo.git")
    size_limited_bare(http.root, 1 << 20, "big.git")
    proc = _push(tmp_path, http.url("na.git"), "HEAD:refs/heads/master", big=2 << 20)
    assert "the receiving end does not support --atomic push" in proc.stderr
    proc = _push(tmp_path, http.url("bo.git"), "HEAD:refs/distribute/lock")
    assert "pre-receive hook declined" in proc.stdout and proc.returncode != 0
    assert _push(tmp_path, http.url("bo.git"), "HEAD:refs/heads/x").returncode == 0
    proc = _push(tmp_path, http.url("big.git"), "HEAD:refs/heads/master")
    assert "GH001: Large files detected" in proc.stderr
    assert "File x.bin is 2.00 MB; this exceeds GitHub's file size limit of 1.00 MB" in proc.stderr
    assert _remote_refs(http.root / "big.git") == ""


# ---- no atomic push ------------------------------------------------------------------------------
def test_no_atomic_push_is_refused_at_first_contact_naming_it(cli: Run, tmp_path: Path,
                                                              http: SmartHttpServer) -> None:
    """``distribute init`` and ``distribute worker`` stop at once with one line naming "atomic"
    and why it is needed; nothing is written to the remote, no retry."""
    repo = no_atomic_bare(http.root)
    proc = cli("init", http.url(), rc=1)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "atomic" in lines[0] and "lock" in lines[0], proc.stderr
    assert "retrying" not in proc.stderr
    assert _remote_refs(repo) == ""
    # a ledger made while the host still allowed atomic pushes: the worker refuses to start
    subprocess.run(["git", "--git-dir", str(repo), "config", "receive.advertiseAtomic", "true"],
                   check=True)
    init_remote(http.url(), ["J1"])
    subprocess.run(["git", "--git-dir", str(repo), "config", "receive.advertiseAtomic", "false"],
                   check=True)
    before = _remote_refs(repo)
    proc = cli("worker", http.url(), "--run", "cli_jobs:write", rc=1)
    assert "atomic" in proc.stderr and "retrying" not in proc.stderr, proc.stderr
    assert _remote_refs(repo) == before


def test_no_atomic_push_over_git_daemon(cli: Run, tmp_path: Path) -> None:
    """The same over git://: one line naming "atomic"."""
    root = tmp_path / "d"
    root.mkdir()
    no_atomic_bare(root)
    with GitDaemon(root) as daemon:
        proc = cli("init", daemon.url(), rc=1)
    assert "atomic" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ---- big files -----------------------------------------------------------------------------------
def _run_workers(tmp_path: Path, url: str, count: int, env: dict[str, str],
                 run: str = "cli_jobs:sized") -> list[subprocess.CompletedProcess]:
    """Run ``count`` real worker processes until the queue is empty; return them ended."""
    procs = [subprocess.Popen(
        [sys.executable, "-m", "distribute", "worker", url, "--run", run,
         "--name", f"w{i}", "--exit-when-queue-empty"], cwd=tmp_path, env=cli_env(tmp_path, env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(count)]
    ended = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        ended.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return ended


def test_a_job_file_over_the_limit_fails_the_job_and_the_others_are_done(
        tmp_path: Path, http: SmartHttpServer) -> None:
    """A 1 MB GH001 host and ``DISTRIBUTE_MAX_FILE_MB=1``: the job writing 2 MB fails at once
    with a reason naming the file, its size and the limit; the others are done; workers exit 0."""
    size_limited_bare(http.root, 1 << 20)
    jobs = ["a", "big-2mb", "b", "c"]
    init_remote(http.url(), jobs)
    ended = _run_workers(tmp_path, http.url(), 2, {"DISTRIBUTE_MAX_FILE_MB": "1"})
    assert [p.returncode for p in ended] == [0, 0], [p.stderr[-2000:] for p in ended]
    failed = ledger_file(http.url(), "failed.txt", tmp_path)
    assert len(failed) == 1 and failed[0].startswith("big-2mb\t"), failed
    assert "big.bin is 2.00 MB, over the limit of 1.00 MB" in failed[0]
    assert sorted(jobs_in(http.url(), "done.txt", tmp_path)) == ["a", "b", "c"]
    assert "refused a file" not in "".join(p.stderr for p in ended)  # caught before any push


@pytest.mark.parametrize("job", ["big-2mb", "ckpt-big-2mb"])
def test_the_hosts_own_size_refusal_fails_the_job_not_the_fleet(
        tmp_path: Path, http: SmartHttpServer, job: str) -> None:
    """Without a limit set, the host's GH001 refusal (of the finish, or of a checkpoint) is
    recognised: the job fails naming the host's message, never "the lock was broken", no retry
    loop; the other job is done; the worker exits 0."""
    size_limited_bare(http.root, 1 << 20)
    init_remote(http.url(), [job, "a"])
    (ended,) = _run_workers(tmp_path, http.url(), 1, {"DISTRIBUTE_MAX_FILE_MB": "0"})
    assert ended.returncode == 0, ended.stderr[-3000:]
    assert "lock was broken" not in ended.stderr + ended.stdout
    failed = ledger_file(http.url(), "failed.txt", tmp_path)
    assert len(failed) == 1 and failed[0].startswith(job + "\t"), failed
    assert "GH001" in failed[0] and "big.bin is 2.00 MB" in failed[0], failed
    assert jobs_in(http.url(), "done.txt", tmp_path) == ["a"]


# ---- branches and tags only ----------------------------------------------------------------------
def _branches_only_remote(http: SmartHttpServer, jobs: list[str]) -> tuple[Path, str]:
    """A branches-and-tags-only host over smart HTTP, initialised with ``jobs``."""
    repo = branches_only_bare(http.root)
    init_remote(http.url(), jobs)
    return repo, http.url()


def test_init_records_a_branch_namespace_on_a_host_taking_only_branches_and_tags(
        cli: Run, tmp_path: Path, http: SmartHttpServer) -> None:
    """``distribute init`` finds that the host refuses ``refs/distribute/*`` and records
    ``refs/heads/_distribute/`` on master (``.distribute``), saying so; a plain host records
    nothing and keeps ``refs/distribute/``; neither keeps the probe's ref."""
    repo = branches_only_bare(http.root)
    out = cli("init", http.url(), "--jobs", _job_file(tmp_path, ["J1"])).stdout
    assert "refs/heads/_distribute/" in out and "only branches and tags" in out, out
    assert master_file(repo, ".distribute") == "layout 2\nrefs refs/heads/_distribute/\n"
    assert _remote_refs(repo).split()[-1] == "refs/heads/master"
    assert "nothing changed" in cli("init", http.url()).stdout  # (recorded once)
    plain = make_bare(http.root, "plain.git")
    out = cli("init", http.url("plain.git")).stdout
    assert "_distribute" not in out and master_file(plain, ".distribute") == "layout 2\n"
    assert _remote_refs(plain).split()[-1] == "refs/heads/master"


def test_four_workers_drain_twenty_jobs_on_a_host_taking_only_branches_and_tags(
        tmp_path: Path, http: SmartHttpServer) -> None:
    """4 ``distribute worker`` processes drain 20 jobs over smart HTTP on a host refusing every
    ref outside branches and tags: each job done exactly once, every worker exits 0, the
    coordination refs lived under ``refs/heads/_distribute/`` and nothing under
    ``refs/distribute/``; ``prune`` deletes a spent job branch and a dead heartbeat there, and
    takes no coordination ref for a job branch."""
    jobs = [f"j{i:02d}" for i in range(20)]
    repo, url = _branches_only_remote(http, jobs)
    ended = _run_workers(tmp_path, url, 4, {}, run="cli_jobs:write")
    assert [p.returncode for p in ended] == [0] * 4, [p.stderr[-2000:] for p in ended]
    assert "refuses" not in "".join(p.stderr for p in ended)
    assert_settled(url, jobs, tmp_path)
    assert Counter(jobs_in(url, "done.txt", tmp_path)) == Counter(jobs)  # exactly once
    refs = _remote_refs(repo)
    assert "refs/distribute/" not in refs and "refs/heads/_distribute/lock" not in refs
    # left behind: a done job's branch, a dead worker's heartbeat, a live waiter's wait ref
    job, owner = ledger_file(url, "done.txt", tmp_path)[0].split("\t")[:2]
    _git(repo, "update-ref", f"refs/heads/{owner}/{job}", "master")
    empty = _git(repo, "hash-object", "-t", "tree", "-w", "/dev/null").strip()
    for kind, ref in (("heartbeat", "hb/ghost@s1"), ("wait", "wait/ghost")):
        marker = _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit-tree", empty,
                      "-m", f"{kind} ghost").strip()
        _git(repo, "update-ref", f"refs/heads/_distribute/{ref}", marker)
    worker = worker_from_url(url, tmp_path / "pruner", name="pruner", lock_lease_s=600.0)
    try:
        assert worker.clone.namespace == BRANCH_COORD_PREFIX
        deleted = prune(worker)
    finally:
        worker.close()
    # (a worker's beat may outlive its exit when the holder's deletion of it lost its lease to
    # a last beat: prune takes it for dead as it does the ghost's)
    assert set(deleted) == {"heartbeats", "waits", "branches", "kept"} and deleted["waits"] == []
    # (an attempt that lost its job to a requeue on a busy machine left its branch: deleted with
    # the spent one, its tip kept in master's history first if master lacked it)
    assert f"refs/heads/{owner}/{job}" in deleted["branches"]
    assert set(deleted["kept"]) <= set(deleted["branches"])
    assert all(re.fullmatch(r"refs/heads/w[0-3]/j\d\d(@\d+)?(-[0-9a-f]{6})?", ref)
               for ref in deleted["branches"]), deleted["branches"]
    ghost = "refs/distribute/hb/ghost@s1"
    assert ghost in deleted["heartbeats"] and all(
        re.fullmatch(r"refs/distribute/hb/w[0-3]@[0-9a-f]+", ref)
        for ref in deleted["heartbeats"] if ref != ghost), deleted
    left = _remote_refs(repo).split()[2::3]
    assert left == ["refs/heads/_distribute/wait/ghost", "refs/heads/master"], left


def test_a_ledger_made_before_the_record_gets_it_from_init(
        cli: Run, tmp_path: Path, http: SmartHttpServer) -> None:
    """A ledger made while the host still took ``refs/distribute/*`` (so nothing was recorded),
    then a rule allowing only branches and tags: the worker stops at its first lock push with one
    line naming what the host refuses and what to run, no retry, the ledger untouched; running
    ``distribute init`` again records the branch namespace, and then the worker works."""
    repo = branches_only_bare(http.root)
    hook = repo / "hooks" / "pre-receive"
    hook.rename(repo / "rule")  # (the rule comes after the ledger)
    init_remote(http.url(), ["J1", "J2"])
    (repo / "rule").rename(hook)
    before, pushes = _remote_refs(repo), len(http.operations("push"))
    proc = cli("worker", http.url(), "--run", "cli_jobs:write", rc=1)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "refs/distribute/" in errors[0], proc.stderr
    assert "only branches and tags" in errors[0] and "distribute init" in errors[0]
    assert "retrying" not in proc.stderr
    assert len(http.operations("push")) - pushes <= 2  # the atomic probe, one refused push
    assert _remote_refs(repo) == before
    out = cli("init", http.url()).stdout
    assert "refs/heads/_distribute/" in out and "already has a job ledger" in out, out
    assert master_file(repo, ".distribute") == "layout 2\nrefs refs/heads/_distribute/\n"
    cli("worker", http.url(), "--run", "cli_jobs:write", "--exit-when-queue-empty")
    assert sorted(jobs_in(http.url(), "done.txt", tmp_path)) == ["J1", "J2"]


@pytest.mark.parametrize("transport", ["file", "git"])
def test_two_workers_on_a_branches_only_host_over_file_and_git_daemon(
        tmp_path: Path, transport: str) -> None:
    """The same host served over ``file://`` (full copies: ``DISTRIBUTE_SLIM_CLONE=0``, whose
    ``git clone`` brings the branch namespace too) and ``git://``: init records the namespace,
    two workers drain 6 jobs, each done once, and exit 0."""
    root = tmp_path / "d"
    root.mkdir()
    repo = branches_only_bare(root)
    jobs = [f"k{i}" for i in range(6)]
    with GitDaemon(root) as daemon:
        url = daemon.url() if transport == "git" else repo.as_uri()
        init_remote(url, jobs)
        env = {"DISTRIBUTE_SLIM_CLONE": "0"} if transport == "file" else {}
        ended = _run_workers(tmp_path, url, 2, env, run="cli_jobs:write")
        assert [p.returncode for p in ended] == [0, 0], [p.stderr[-2000:] for p in ended]
        assert_settled(url, jobs, tmp_path)
    assert "refs/heads/_distribute/" in master_file(repo, ".distribute")


def test_coordination_ref_names_map_to_the_remotes_namespace() -> None:
    """The code's names (``refs/distribute/…``) and the remote's, both ways; the record on
    master; the name no worker (and no report branch) may take."""
    ns = BRANCH_COORD_PREFIX
    assert on_remote("refs/distribute/lock", ns) == "refs/heads/_distribute/lock"
    assert on_remote("refs/distribute/*", ns) == "refs/heads/_distribute/*"
    assert on_remote("refs/heads/w0/job", ns) == "refs/heads/w0/job"
    assert on_remote("refs/distribute/lock", COORD_PREFIX) == "refs/distribute/lock"
    assert from_remote("refs/heads/_distribute/hb/w0@s", ns) == "refs/distribute/hb/w0@s"
    assert from_remote("refs/distribute/lock", ns) is None  # (nobody's, on such a remote)
    assert from_remote("refs/heads/master", ns) == "refs/heads/master"
    assert fetch_refspecs(ns)[1] == "+refs/heads/_distribute/*:refs/remotes/origin/distribute/*"
    assert parse_namespace(None) == parse_namespace("layout 2\n") == COORD_PREFIX
    assert parse_namespace(layout_text(2, ns)) == ns and parse_layout(layout_text(2, ns)) == 2
    with pytest.raises(DistributeError, match="upgrade distribute"):
        parse_namespace("layout 2\nrefs refs/elsewhere/\n")
    for name in ("_distribute", "_Distribute"):
        with pytest.raises(WorkerNameError):
            check_worker_name(name)
    assert check_worker_name("_distributed") == "_distributed"
    assert not is_page_branch("_distribute/page") and is_page_branch("_distributed")


# ---- reading the host's words --------------------------------------------------------------------
def test_host_refusals_are_told_apart_from_network_errors() -> None:
    """git's no-atomic line is a permanent "no-atomic" failure (not the network, though git adds
    "the remote end hung up"); GH001 and the custom-ref rule are read from the push's output; a
    lost compare-and-swap is neither."""
    no_atomic = diagnose("fatal: the receiving end does not support --atomic push\n"
                         "fatal: the remote end hung up unexpectedly\n")
    assert no_atomic.kind == "no-atomic" and not no_atomic.transient
    assert "atomic" in no_atomic.message("push") and "lock" in no_atomic.message("push")
    gh = too_large("remote: error: File a/b.bin is 2.00 MB; this exceeds GitHub's file size "
                   "limit of 1.00 MB\nremote: error: GH001: Large files detected.\n")
    assert gh is not None and "a/b.bin is 2.00 MB" in gh and host_limit_mb(gh) == 1.0
    assert too_large("fatal: the remote end hung up unexpectedly") is None
    hook = {"refs/distribute/lock": "[remote rejected] (pre-receive hook declined)"}
    assert custom_refs_refused(hook, "") is not None
    assert custom_refs_refused({"refs/distribute/lock": "stale info"}, "") is None
    assert custom_refs_refused({**hook, "refs/heads/master": "pre-receive hook declined"},
                               "") is None


@pytest.fixture
def empty_env_file(tmp_path: Path) -> Iterator[None]:
    """Settings read from an empty ``.env`` (none of the developer's) while the test runs."""
    (tmp_path / "empty.env").write_text("")
    settings.use_env_file(str(tmp_path / "empty.env"))
    yield
    settings.use_env_file(None)


def test_the_file_limit_defaults_to_50_mb_on_github_only(monkeypatch: pytest.MonkeyPatch,
                                                         empty_env_file: None) -> None:
    """Unset: 50 MB for GitHub remotes (ssh or https), no limit elsewhere; 0 means no limit."""
    monkeypatch.delenv("DISTRIBUTE_MAX_FILE_MB", raising=False)
    assert max_file_bytes("git@github.com:me/jobs.git") == 50 << 20
    assert max_file_bytes("https://github.com/me/jobs.git") == 50 << 20
    assert max_file_bytes("https://gitlab.com/me/jobs.git") is None
    assert max_file_bytes("file:///srv/notgithub.com/jobs.git") is None
    monkeypatch.setenv("DISTRIBUTE_MAX_FILE_MB", "0")
    assert max_file_bytes("git@github.com:me/jobs.git") is None
    monkeypatch.setenv("DISTRIBUTE_MAX_FILE_MB", "1.5")
    assert max_file_bytes("https://gitlab.com/me/jobs.git") == int(1.5 * 2**20)
