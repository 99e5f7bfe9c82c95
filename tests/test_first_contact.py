"""What a new user meets first: remotes given as relative paths, remotes that cannot be reached,
options before the command, a closed pipe, the examples, and the small messages.

Everything runs as a real ``python -m distribute`` process against real remotes and servers on
this machine: unknown hosts are names under ``.invalid`` (never resolvable, so these tests need no
network), refused connections go to a port nobody listens on, refused credentials come from the
tests' HTTP git server, and HTTP 403 / 503 from a small server answering only that.

"Fails within seconds" is asserted by what the command says, not by a clock: a failure that
retrying cannot fix is reported without a single "retrying" warning, while a transient one is
retried exactly ``DISTRIBUTE_NET_RETRIES`` times, each warning naming git's cause.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from support.gitservers import SmartHttpServer, SshServer, free_port, make_bare, ssh_available
from support.processes import Run
from support.remotes import jobs_in

from distribute import NotARemoteError, RemoteError, init_remote, worker_from_url
from distribute.repo import Clone
from distribute.repo.transport import diagnose

HERE = Path(__file__).parent
EXAMPLES = HERE.parent / "examples"
INTERACTIVE = [("init",), ("add", "job-1"), ("status",), ("log",), ("requeue", "job-1"),
               ("unlock",)]


class _FixedAnswer(BaseHTTPRequestHandler):
    """Answers every request with the status code that starts its path: ``/403/x.git``."""

    def do_GET(self) -> None:  # noqa: N802 - the handler's API
        self.send_response(int(self.path.split("/")[1]))
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet."""


@pytest.fixture
def fixed_answers() -> Iterator[str]:
    """The base URL of a server answering ``/<code>/...`` with HTTP ``<code>``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FixedAnswer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _one_error(proc: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of a failed command that did not retry."""
    assert "retrying" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# ---- 1. relative paths ---------------------------------------------------------------------------
