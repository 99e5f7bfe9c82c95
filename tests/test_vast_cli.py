"""The Vast.ai commands (rent, nodes, terminate, offers) as real processes against the fake API."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator, Optional

import pytest

from support.processes import Run
from support.vastserver import FakeVast, make_offer

KEY = "cli-test-key-93e1d7"
NODE_KEY = "node-scoped-key-41b8"
REMOTE = "git@github.com:me/jobs.git"


@pytest.fixture
def fake() -> Iterator[FakeVast]:
    offers = [make_offer(i, round(i / 10, 2), gpu_name="RTX 4090" if i % 2 else "RTX 3090")
              for i in range(1, 7)]
    with FakeVast(api_key=KEY, offers=offers) as server:
        yield server


@pytest.fixture
def cli_settings(fake: FakeVast) -> dict[str, Optional[str]]:
    """Every command talks to the fake API with the test's key and quick retries."""
    return {"VAST_API_URL": fake.url, "VAST_API_KEY": KEY, "VAST_RETRY_BACKOFF": "0.01",
            "VAST_RETRY_TOTAL": "2"}


@pytest.fixture
def cli_fast() -> bool:
    """The commands pass the settings they see on to the nodes: no test settings among them."""
    return False


RENT = ("rent", "--max-price", "0.35", "--image", "me/distribute-worker:1", "--remote", REMOTE,
        "--run", "myjobs:run")


def test_offers_table_and_json(cli: Run, fake: FakeVast) -> None:
    out = cli("offers", "--max-price", "0.45").stdout.splitlines()
    assert out[0].split() == ["OFFER", "GPU", "GPU", "GB", "$/H", "RELIAB", "CUDA", "LOCATION"]
    assert [line.split()[0] for line in out[1:]] == ["1", "2", "3", "4"]
    assert "1x RTX 4090" in out[1] and "0.1000" in out[1]
    got = json.loads(cli("offers", "--max-price", "1", "--query", "gpu_name=RTX_3090",
                         "--json", "--limit", "2").stdout)
    assert [o["id"] for o in got] == [2, 4]
    assert fake.requests("POST")[-1].body["gpu_name"] == {"eq": "RTX 3090"}
    assert "no offer" in cli("offers", "--max-price", "0.01").stdout


@pytest.mark.slow
def test_bad_query_and_price_are_usage_errors(cli: Run, fake: FakeVast) -> None:
    err = cli("offers", "--max-price", "1", "--query", "gpu_ram>=lots", rc=2).stderr
    assert "--query" in err and "lots" in err
    assert "positive" in cli("offers", "--max-price", "-1", rc=2).stderr
    for bad in ("nan", "inf", "cheap"):
        assert "--max-price must be" in cli("offers", "--max-price", bad, rc=2).stderr
    assert "--disk must be" in cli(*RENT, "--nodes", "1", "--disk", "nan", rc=2).stderr
    assert fake.calls == []


def test_missing_key_is_one_sentence(cli: Run) -> None:
    err = cli("offers", "--max-price", "1", rc=1, env={"VAST_API_KEY": None}).stderr
    assert err.strip().splitlines() == [
        "error: no Vast.ai API key: set VAST_API_KEY in the environment or a .env file"]


def test_rent_dry_run_shows_offers_env_and_command(cli: Run, fake: FakeVast) -> None:
    out = cli(*RENT, "--nodes", "2", "--self-destruct", "--dry-run", "--env",
              "DISTRIBUTE_GIT_TOKEN=ghp_secret_token_1", "--env", "X=a b",
              env={"VAST_NODE_API_KEY": NODE_KEY}).stdout
    assert "would rent 2 of 2" in out and "ghp_secret_token_1" not in out
    env_line = next(line for line in out.splitlines() if line.startswith("image "))
    shown = json.loads(env_line.split(" env ", 1)[1])
    assert shown == {"DISTRIBUTE_GIT_TOKEN": "***", "X": "a b", "DISTRIBUTE_REMOTE": REMOTE,
                     "DISTRIBUTE_RUN": "myjobs:run", "DISTRIBUTE_SELF_DESTRUCT": "1",
                     "VAST_API_KEY": "***"}
    assert ("each node runs: distribute worker --run=myjobs:run --name=vast-$CONTAINER_ID "
            f"--idle-exit --self-destruct -- {REMOTE}") in out
    assert fake.requests("PUT") == [] and fake.instances == {}


