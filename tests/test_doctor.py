"""``distribute doctor``: the real command probes real git servers on loopback that behave like
the hosts of issue 25 (:mod:`support.hosts`, :mod:`support.faultyhttp`) and names each one's
rules; it leaves nothing on the remote."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.faultyhttp import FaultyHttpServer, PushFaultRates
from support.gitservers import SmartHttpServer, make_bare
from support.hosts import branches_only_bare, no_atomic_bare, size_limited_bare
from support.processes import Run


@pytest.fixture
def http(tmp_path: Path) -> Iterator[SmartHttpServer]:
    """A smart-HTTP git server over ``tmp_path/hosts`` with one repository per host kind."""
    root = tmp_path / "hosts"
    root.mkdir()
    make_bare(root, "plain.git")
    no_atomic_bare(root, "na.git")
    branches_only_bare(root, "bo.git")
    size_limited_bare(root, 1 << 20, "big.git")
    with SmartHttpServer(root) as server:
        yield server


def _doctor(cli: Run, url: str, rc: int, *more: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(cli("doctor", url, "--json", *more, rc=rc).stdout)
    return report


def _verdicts(report: dict[str, Any]) -> dict[str, Any]:
    return {name: check["ok"] for name, check in report["checks"].items()}


def _refs(repo: Path) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), "for-each-ref"], capture_output=True,
                          text=True, check=True).stdout


def test_doctor_names_each_hosts_rules(cli: Run, http: SmartHttpServer) -> None:
    """A stock server passes every probe; the others fail exactly theirs, with what distribute
    does about it and the recommended settings; exit 1 only where distribute cannot run."""
    plain = _doctor(cli, http.url("plain.git"), 0, "--file-mb", "1.5")
    assert set(_verdicts(plain).values()) == {True} and plain["usable"] is True
    no_atomic = _doctor(cli, http.url("na.git"), 1)
    assert _verdicts(no_atomic)["atomic"] is False and no_atomic["usable"] is False
    assert "atomic" in no_atomic["will_do"]
    branches = _doctor(cli, http.url("bo.git"), 0)  # (the coordination refs go to a namespace)
    assert [n for n, ok in _verdicts(branches).items() if not ok] == ["custom refs"]
    assert _verdicts(branches)["branch refs"] is True and branches["usable"] is True
    assert "refs/heads/_distribute/" in branches["will_do"]["custom refs"]
    assert "distribute init" in branches["will_do"]["custom refs"]
    assert "branch refs" not in _verdicts(plain)
    big = _doctor(cli, http.url("big.git"), 0, "--file-mb", "1.5")
    assert [n for n, ok in _verdicts(big).items() if not ok] == ["file size"]
    assert "GH001" in big["checks"]["file size"]["detail"]
    assert big["recommended"] == {"DISTRIBUTE_MAX_FILE_MB": "1"}
    for name in ("plain.git", "na.git", "bo.git", "big.git"):
        assert _refs(http.root / name) == ""  # nothing left behind


def test_doctor_text_output_says_what_distribute_does(cli: Run, http: SmartHttpServer) -> None:
    """Without ``--json``: one line per probe, the consequence under a failed one, a verdict."""
    out = cli("doctor", http.url("na.git"), rc=1).stdout
    assert "atomic          NO" in out and "refuses this host at first contact" in out
    assert out.strip().splitlines()[-1] == "distribute cannot run on this host: atomic"


def test_doctor_finds_a_host_that_answers_ok_without_applying(cli: Run, tmp_path: Path) -> None:
    """Every push answered ``ok`` and never applied (``misreported``): "truthful" fails."""
    make_bare(tmp_path)
    with FaultyHttpServer(tmp_path, PushFaultRates(0, 0, 0, misreported=1.0)) as server:
        report = _doctor(cli, server.url(), 0)
    assert _verdicts(report)["truthful"] is False
    assert _verdicts(report)["push"] is True
    assert "push again what is not there" in report["will_do"]["truthful"]
    assert report["recommended"] == {}  # (the default reads an HTTP host's pushes back)


def test_doctor_says_the_fleets_budget_on_the_host(cli: Run, http: SmartHttpServer) -> None:
    """A github.com remote (here rewritten by git's ``insteadOf`` to the loopback server) gets
    GitHub's published 6 pushes/min and 15 reads/s; another host is unlimited unless the
    settings say otherwise, and the settings win on GitHub too."""
    github = "https://github.com/me/jobs.git"
    rewrite = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_VALUE_0": github,
               "GIT_CONFIG_KEY_0": f"url.{http.url('plain.git')}.insteadOf"}
    report = json.loads(cli("doctor", github, "--json", env=rewrite).stdout)
    assert report["usable"] is True
    assert report["budget"] == {"pushes_per_min": 6.0, "reads_per_s": 15.0,
                                "source": "GitHub's published limits"}
    text = cli("doctor", github, env=rewrite).stdout
    assert "6 pushes/min and 15 reads/s per repository for the whole fleet" in text
    plain = _doctor(cli, http.url("plain.git"), 0)
    assert plain["budget"]["pushes_per_min"] == 0 and plain["budget"]["reads_per_s"] == 0
    assert "DISTRIBUTE_PUSHES_PER_MIN" in cli("doctor", http.url("plain.git")).stdout
    mine = json.loads(cli("doctor", github, "--json",
                          env={**rewrite, "DISTRIBUTE_PUSHES_PER_MIN": "60"}).stdout)
    assert mine["budget"]["pushes_per_min"] == 60.0 and mine["budget"]["reads_per_s"] == 15.0
    assert "DISTRIBUTE_PUSHES_PER_MIN from environment" in mine["budget"]["source"]