@pytest.mark.slow
def test_relative_paths_work_wherever_a_remote_is_accepted(cli: Run, tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", "--bare", "jobs.git"], cwd=tmp_path, check=True)
    assert "initialised the job ledger on " + str(tmp_path / "jobs.git") in \
        cli("init", "jobs.git").stdout
    assert "added 2 jobs" in cli("add", "./jobs.git", "a", "b").stdout
    sub = tmp_path / "sub"
    sub.mkdir()
    assert "added 1 job" in cli("add", "../jobs.git", "c", cwd=sub).stdout
    assert "added 1 job" in cli("add", "~/jobs.git", "d", env={"HOME": str(tmp_path)}).stdout
    assert "added 1 job" in cli("add", "e", env={"DISTRIBUTE_REMOTE": "jobs.git"}).stdout
    snap = json.loads(cli("status", "jobs.git", "--json").stdout)
    assert snap["queued"] == ["a", "b", "c", "d", "e"]
    out = cli("worker", "../jobs.git", "--run", "cli_jobs:write", "--name", "w", "--max-jobs", "1",
              cwd=sub).stdout
    assert "w finished job a" in out and "w stopped (max jobs)" in out
    assert "w finished job a" in cli("log", "./jobs.git").stdout
    # the Python API takes them too
    subprocess.run(["git", "init", "-q", "--bare", "api.git"], cwd=tmp_path, check=True)
    assert init_remote("api.git", ["x"]) is True
    assert init_remote("./api.git") is False
    worker = worker_from_url("api.git", "copy", "api-worker")
    try:
        assert worker.get_next_job(lambda: "y") == "y"
        worker.finish_job()
    finally:
        worker.close()
    assert jobs_in(str(tmp_path / "api.git"), "jobs.txt", tmp_path) == ["x"]
    assert jobs_in(str(tmp_path / "api.git"), "done.txt", tmp_path) == ["y"]


# ---- 2. remotes that cannot be reached -----------------------------------------------------------
@pytest.mark.parametrize("url,cause", [
    ("https://jobs.invalid/me/jobs.git", "Could not resolve host: jobs.invalid"),
    ("git://jobs.invalid/jobs.git", "unable to look up jobs.invalid"),
    ("git@jobs.invalid:me/jobs.git", "ssh: Could not resolve hostname jobs.invalid"),
])
def test_unknown_host_fails_at_once_naming_the_cause(cli: Run, tmp_path: Path, url: str,
                                                     cause: str) -> None:
    if url.startswith("git@") and not shutil.which("ssh"):
        pytest.skip("no ssh client")
    for command in INTERACTIVE if url.startswith("https") else [("status",)]:
        err = _one_error(cli(command[0], url, *command[1:], rc=1))
        assert cause in err and "unknown host" in err, err
    err = _one_error(cli("worker", url, "--run", "cli_jobs:write", rc=1))
    assert cause in err
    assert not (tmp_path / ".distribute").exists()  # a failed start leaves no copy behind
    assert not any((tmp_path / "cache").glob("*"))


def test_refused_credentials_and_missing_repositories_fail_at_once(
        cli: Run, tmp_path: Path, fixed_answers: str) -> None:
    root = tmp_path / "auth"
    root.mkdir()
    make_bare(root)
    with SmartHttpServer(root, "alice", "s3cret-pw") as server:
        anonymous, wrong = (server.url(with_credentials=False),
                            server.url().replace("s3cret-pw", "wrong-pw"))
        for url, command in ((anonymous, ("status",)), (anonymous, ("init",)), (wrong, ("add", "j")),
                             (wrong, ("worker", "--run", "cli_jobs:write"))):
            err = _one_error(cli(command[0], url, *command[1:], rc=1))
            assert "Authentication failed" in err and "access refused" in err, err
            assert "s3cret-pw" not in err and "wrong-pw" not in err
        err = _one_error(cli("status", server.url("absent.git"), rc=1))
        assert "absent.git/' not found" in err and "no repository there" in err
    err = _one_error(cli("log", fixed_answers + "/403/jobs.git", rc=1))
    assert "The requested URL returned error: 403" in err and "access refused" in err
    err = _one_error(cli("add", str(tmp_path / "missing.git"), "job", rc=1))
    assert "does not appear to be a git repository" in err


def test_transient_failures_are_retried_with_the_cause_in_each_warning(
        cli: Run, fixed_answers: str) -> None:
    retries = {"DISTRIBUTE_NET_RETRIES": "2"}
    for url, cause in ((f"http://127.0.0.1:{free_port()}/jobs.git", "Couldn't connect to server"),
                       (f"git://127.0.0.1:{free_port()}/jobs.git", "Connection refused"),
                       (fixed_answers + "/503/jobs.git", "returned error: 503")):
        err = cli("status", url, rc=1, env=retries).stderr.strip().splitlines()
        warnings = [line for line in err if "retrying in" in line]
        assert len(warnings) == 2 and all(cause in w for w in warnings), err
        assert err[-1].startswith("error: fetch failed after 3 attempts: ") and cause in err[-1]


@pytest.mark.skipif(not ssh_available(), reason="needs sshd (apt-get install openssh-server)")
def test_ssh_key_refused_and_unknown_host_key_fail_at_once(cli: Run, tmp_path: Path) -> None:
    root = tmp_path / "ssh"
    root.mkdir()
    make_bare(root)
    other_key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)],
                   check=True)
    with SshServer(root) as server:
        opts = " ".join(f"-o {k}={v}" for k, v in server.client_options().items()
                        if k != "IdentityFile")
        wrong_key = {"GIT_SSH_COMMAND": f"ssh -i {other_key} {opts}"}
        err = _one_error(cli("status", server.url(), rc=1, env=wrong_key))
        assert "Permission denied (publickey" in err and "access refused" in err, err
        strict = {"GIT_SSH_COMMAND": server.ssh_command().replace(
            "StrictHostKeyChecking=no", "StrictHostKeyChecking=yes")}
        err = _one_error(cli("status", server.url(), rc=1, env=strict))
        assert "Host key verification failed" in err and "known_hosts" in err, err