def test_rent_rents_saves_and_lists(cli: Run, fake: FakeVast, tmp_path: Path) -> None:
    proc = cli(*RENT, "--nodes", "2", "--self-destruct", "--env", "DISTRIBUTE_EXTRA_PIP=mypkg",
               env={"VAST_NODE_API_KEY": NODE_KEY})
    ids = sorted(fake.instances)
    assert len(ids) == 2 and all(str(i) in proc.stdout for i in ids)
    assert "rented 2 node(s) for $0.3000/h" in proc.stdout and "vast-nodes.json" in proc.stdout
    for iid in ids:
        assert fake.instance_env[iid] == {
            "DISTRIBUTE_EXTRA_PIP": "mypkg", "DISTRIBUTE_REMOTE": REMOTE,
            "DISTRIBUTE_RUN": "myjobs:run", "DISTRIBUTE_SELF_DESTRUCT": "1",
            "VAST_API_KEY": NODE_KEY}
        assert fake.instances[iid]["image_uuid"] == "me/distribute-worker:1"
    saved = (tmp_path / "vast-nodes.json").read_text()
    assert KEY not in saved and NODE_KEY not in saved
    assert sorted(n["instance_id"] for n in json.loads(saved)["nodes"]) == ids
    cli(*RENT, "--nodes", "1", "--nodes-file", "more/nodes.json")
    assert len(json.loads((tmp_path / "more" / "nodes.json").read_text())["nodes"]) == 1
    lines = cli("nodes").stdout.splitlines()
    assert lines[0].split() == ["INSTANCE", "STATUS", "GPU", "$/H", "LABEL"]
    assert [line.split()[:2] for line in lines[1:3]] == [[str(i), "running"] for i in ids]
    assert lines[-1] == "2 of 2 alive, $0.3000/h"
    everything = json.loads(cli("nodes", "--all", "--json").stdout)
    assert len(everything) == 3


def test_self_destructing_nodes_get_no_account_key_by_default(cli: Run, fake: FakeVast) -> None:
    out = cli(*RENT, "--nodes", "1", "--self-destruct", "--dry-run").stdout
    env_line = next(line for line in out.splitlines() if line.startswith("image "))
    assert "VAST_API_KEY" not in env_line
    cli(*RENT, "--nodes", "2", "--self-destruct")
    assert len(fake.instances) == 2
    for env in fake.instance_env.values():
        assert env == {"DISTRIBUTE_REMOTE": REMOTE, "DISTRIBUTE_RUN": "myjobs:run",
                       "DISTRIBUTE_SELF_DESTRUCT": "1"}  # the nodes use CONTAINER_API_KEY


def test_a_malformed_self_destruct_flag_rents_nothing(cli: Run, fake: FakeVast) -> None:
    err = cli(*RENT, "--nodes", "1", "--env", "DISTRIBUTE_SELF_DESTRUCT=maybe", rc=1).stderr
    assert "DISTRIBUTE_SELF_DESTRUCT" in err and "maybe" in err
    assert fake.requests("PUT") == []


def test_rent_without_self_destruct_gives_nodes_no_key(cli: Run, fake: FakeVast) -> None:
    cli(*RENT, "--nodes", "1", "--ssh")
    (iid,) = fake.instances
    assert fake.instance_env[iid] == {"DISTRIBUTE_REMOTE": REMOTE, "DISTRIBUTE_RUN": "myjobs:run"}
    assert fake.instances[iid]["image_runtype"] == "ssh"
    assert fake.instances[iid]["onstart"].startswith("/usr/local/bin/distribute-node")


def test_rent_fewer_warns_none_fails(cli: Run, fake: FakeVast) -> None:
    proc = cli(*RENT, "--nodes", "5")
    assert len(fake.instances) == 3
    assert "warning: rented 3 of 5 nodes" in proc.stderr
    err = cli("rent", "--max-price", "0.05", "--nodes", "1", "--image", "i", "--remote", REMOTE,
              "--run", "m:f", rc=1).stderr
    assert err.strip().splitlines() == ["error: no offer at most $0.05/h matched: nothing was "
                                        "rented"]


@pytest.mark.parametrize("args, message", [
    (("--nodes", "1", "--run", "m:f", "--image", "i", "--max-price", "1"), "no remote"),
    (("--nodes", "1", "--remote", REMOTE, "--run", "m.f", "--image", "i", "--max-price", "1"),
     "MODULE:FUNCTION"),
    (RENT[1:] + ("--nodes", "0"), "positive"),
    (RENT[1:] + ("--nodes", "1", "--env", "NOEQUALS"), "KEY=VALUE"),
    (RENT[1:] + ("--nodes", "1", "--env", "1A=x"), "KEY=VALUE"),
    (RENT[1:] + ("--nodes", "1", "--query", "num_gpus>>1"), "num_gpus>>1"),
])
def test_rent_usage_errors(cli: Run, fake: FakeVast, args: tuple, message: str) -> None:
    assert message in cli("rent", *args, rc=2).stderr
    assert fake.calls == []


