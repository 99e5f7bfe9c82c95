"""Hostile input, table-driven: each case ends in a clear error or in safe handling.

Every case runs the real command line in a subprocess with a time limit (nothing may hang), and
checks that errors are plain sentences (no traceback) and that the remote's history is intact.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Union

import pytest

from support import SUPPORT_DIR
from support.gitservers import make_bare
from support.remotes import git_out, ledger_file

OK, ERROR, USAGE = 0, 1, 2
Arg = Union[str, bytes]

# (id, arguments after `distribute` with {url} for the remote, expected exit code)
JOB_CASES: list[tuple[str, list[Arg], int]] = [
    ("newline", ["add", "{url}", "--", "a\nb"], ERROR),
    ("tab", ["add", "{url}", "--", "a\tb"], ERROR),
    ("carriage-return", ["add", "{url}", "--", "a\rb"], ERROR),
    ("line-separator", ["add", "{url}", "--", "a\u2028b"], ERROR),
    ("empty", ["add", "{url}", "--", ""], ERROR),
    ("blank", ["add", "{url}", "--", "   "], ERROR),
    ("dotdot", ["add", "{url}", "--", ".."], OK),
    ("path-escape", ["add", "{url}", "--", "../../../../tmp/escaped"], OK),
    ("leading-dash", ["add", "{url}", "--", "-rf"], OK),
    ("upload-pack", ["add", "{url}", "--", "--upload-pack=touch pwned-upload"], OK),
    ("shell-subst", ["add", "{url}", "--", "$(touch pwned-subst)"], OK),
    ("shell-backtick", ["add", "{url}", "--", "`touch pwned-tick`"], OK),
    ("shell-chain", ["add", "{url}", "--", "x; touch pwned-chain && echo"], OK),
    ("glob-and-quotes", ["add", "{url}", "--", "*'\"?[a]{b}"], OK),
    ("ref-syntax", ["add", "{url}", "--", "@{-1}^~:HEAD.lock"], OK),
    ("slashes", ["add", "{url}", "--", "refs/heads/master"], OK),
    ("long-10000", ["add", "{url}", "--", "L" * 10000], OK),
    ("rtl-marks", ["add", "{url}", "--", "\u202egnp.exe\u200f"], OK),
    ("non-ascii", ["add", "{url}", "--", "ジョブ-ünï"], OK),
    ("non-utf8-bytes", ["add", "{url}", "--", b"bad-\xff\xfe"], ERROR),
]
URL_CASES: list[tuple[str, list[Arg], int]] = [
    ("ext-transport", ["status", "ext::sh -c touch% pwned-ext"], ERROR),
    ("proxycommand", ["status", "-oProxyCommand=touch pwned-proxy"], ERROR),
    ("ssh-proxycommand", ["status", "ssh://-oProxyCommand=touch%20pwned-ssh/x"], ERROR),
    ("garbage", ["status", "::::"], ERROR),
    ("file-outside", ["status", "file:///etc"], ERROR),
    ("missing-repo", ["status", "file:///nonexistent/repo.git"], ERROR),
    ("not-initialised", ["status", "{empty}"], ERROR),
    ("refused-port", ["status", "git://127.0.0.1:1/x.git"], ERROR),
    ("newline-url", ["status", "file:///tmp/x\n--upload-pack=touch pwned-nl"], ERROR),
]
CLI_CASES: list[tuple[str, list[Arg], int]] = [
    ("unknown-command", ["frobnicate"], USAGE),
    ("no-remote", ["status"], USAGE),
    ("bad-max-jobs", ["worker", "{url}", "--run", "cli_jobs:write", "--max-jobs", "-1"], USAGE),
    ("bad-poll", ["worker", "{url}", "--run", "cli_jobs:write", "--poll", "soon"], USAGE),
    ("bad-run-spec", ["worker", "{url}", "--run", "no colon here"], USAGE),
    ("missing-module", ["worker", "{url}", "--run", "no_such_module_x:f"], ERROR),
    ("missing-function", ["worker", "{url}", "--run", "cli_jobs:nope"], ERROR),
    ("bad-worker-name", ["worker", "{url}", "--run", "cli_jobs:write", "--name", "../x"], ERROR),
    ("requeue-nothing", ["requeue", "{url}"], USAGE),
    ("log-negative", ["log", "{url}", "-n", "x"], USAGE),
]
ENV_CASES: list[tuple[str, str, int]] = [
    ("env-not-a-number", "DISTRIBUTE_LOCK_LEASE_S=soon\n", ERROR),
    ("env-negative", "DISTRIBUTE_JOB_LEASE_S=-5\n", ERROR),
    ("env-garbage-lines", "this is not a setting\n=\n\x00\nDISTRIBUTE_POLL_S=0.2\n", OK),
    ("env-quotes-export", "export DISTRIBUTE_POLL_S='0.2'\n# comment\n", OK),
    ("env-remote-ext", "DISTRIBUTE_REMOTE=ext::sh -c touch% pwned-env\n", ERROR),
]


def run(tmp: Path, argv: list[Arg], cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(SUPPORT_DIR), DISTRIBUTE_CACHE_DIR=str(tmp / "cache"),
               DISTRIBUTE_NET_RETRIES="1", DISTRIBUTE_POLL_MAX_S="0.2")
    if cwd is None:  # the .env cases set these themselves
        env.update(DISTRIBUTE_POLL_S="0.2", DISTRIBUTE_LOCK_LEASE_S="2", DISTRIBUTE_JOB_LEASE_S="3")
    args = [os.fsencode(a) if isinstance(a, str) else a for a in argv]
    return subprocess.run([os.fsencode(sys.executable), b"-m", b"distribute", *args],
                          capture_output=True, timeout=120, env=env, cwd=cwd or tmp)


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    tmp = tmp_path_factory.mktemp("hostile")
    url = "file://" + str(make_bare(tmp / "srv"))
    empty = "file://" + str(make_bare(tmp / "srv", "empty.git"))
    assert run(tmp, ["init", url]).returncode == 0
    return url, empty, tmp


def check(proc: subprocess.CompletedProcess, expected: int) -> None:
    out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert proc.returncode == expected, out[-2000:]
    assert "Traceback" not in out
    if expected == ERROR:
        assert out.strip().splitlines()[-1].startswith("error: "), out[-500:]


@pytest.mark.parametrize("case", JOB_CASES + URL_CASES + CLI_CASES, ids=lambda c: c[0])
def test_hostile_arguments(remote: tuple[str, str, Path], case: tuple[str, list[Arg], int]) -> None:
    url, empty, tmp = remote
    before = git_out(url, "rev-parse", "master", tmp=tmp)
    argv = [a.replace("{url}", url).replace("{empty}", empty) if isinstance(a, str) else a
            for a in case[1]]
    check(run(tmp, argv), case[2])
    if case[2] != OK:
        assert git_out(url, "rev-parse", "master", tmp=tmp) == before  # nothing written


@pytest.mark.parametrize("case", ENV_CASES, ids=lambda c: c[0])
def test_hostile_env_file(remote: tuple[str, str, Path], case: tuple[str, str, int]) -> None:
    url, _, tmp = remote
    workdir = tmp / f"env-{case[0]}"
    workdir.mkdir()
    (workdir / ".env").write_text(case[1])
    argv = ["status"] if "DISTRIBUTE_REMOTE" in case[1] else ["worker", url, "--run",
                                                              "cli_jobs:write", "--max-jobs", "1",
                                                              "--exit-when-queue-empty"]
    check(run(tmp, argv, cwd=workdir), case[2])


@pytest.mark.slow
def test_hostile_jobs_are_processed_safely(remote: tuple[str, str, Path]) -> None:
    """After the table above: a worker drains the jobs that were accepted, all stay inside."""
    url, _, tmp = remote
    accepted = [c for c in JOB_CASES if c[2] == OK]
    if not ledger_file(url, "jobs.txt", tmp):
        for case in accepted:
            run(tmp, [a.replace("{url}", url) if isinstance(a, str) else a for a in case[1]])
    check(run(tmp, ["worker", url, "--run", "cli_jobs:write", "--idle-exit",
                    "--path", str(tmp / "drain"), "--name", "drain"]), OK)
    done = [l.split("\t")[0] for l in ledger_file(url, "done.txt", tmp)]
    assert len(done) >= len(accepted) and len(set(done)) == len(done)
    files = git_out(url, "ls-tree", "-r", "--name-only", "master", tmp=tmp).split("\n")
    assert all(f.startswith("updates/") or f.endswith(".txt") or f == ".distribute"
               for f in files if f)
    assert not any(p.name.startswith("pwned") for p in Path("/").glob("tmp/pwned*"))
    assert not list(tmp.rglob("pwned*")) and not (tmp.parent / "escaped").exists()
    subprocess.run(["git", "--git-dir", url.removeprefix("file://"), "fsck", "--strict"],
                   check=True, capture_output=True)