def test_a_running_worker_still_rides_out_an_unknown_host(
        file_remote: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Once the remote was reached, a failure that looks like the network is retried as before
    (a worker must survive a DNS outage); before that, the same failure is final at once."""
    init_remote(file_remote)
    clone = Clone.clone(file_remote, tmp_path / "copy", retries=1, backoff_s=0.01)
    clone.fetch()
    assert clone.reached
    clone.git("remote", "set-url", "origin", "https://jobs.invalid/jobs.git")
    with caplog.at_level(logging.WARNING), pytest.raises(RemoteError, match="after 2 attempts"):
        clone.fetch()
    assert any("jobs.invalid" in r.getMessage() and "retrying" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    fresh = Clone(tmp_path / "copy", retries=1, backoff_s=0.01)
    with pytest.raises(RemoteError, match="unknown host"):
        fresh.fetch()
    assert not caplog.records
    with pytest.raises(NotARemoteError, match="no repository there"):
        Clone.clone(str(tmp_path / "none.git"), tmp_path / "copy2", retries=3)


@pytest.mark.parametrize("stderr,kind,cause", [
    ("ERROR: Repository not found.\nfatal: Could not read from remote repository.\n\nPlease make "
     "sure you have the correct access rights\nand the repository exists.\n",
     "not-found", "ERROR: Repository not found."),
    ("git@host: Permission denied (publickey).\nfatal: Could not read from remote repository.\n",
     "auth", "git@host: Permission denied (publickey)."),
    ("remote: Permission to me/jobs.git denied to bot.\nfatal: unable to access "
     "'https://host/me/jobs.git/': The requested URL returned error: 403\n", "auth",
     "remote: Permission to me/jobs.git denied to bot."),
    ("remote: The project you were looking for could not be found or you don't have permission "
     "to view it.\nfatal: repository 'https://host/me/jobs.git/' not found\n", "not-found",
     "remote: The project you were looking for could not be found"),
    ("remote: HTTP Basic: Access denied\nfatal: Authentication failed for 'https://host/x.git/'\n",
     "auth", "remote: HTTP Basic: Access denied"),
    ("kex_exchange_identification: Connection closed by remote host\nConnection closed by 1.2.3.4 "
     "port 22\nfatal: Could not read from remote repository.\n", "transient",
     "kex_exchange_identification: Connection closed by remote host"),
    ("ssh: Could not resolve hostname host: Temporary failure in name resolution\nfatal: Could "
     "not read from remote repository.\n", "transient", "Temporary failure in name resolution"),
    ("error: RPC failed; HTTP 502 curl 22 The requested URL returned error: 502\nfatal: expected "
     "'packfile'\n", "transient", "RPC failed; HTTP 502"),
    ("fatal: unable to access 'https://host/x.git/': Failed to connect to host port 443 after "
     "130 ms: Connection timed out\n", "transient", "Connection timed out"),
    ("fatal: couldn't find remote ref refs/heads/master\n", "other",
     "couldn't find remote ref refs/heads/master"),
])
def test_git_messages_of_hosted_remotes_are_classified(stderr: str, kind: str, cause: str) -> None:
    """Messages that GitHub-, GitLab- and ssh-hosted remotes answer with, as git prints them."""
    failure = diagnose(stderr)
    assert failure.kind == kind and cause in failure.cause
    assert "Could not read from remote repository" not in failure.cause


# ---- 4. options before the command ---------------------------------------------------------------
@pytest.mark.slow
def test_common_options_work_before_and_after_the_command(cli: Run, file_remote: str,
                                                          tmp_path: Path) -> None:
    cli("init", file_remote)
    (tmp_path / "prod.env").write_text(f"DISTRIBUTE_REMOTE={file_remote}\n")
    for args in (("--env-file", "prod.env", "status"), ("status", "--env-file", "prod.env")):
        assert "remote:  " + file_remote in cli(*args).stdout
    missing = str(tmp_path / "missing.git")
    for args in (("--debug", "status", missing), ("status", missing, "--debug")):
        assert "Traceback" in cli(*args, rc=1).stderr
    assert "Traceback" not in cli("status", missing, rc=1).stderr
    cli("add", file_remote, "job-1", "job-2", "job-3")
    for args in (("-v", "worker", file_remote), ("worker", file_remote, "-v")):
        err = cli(*args, "--run", "cli_jobs:write", "--max-jobs", "1").stderr
        assert "INFO: " in err and "took job" in err, err
    assert "INFO: " not in cli("worker", file_remote, "--run", "cli_jobs:write",
                                "--max-jobs", "1").stderr


# ---- 5. a reader that went away ------------------------------------------------------------------
def test_a_closed_pipe_ends_commands_quietly_and_workers_go_on(cli: Run, file_remote: str,
                                                               tmp_path: Path) -> None:
    cli("init", file_remote)
    cli("add", file_remote, *(f"job-{i}" for i in range(3)))
    read, write = os.pipe()
    os.close(read)  # like `| head` once it has read enough: every write now fails with EPIPE
    try:
        for args in (("status", file_remote), ("config", "--json"), ("log", file_remote),
                     ("status", file_remote, "--json")):
            proc = cli(*args, rc=141, stdout=write)
            assert proc.stderr == "", proc.stderr
        proc = cli("worker", file_remote, "--run", "cli_jobs:write", "--idle-exit", stdout=write)
    finally:
        os.close(write)
    assert "progress lines are dropped" in proc.stderr and "error" not in proc.stderr
    assert json.loads(cli("status", file_remote, "--json").stdout)["counts"]["done"] == 3


# ---- 6. the small things -------------------------------------------------------------------------
@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_answers_help(example: str) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / example), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("usage:"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_readme_loop_on_an_existing_ledger_queues_its_jobs(file_remote: str) -> None:
    init_remote(file_remote, ["zeta"])
    proc = subprocess.run([sys.executable, str(EXAMPLES / "readme_loop.py"), file_remote],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "has a ledger already: queued ['alpha', 'beta', 'gamma']" in proc.stdout
    assert "queue_jobs_func:  ['zeta', 'alpha', 'beta', 'gamma']" in proc.stdout


@pytest.mark.slow
def test_progress_says_what_100_percent_means_and_requeue_keeps_the_order(
        cli: Run, file_remote: str, tmp_path: Path) -> None:
    cli("init", file_remote)
    cli("add", file_remote, "good-1", "boom-1", "boom-2", "boom-3", "good-2")
    cli("worker", file_remote, "--run", "cli_jobs:write", "--exit-when-queue-empty")
    text = cli("status", file_remote).stdout
    assert "100% of 5 jobs ended: 2 done · 3 failed · 0 running · 0 queued" in text
    out = cli("requeue", file_remote, "boom-3", "boom-1").stdout
    assert out.index("requeued job boom-3") < out.index("requeued job boom-1")
    assert jobs_in(file_remote, "jobs.txt", tmp_path) == ["boom-3", "boom-1"]
    assert " 60% of 5 jobs ended: 2 done · 1 failed" in cli("status", file_remote).stdout
    err = cli("requeue", file_remote, rc=2).stderr
    assert "nothing to requeue: name the jobs after REMOTE" in err and "--stale" in err
    err = cli("requeue", file_remote, "boom-2", "--stale", rc=2).stderr
    assert "--stale picks the jobs itself; leave out the job names (boom-2)" in err


def test_a_failed_start_with_a_fixed_name_leaves_no_copy(cli: Run, tmp_path: Path) -> None:
    empty = make_bare(tmp_path / "srv", "empty.git")  # no ledger yet: the worker cannot start
    for _ in range(2):
        err = cli("worker", str(empty), "--run", "cli_jobs:write", "--name", "fixed", rc=1).stderr
        assert "distribute init" in err
        assert not (tmp_path / ".distribute").exists()


def test_config_lists_every_setting_including_the_vast_ones(cli: Run) -> None:
    names = ("VAST_RETRY_TOTAL", "VAST_RETRY_BACKOFF", "VAST_RETRY_BACKOFF_MAX", "VAST_TIMEOUT_S")
    text = cli("config").stdout
    assert all(f"\n{name} " in "\n" + text for name in names), text
    data = json.loads(cli("config", "--json", env={"VAST_TIMEOUT_S": "12"}).stdout)
    assert data["VAST_RETRY_TOTAL"] == "5" and data["VAST_TIMEOUT_S"] == "12"
