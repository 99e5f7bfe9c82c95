"""Secret hygiene: tokens and URL passwords never reach the remote, logs, output or exceptions."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support import SUPPORT_DIR
from support.gitservers import SmartHttpServer, make_bare

from distribute import DistributeError, worker_from_url

pytestmark = pytest.mark.slow

PASSWORD = "pw-7f3a9c-Secret"
HF_TOKEN = "hf_FAKEtoken0123456789abcdef"
VAST_KEY = "vastkey-0123456789abcdef-FAKE"
SECRETS = (PASSWORD, HF_TOKEN, VAST_KEY)


def run_cli(tmp: Path, *args: str, check: bool = True) -> str:
    env = dict(os.environ, HF_TOKEN=HF_TOKEN, VAST_API_KEY=VAST_KEY,
               DISTRIBUTE_LOCK_LEASE_S="2", DISTRIBUTE_JOB_LEASE_S="3",
               DISTRIBUTE_POLL_MAX_S="0.2", DISTRIBUTE_POLL_S="0.2",
               DISTRIBUTE_CACHE_DIR=str(tmp / "cache"), PYTHONPATH=str(SUPPORT_DIR))
    proc = subprocess.run([sys.executable, "-m", "distribute", *args], capture_output=True,
                          text=True, env=env, timeout=300, cwd=tmp)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def all_remote_content(bare: Path) -> str:
    """Every ref name and every object (blobs, trees, commits) of the remote, as text."""
    refs = subprocess.run(["git", "--git-dir", str(bare), "for-each-ref"], capture_output=True,
                          text=True, check=True).stdout
    objects = subprocess.run(["git", "--git-dir", str(bare), "cat-file", "--batch-all-objects",
                              "--batch"], capture_output=True, check=True).stdout
    return refs + objects.decode("utf-8", "replace")


def test_no_secret_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("VAST_API_KEY", VAST_KEY)
    root = tmp_path / "srv"
    root.mkdir()
    bare = make_bare(root)
    with SmartHttpServer(root, "alice", PASSWORD) as server:
        url = server.url("remote.git")
        assert PASSWORD in url
        outputs = [run_cli(tmp_path, "init", url),
                   run_cli(tmp_path, "add", url, *[f"job{i}" for i in range(24)])]
        env = dict(os.environ, HF_TOKEN=HF_TOKEN, VAST_API_KEY=VAST_KEY,
                   PYTHONPATH=str(SUPPORT_DIR), DISTRIBUTE_LOCK_LEASE_S="2",
                   DISTRIBUTE_JOB_LEASE_S="3", DISTRIBUTE_POLL_MAX_S="0.2", DISTRIBUTE_POLL_S="0.2")
        procs = [subprocess.Popen([sys.executable, "-m", "distribute", "--debug", "worker", url,
                                   "--run", "cli_jobs:write", "--idle-exit", "--name", f"w{i}",
                                   "--path", str(tmp_path / f"w{i}")],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=env, cwd=tmp_path) for i in range(3)]
        captured: list[str] = []
        readers = [threading.Thread(target=lambda p=p: captured.append(p.stdout.read()))
                   for p in procs]
        for r in readers:
            r.start()
        deadline = time.monotonic() + 120
        while "job5" not in run_cli(tmp_path, "status", url):  # chaos: kill one mid-drain
            assert time.monotonic() < deadline
        procs[0].send_signal(signal.SIGKILL)
        for p in procs:
            p.wait(timeout=240)
        for r in readers:
            r.join()
        assert [p.returncode for p in procs[1:]] == [0, 0]
        outputs += captured
        outputs += [run_cli(tmp_path, *args) for args in
                    (("status", url), ("status", url, "--json"), ("log", url), ("unlock", url),
                     ("config",))]
        wrong = url.replace(PASSWORD, PASSWORD + "x")
        outputs.append(run_cli(tmp_path, "status", wrong, check=False))
        outputs.append(run_cli(tmp_path, "--debug", "status", wrong, check=False))
        with pytest.raises(DistributeError) as err:
            worker_from_url(wrong, tmp_path / "py", "py")
        outputs += [str(err.value), repr(err.value.args)]
    done = subprocess.run(["git", "--git-dir", str(bare), "show", "master:done.txt"],
                          capture_output=True, text=True, check=True).stdout
    assert len(done.splitlines()) == 24
    outputs += [caplog.text, all_remote_content(bare)]
    for secret in SECRETS:
        hits = [o for o in outputs if secret in o]
        assert not hits, f"{secret} leaked: {hits[0][:300]}"
