"""Reading and writing the tests' remotes with plain git, as a person or an inspector would."""
from __future__ import annotations

import collections
import subprocess
from pathlib import Path

from distribute.protocol import job_path


def git_out(url: str, *args: str, tmp: Path) -> str:
    """Run a git command in a fresh mirror of ``url`` (fetched each call) and return stdout."""
    mirror = tmp / "inspect.git"
    if not mirror.exists():
        subprocess.run(["git", "init", "-q", "--bare", str(mirror)], check=True)
    subprocess.run(["git", "-C", str(mirror), "fetch", "-q", "--prune", url,
                    "+refs/*:refs/*"], check=True)
    return subprocess.run(["git", "-C", str(mirror), *args], check=True, capture_output=True,
                          text=True).stdout


def ledger_file(url: str, name: str, tmp: Path) -> list[str]:
    """The non-empty lines of a ledger file on the remote's master."""
    return [l for l in git_out(url, "show", f"master:{name}", tmp=tmp).splitlines() if l]


def jobs_in(url: str, name: str, tmp: Path) -> list[str]:
    """The jobs (first fields) of a ledger file on the remote's master."""
    return [l.split("\t")[0] for l in ledger_file(url, name, tmp)]


def assert_settled(url: str, jobs: list[str], tmp: Path) -> list[str]:
    """Every job done exactly once, nothing queued or running, results on master, lock free;
    return the worker of each done line."""
    done = jobs_in(url, "done.txt", tmp)
    assert sorted(done) == sorted(jobs), collections.Counter(done).most_common(3)
    assert jobs_in(url, "running.txt", tmp) == []
    assert jobs_in(url, "jobs.txt", tmp) == []
    files = set(git_out(url, "ls-tree", "-r", "--name-only", "master", tmp=tmp).split())
    assert {f"{job_path(j)}/result.txt" for j in jobs} <= files
    refs = git_out(url, "for-each-ref", "--format=%(refname)", tmp=tmp).split()
    assert "refs/distribute/lock" not in refs
    return [l.split("\t")[1] for l in ledger_file(url, "done.txt", tmp)]


def fsck(bare: Path) -> None:
    """Fail unless the bare repository passes ``git fsck --strict``."""
    subprocess.run(["git", "--git-dir", str(bare), "fsck", "--strict", "--no-dangling"],
                   check=True, capture_output=True)


def person(url: str, workdir: Path, *args: str) -> str:
    """Run plain git as a person would, in ``workdir`` (cloned from ``url`` on first use)."""
    if not workdir.exists():
        subprocess.run(["git", "clone", "-q", url, str(workdir)], check=True)
        for key, value in (("user.name", "person"), ("user.email", "person@example.com")):
            subprocess.run(["git", "-C", str(workdir), "config", key, value], check=True)
    return subprocess.run(["git", "-C", str(workdir), *args], check=True, capture_output=True,
                          text=True).stdout


def person_appends(url: str, workdir: Path, jobs: list[str]) -> None:
    """Append ``jobs`` to jobs.txt, commit and push; on a refused push pull --rebase and retry."""
    person(url, workdir, "pull", "-q", "--rebase", "origin", "master")
    with open(workdir / "jobs.txt", "a", encoding="utf-8") as f:
        f.write("".join(j + "\n" for j in jobs))
    person(url, workdir, "commit", "-q", "-am", f"person added {len(jobs)} jobs")
    for _ in range(100):
        if subprocess.run(["git", "-C", str(workdir), "push", "-q", "origin", "HEAD:master"],
                          capture_output=True).returncode == 0:
            return
        person(url, workdir, "pull", "-q", "--rebase", "origin", "master")
    raise AssertionError("the person could never push")