def test_rent_settings_from_the_environment_and_local_remote_warning(cli: Run,
                                                                     fake: FakeVast) -> None:
    proc = cli("rent", "--max-price", "1", "--nodes", "1", "--image", "i",
               env={"DISTRIBUTE_REMOTE": "file:///srv/jobs.git", "DISTRIBUTE_RUN": "jobs:go"})
    assert "cannot reach file:///srv/jobs.git" in proc.stderr
    (env,) = fake.instance_env.values()
    assert env == {"DISTRIBUTE_REMOTE": "file:///srv/jobs.git", "DISTRIBUTE_RUN": "jobs:go"}


def test_rent_error_after_some_nodes_keeps_them(cli: Run, fake: FakeVast, tmp_path: Path) -> None:
    fake.fail("PUT", r"/asks/2/", 403, body={"success": False, "error": "insufficient_credit",
                                             "msg": "Your balance is too low."})
    err = cli(*RENT, "--nodes", "3", rc=1).stderr
    assert "1 node(s) were rented before the error" in err
    assert err.strip().splitlines()[-1].startswith("error: renting offer 2 failed after 1 node")
    assert "balance is too low" in err
    saved = json.loads((tmp_path / "vast-nodes.json").read_text())["nodes"]
    assert [n["instance_id"] for n in saved] == list(fake.instances)


@pytest.mark.slow
def test_nodes_and_terminate(cli: Run, fake: FakeVast, tmp_path: Path) -> None:
    assert "no nodes in vast-nodes.json" in cli("nodes").stdout
    assert "nothing to terminate" in cli("terminate", "--all").stdout
    cli(*RENT, "--nodes", "3")
    a, b, c = sorted(fake.instances)
    del fake.instances[a]  # the node destroyed itself
    lines = cli("nodes").stdout.splitlines()
    assert lines[1].split()[:2] == [str(a), "gone"] and lines[-1].startswith("2 of 3 alive")
    assert cli("terminate", str(b)).stdout == f"destroyed {b}\n"
    cli("terminate", rc=2)
    cli("terminate", "--all", str(c), rc=2)
    fake.fail("DELETE", rf"/instances/{c}/", 500, times=3)
    proc = cli("terminate", "--all", rc=1)
    assert f"{a} was already gone" in proc.stdout
    assert f"could not destroy {c}" in proc.stderr and "may still cost money" in proc.stderr
    left = json.loads((tmp_path / "vast-nodes.json").read_text())["nodes"]
    assert [n["instance_id"] for n in left] == [c]
    assert cli("terminate", "--all").stdout == f"destroyed {c}\n"
    assert fake.instances == {}


def test_nodes_logs(cli: Run, fake: FakeVast) -> None:
    cli(*RENT, "--nodes", "1")
    (iid,) = fake.instances
    out = cli("nodes", "--logs", str(iid), "--tail", "2").stdout
    assert out.splitlines() == [f"instance {iid} line 1999", f"instance {iid} line 2000"]
    assert "404" in cli("nodes", "--logs", "99", rc=1).stderr


def test_register_adds_the_commands_to_another_parser(cli: Run, fake: FakeVast) -> None:
    code = ("import argparse, sys\n"
            "from distribute.cli import vast as vast_cli\n"
            "common = argparse.ArgumentParser(add_help=False)\n"
            "common.add_argument('--debug', action='store_true')\n"
            "p = argparse.ArgumentParser(prog='distribute')\n"
            "sub = p.add_subparsers(dest='command')\n"
            "vast_cli.register(sub, parents=[common])\n"
            "args = p.parse_args(sys.argv[1:])\n"
            "assert args.command == 'offers' and args.debug\n"
            "sys.exit(args.func(args))\n")
    out = cli(argv=[sys.executable, "-c", code, "offers", "--max-price", "0.25", "--debug"]).stdout
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["1", "2"]
    helps = cli(argv=[sys.executable, "-m", "distribute.cli.vast", "rent", "--help"]).stdout
    assert "--self-destruct" in helps and "example" in helps
    main = cli(argv=[sys.executable, "-m", "distribute", "rent", "--help"]).stdout
    assert "--self-destruct" in main and "VAST_NODE_API_KEY" in main
