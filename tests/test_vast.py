"""distribute.vast against a loopback server that plays the Vast.ai API (tests/vastserver.py)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from support.remotes import ledger_file
from support.vastserver import FakeVast, make_offer

from distribute import config, init_remote, vast
from distribute.settings import SettingError
from distribute.vast import nodes
from distribute.vast.query import node_command

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-vast-key-5f2a9c"
GPUS = ["RTX 3090", "RTX 4090", "A100 SXM4", "RTX 4090", "RTX 3090", "H100 SXM", "RTX 4090",
        "L40S", "RTX 3090", "A100 SXM4"]


@pytest.fixture(autouse=True)
def _vast_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No real key or instance from the developer's shell; nothing reaches console.vast.ai."""
    for name in list(os.environ):
        if name.startswith(("VAST_", "DISTRIBUTE_")) or name in ("CONTAINER_ID",
                                                                 "CONTAINER_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VAST_API_URL", "http://127.0.0.1:9")  # discard port: refused at once
    monkeypatch.setenv("VAST_RETRY_BACKOFF", "0.01")
    monkeypatch.setenv("VAST_RETRY_BACKOFF_MAX", "2")
    config.use_env_file(None)  # forget a .env read from another test's directory
    nodes._held.clear()  # keys put aside by hold_keys() in another test
    yield
    nodes._held.clear()
    config.use_env_file(None)


def offers(n: int = 10) -> list[dict]:
    """``n`` offers, id i costs i/10 $/h (id 1 is the cheapest)."""
    return [make_offer(i, round(i / 10, 2), gpu_name=GPUS[(i - 1) % len(GPUS)],
                       num_gpus=1 + (i % 3 == 0), reliability2=0.95 + i / 500)
            for i in range(1, n + 1)]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeVast]:
    with FakeVast(api_key=KEY, offers=offers()) as server:
        monkeypatch.setenv("VAST_API_URL", server.url)
        monkeypatch.setenv("VAST_API_KEY", KEY)
        yield server


# --- URLs, queries, env, runtypes -----------------------------------------------------------

@pytest.mark.parametrize("base, subpath, args, key, expected", [
    ("https://console.vast.ai", "/instances/", None, None,
     "https://console.vast.ai/api/v0/instances/"),
    ("https://console.vast.ai/", "asks/12/", None, None, "https://console.vast.ai/api/v0/asks/12/"),
    ("http://proxy:8080/vast", "/instances/", {"owner": "me"}, None,
     "http://proxy:8080/vast/api/v0/instances/?owner=me"),
    ("https://h", "/bundles/", {"q": {"num_gpus": {"eq": 1}}}, None,
     "https://h/api/v0/bundles/?q=%7B%22num_gpus%22%3A%7B%22eq%22%3A1%7D%7D"),
    ("https://h", "/x/", {"label": "a b&c=d/é"}, None,
     "https://h/api/v0/x/?label=a%20b%26c%3Dd%2F%C3%A9"),
    ("https://h", "/x/", {"n": 3, "ok": True}, "k/+y", "https://h/api/v0/x/?n=3&ok=true&api_key=k%2F%2By"),
    ("https://h", "/logs/a b/", None, None, "https://h/api/v0/logs/a%20b/"),
])
def test_apiurl(monkeypatch: pytest.MonkeyPatch, base, subpath, args, key, expected) -> None:
    monkeypatch.setenv("VAST_API_URL", base)
    assert vast.apiurl(subpath, args, key) == expected


def test_apiurl_default_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAST_API_URL")
    assert vast.apiurl("/instances/") == "https://console.vast.ai/api/v0/instances/"


@pytest.mark.parametrize("query, expected", [
    ("", {}),
    ("num_gpus=1", {"num_gpus": {"eq": 1}}),
    ("num_gpus == 2  verified=true", {"num_gpus": {"eq": 2}, "verified": {"eq": True}}),
    ("gpu_ram>=16", {"gpu_ram": {"gte": 16000}}),
    ("gpu_ram >= 16 gpu_ram<48.5", {"gpu_ram": {"gte": 16000, "lt": 48500}}),
    ("cpu_ram gt 32", {"cpu_ram": {"gt": 32000}}),
    ("reliability>0.98", {"reliability2": {"gt": 0.98}}),
    ("dph<=0.5 dlperf_usd gte 10", {"dph_total": {"lte": 0.5}, "dlperf_per_dphtotal": {"gte": 10}}),
    ("duration>2", {"duration": {"gt": 172800}}),
    ("gpu_name=RTX_4090", {"gpu_name": {"eq": "RTX 4090"}}),
    ('gpu_name="RTX 4090"', {"gpu_name": {"eq": "RTX 4090"}}),
    ("gpu_name in [RTX_4090,RTX_3090]", {"gpu_name": {"in": ["RTX 4090", "RTX 3090"]}}),
    ("gpu_name nin [A100_SXM4, H100_SXM]", {"gpu_name": {"notin": ["A100 SXM4", "H100 SXM"]}}),
    ("num_gpus notin [1,2]", {"num_gpus": {"notin": [1, 2]}}),
    ("gpu_name in RTX_4090", {"gpu_name": {"in": ["RTX 4090"]}}),
    ("num_gpus!=1 compute_cap neq 860", {"num_gpus": {"neq": 1}, "compute_cap": {"neq": 860}}),
    ("inet_down lt 100 inet_up lte 50", {"inet_down": {"lt": 100}, "inet_up": {"lte": 50}}),
    ("external eq false", {"external": {"eq": False}}),
    ("geolocation in [US,CA]", {"geolocation": {"in": ["US", "CA"]}}),
    ("rentable=any", {}),
    ("num_gpus=1 num_gpus=*", {}),
])
def test_parse_query(query: str, expected: dict) -> None:
    assert vast.parse_query(query) == expected


@pytest.mark.parametrize("query, offending", [
    ("gpu_ram>=", "gpu_ram>="),
    ("gpu_ram", "gpu_ram"),
    ("num_gpus >> 2", "num_gpus >> 2"),
    ("gpu_rma>=16", "gpu_rma"),
    ("gpu_ram>=lots", "lots"),
    ("num_gpus=1 gpu_name in[A]", "gpu_name in[A]"),
    ("num_gpus=[1,2]", "num_gpus=[1,2]"),
    ("num_gpus in []", "num_gpus in []"),
    ("rentable>any", "rentable>any"),
    ('gpu_name="RTX 4090', 'gpu_name="RTX 4090'),
    ("num_gpus=1;", "num_gpus=1;"),
    ("=1", "=1"),
    ("num_gpus like 1", "num_gpus like 1"),
])
def test_parse_query_malformed_names_the_part(query: str, offending: str) -> None:
    with pytest.raises(ValueError) as info:
        vast.parse_query(query)
    assert offending in str(info.value)


def test_parse_query_merges_and_takes_custom_tables() -> None:
    res = {"verified": {"eq": True}, "rentable": {"eq": True}}
    assert vast.parse_query("rentable=any num_gpus>1", res) is res
    assert res == {"verified": {"eq": True}, "num_gpus": {"gt": 1}}
    assert vast.parse_query(["vram>=8", "zz=x"], fields=None, field_alias={"vram": "gpu_ram"},
                            field_multiplier={"gpu_ram": 1024}) == {
        "gpu_ram": {"gte": 8192}, "zz": {"eq": "x"}}


@pytest.mark.parametrize("text, expected", [
    (None, {}),
    ("", {}),
    ("-e A=1", {"A": "1"}),
    ("-e A=1 -e B=", {"A": "1", "B": ""}),
    ("-e 'MSG=hello world' -e X=a=b", {"MSG": "hello world", "X": "a=b"}),
    ("-p 8080:8080 -p 70:7000/udp", {"-p 8080:8080": "1", "-p 70:7000/udp": "1"}),
    (["-e", "K=$(rm -rf ~); `x`"], {"K": "$(rm -rf ~); `x`"}),
    (["-e", "KEY=line1\nline2"], {"KEY": "line1\nline2"}),
    ("--env _X9=v -e A=1 -p 22:22", {"_X9": "v", "A": "1", "-p 22:22": "1"}),
])
def test_parse_env(text, expected) -> None:
    assert vast.parse_env(text) == expected


@pytest.mark.parametrize("text, offending", [
    ("A=1", "'A=1'"),
    ("-e", "-e"),
    ("-e NOEQUALS", "NOEQUALS"),
    ("-e 1A=x", "1A=x"),
    ("-e A-B=x", "A-B=x"),
    ("-p 8080", "8080"),
    ("-p 0:80", "0:80"),
    ("-p 80:99999", "80:99999"),
    ("-p 80:80/sctp", "80:80/sctp"),
    ("-h host", "-h"),
    ("-e 'A=unclosed", "unclosed"),
])
def test_parse_env_malformed(text: str, offending: str) -> None:
    with pytest.raises(ValueError) as info:
        vast.parse_env(text)
    assert offending in str(info.value)


@pytest.mark.parametrize("kwargs, expected", [
    ({}, "args"), ({"args": True}, "args"), ({"ssh": True}, "ssh"),
    ({"ssh": True, "direct": True}, "ssh_direct"), ({"jupyter": True}, "jupyter"),
    ({"jupyter": True, "ssh": True, "direct": True}, "jupyter_direct"),
])
def test_get_runtype(kwargs: dict, expected: str) -> None:
    assert vast.get_runtype(**kwargs) == expected


@pytest.mark.parametrize("kwargs", [{"args": True, "ssh": True}, {"direct": True},
                                    {"args": True, "jupyter": True}])
def test_get_runtype_conflicts(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        vast.get_runtype(**kwargs)


# --- HTTP, errors, retries -------------------------------------------------------------------

def test_search_offers_sends_the_filter_and_returns_cheapest_rentable(fake: FakeVast) -> None:
    got = vast.search_offers(0.55, "gpu_name in [RTX_4090,RTX_3090] gpu_ram>=16")
    assert [o["id"] for o in got] == [1, 2, 4, 5]
    body = fake.requests("POST", "/api/v0/bundles/")[0].body
    assert body["dph_total"] == {"lte": 0.55}
    assert body["verified"] == {"eq": True} and body["rentable"] == {"eq": True}
    assert body["rented"] == {"eq": False} and body["external"] == {"eq": False}
    assert body["gpu_ram"] == {"gte": 16000} and body["type"] == "on-demand"
    assert body["order"] == [["dph_total", "asc"]]
    assert [o["id"] for o in vast.search_offers(10, order="-dph_total", limit=3)] == [10, 9, 8]
    assert vast.search_offers(0.05) == []


def test_key_argument_wins_and_dotenv_works(fake: FakeVast, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("VAST_API_KEY", "wrong-key-0000")
    with pytest.raises(vast.VastError) as info:
        vast.list_instances()
    assert info.value.status == 401
    assert vast.list_instances(api_key=KEY) == []
    monkeypatch.delenv("VAST_API_KEY")
    (tmp_path / ".env").write_text(f"VAST_API_KEY={KEY}\n")  # conftest runs us in tmp_path
    config.use_env_file(None)
    assert vast.list_instances() == []
    assert all(c.authorization == f"Bearer {KEY}" for c in fake.calls[1:])
    assert not any("api_key" in c.query for c in fake.calls)


def test_missing_key_is_one_sentence(fake: FakeVast, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAST_API_KEY")
    with pytest.raises(vast.VastError) as info:
        vast.search_offers(1)
    assert "VAST_API_KEY" in str(info.value) and info.value.status is None
    assert isinstance(info.value, vast.DistributeError) and fake.calls == []


def test_errors_carry_status_and_api_message_never_the_key(
        fake: FakeVast, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "my-real-secret-key-77"
    with pytest.raises(vast.VastError) as info:
        vast.get_instance(5, api_key=secret)
    assert info.value.status == 401 and "Invalid user key" in str(info.value)
    monkeypatch.setenv("VAST_API_URL", fake.url.replace("http://", f"http://{secret}@"))
    with pytest.raises(vast.VastError) as info2:
        vast.list_instances(api_key=secret)
    fake.fail("GET", "/instances/", 500, times=10, body={"success": False, "msg": secret})
    monkeypatch.setenv("VAST_API_URL", fake.url)
    with pytest.raises(vast.VastError) as info3:
        vast.list_instances(api_key=secret)
    assert info3.value.status == 500
    for exc in (info.value, info2.value, info3.value):
        assert secret not in str(exc) and secret not in repr(exc.args)
    assert secret not in caplog.text and KEY not in caplog.text


def test_429_is_retried_after_retry_after(fake: FakeVast) -> None:
    fake.fail("GET", r"/instances/$", 429, times=2, retry_after=1)
    assert vast.list_instances() == []
    calls = fake.requests("GET", "/api/v0/instances/")
    assert [c.status for c in calls] == [429, 429, 200]
    # the client waited for the server's Retry-After before each new attempt (a lower bound)
    assert all(b.at - a.at >= 0.9 for a, b in zip(calls, calls[1:]))


def test_429_retries_are_bounded(fake: FakeVast, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAST_RETRY_TOTAL", "3")
    fake.fail("POST", "/bundles/", 429, times=50)
    with pytest.raises(vast.VastError) as info:
        vast.search_offers(1)
    assert info.value.status == 429 and "API requests too frequent" in str(info.value)
    assert len(fake.requests("POST")) == 4


def test_429_on_create_is_retried(fake: FakeVast) -> None:
    fake.fail("PUT", "/asks/", 429, times=2)
    answer = vast.create_instance(3, "me/worker:1", {"A": "1"})
    assert answer == {"success": True, "new_contract": 7000001}
    assert [c.status for c in fake.requests("PUT")] == [429, 429, 200]


def test_5xx_html_is_retried_for_get_post_delete(fake: FakeVast) -> None:
    fake.fail("POST", "/bundles/", 502, times=2)
    fake.fail("GET", r"/instances/$", 503)
    assert [o["id"] for o in vast.search_offers(0.2)] == [1, 2]
    assert vast.list_instances() == []
    iid = vast.create_instance(1, "img")["new_contract"]
    fake.fail("DELETE", "/instances/", 500, times=2)
    assert vast.destroy_instance(iid)["success"] is True
    assert fake.instances == {}


def test_5xx_on_create_is_not_retried(fake: FakeVast) -> None:
    fake.fail("PUT", "/asks/", 502)
    with pytest.raises(vast.VastError) as info:
        vast.create_instance(1, "img")
    assert info.value.status == 502 and "HTML page" in str(info.value)
    assert len(fake.requests("PUT")) == 1


def test_malformed_answers(fake: FakeVast) -> None:
    fake.fail("GET", "/instances/", 200, body="<html><title>Maintenance</title></html>",
              content_type="text/html")
    with pytest.raises(vast.VastError, match="not JSON.*Maintenance") as info:
        vast.list_instances()
    assert info.value.status == 200
    fake.fail("GET", "/instances/", 200, body='{"instances": [', content_type="application/json")
    with pytest.raises(vast.VastError, match="not JSON"):
        vast.list_instances()
    fake.fail("GET", "/instances/", 200, body={"success": False, "msg": "account suspended"})
    with pytest.raises(vast.VastError, match="account suspended"):
        vast.list_instances()
    fake.fail("GET", "/instances/", 200, body={"something": "else"})
    with pytest.raises(vast.VastError, match="without instances"):
        vast.list_instances()
    fake.fail("POST", "/bundles/", 200, body={"offers": None})
    with pytest.raises(vast.VastError, match="offer list"):
        vast.search_offers(1)


def test_unreachable_api_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAST_API_KEY", KEY)
    monkeypatch.setenv("VAST_RETRY_TOTAL", "1")
    with pytest.raises(vast.VastError, match="no answer") as info:
        vast.list_instances()
    assert info.value.status is None


@pytest.mark.parametrize("body, message", [
    ({"env": {"A": "1"}}, "image is required"),
    ({"image": ""}, "image is required"),
    ({"image": "x", "env": {"A": 1}}, "env must be an object of strings"),
    ({"image": "x", "env": ["A=1"]}, "env must be an object of strings"),
    ({"image": "x", "env": "-e A=1"}, "env must be an object of strings"),
    ({"image": "x", "runtype": "bash"}, "unknown runtype"),
    ({"image": "x", "disk": 2}, "disk"),
    ({"image": "x", "args": "echo hi"}, "args must be a list of strings"),
    ({"image": "x", "onstart": "x" * 5000}, "4048"),
    (["image", "x"], "JSON object"),
])
def test_the_fake_checks_create_bodies_like_the_api(fake: FakeVast, body, message: str) -> None:
    with pytest.raises(vast.VastError) as info:
        vast.http_put(vast.apiurl("/asks/1/"), body)
    assert info.value.status == 400 and message in str(info.value)
    assert fake.offers[1]["rentable"] is True and fake.instances == {}


def test_create_instance_checks_its_input_before_sending(fake: FakeVast) -> None:
    with pytest.raises(TypeError):
        vast.create_instance(1, "img", {"A": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        vast.create_instance(1, "  ")
    with pytest.raises(TypeError):
        vast.create_instance(1, "img", args="echo hi")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        vast.create_instance(1, "img", runtype="bash")
    assert fake.calls == []


def test_instance_lifecycle(fake: FakeVast) -> None:
    answer = vast.create_instance(2, "me/worker:1", {"A": "b c"}, disk=20, label="lbl",
                                  args=["--x", "y z"])
    iid = answer["new_contract"]
    body = fake.requests("PUT")[0].body
    assert body == {"client_id": "me", "image": "me/worker:1", "env": {"A": "b c"},
                    "disk": 20.0, "runtype": "args", "label": "lbl", "args": ["--x", "y z"]}
    row = vast.get_instance(iid)
    assert row["actual_status"] == "running" and row["label"] == "lbl"
    assert [r["id"] for r in vast.list_instances()] == [iid]
    with pytest.raises(vast.VastError) as taken:
        vast.create_instance(2, "me/worker:1")
    assert taken.value.status == 410
    vast.destroy_instance(iid)
    with pytest.raises(vast.VastError) as gone:
        vast.get_instance(iid)
    assert gone.value.status == 404


def test_instance_logs_wait_for_the_upload_and_never_get_the_key(fake: FakeVast) -> None:
    iid = vast.create_instance(1, "img")["new_contract"]
    text = vast.instance_logs(iid, tail=3)
    assert text.splitlines() == [f"instance {iid} line {n}" for n in (1998, 1999, 2000)]
    assert fake.requests("PUT", "/api/v0/instances/request_logs/")[0].body == {"tail": "3"}
    downloads = fake.requests("GET", "/logs/")
    assert [c.status for c in downloads] == [404, 200]
    assert all(c.authorization is None for c in downloads)


# --- renting and terminating -------------------------------------------------------------------

def test_rent_nodes_takes_the_cheapest_and_skips_offers_taken_meanwhile(fake: FakeVast) -> None:
    fake.take_meanwhile(1, 3)
    env = {"DISTRIBUTE_REMOTE": "git@host:me/jobs.git", "DISTRIBUTE_RUN": "jobs:run",
           "ODD": "$(touch /tmp/x); 'q' \"d\" \n"}
    nodes = vast.rent_nodes(1.0, 3, "me/worker:1", env=env)
    assert [n["offer_id"] for n in nodes] == [2, 4, 5]
    assert [p.path for p in fake.requests("PUT")] == [f"/api/v0/asks/{i}/" for i in (1, 2, 3, 4, 5)]
    assert len(fake.requests("POST")) == 1  # one search, no re-search between offers
    assert sorted(n["instance_id"] for n in nodes) == sorted(fake.instances)
    assert len({n["label"] for n in nodes}) == 3
    assert set(nodes[0]) >= {"offer_id", "instance_id", "label", "dph_total", "gpu_name", "image"}
    for n in nodes:
        assert fake.instance_env[n["instance_id"]] == env
        assert fake.instances[n["instance_id"]]["image_runtype"] == "args"


def test_rent_nodes_warns_when_fewer_offers(fake: FakeVast) -> None:
    with pytest.warns(vast.VastWarning, match="rented 2 of 5"):
        nodes = vast.rent_nodes(0.25, 5, "img", env="-e A=1 -p 8080:8080")
    assert [n["offer_id"] for n in nodes] == [1, 2]
    assert fake.instance_env[nodes[0]["instance_id"]] == {"A": "1", "-p 8080:8080": "1"}
    with pytest.warns(vast.VastWarning, match="rented 0 of 1"):
        assert vast.rent_nodes(0.05, 1, "img") == []


def test_rent_nodes_with_429s_and_a_command(fake: FakeVast) -> None:
    fake.fail("PUT", "/asks/", 429, times=3)
    nodes = vast.rent_nodes(1.0, 4, "img", command=["distribute", "status", "x y"])
    assert [n["offer_id"] for n in nodes] == [1, 2, 3, 4]
    assert len(fake.requests("PUT")) == 7
    assert fake.instances[nodes[0]["instance_id"]]["image_args"] == ["distribute", "status", "x y"]


def test_rent_nodes_stops_on_a_real_error_and_hands_back_what_it_rented(fake: FakeVast) -> None:
    fake.fail("PUT", r"/asks/2/", 403, body={"success": False, "error": "insufficient_credit",
                                             "msg": "Your balance is too low."})
    with pytest.raises(vast.VastError, match="balance is too low") as info:
        vast.rent_nodes(1.0, 3, "img")
    assert info.value.status == 403
    assert [n["offer_id"] for n in info.value.nodes] == [1]
    assert list(fake.instances) == [info.value.nodes[0]["instance_id"]]


def test_rent_nodes_finds_an_instance_whose_create_answer_was_lost(fake: FakeVast) -> None:
    fake.fail("PUT", r"/asks/1/", 502, after=True)  # created, but the client sees a 502
    fake.fail("PUT", r"/asks/2/", 503)  # not created
    nodes = vast.rent_nodes(1.0, 2, "img")
    assert [n["offer_id"] for n in nodes] == [1, 3]
    assert sorted(fake.instances) == sorted(n["instance_id"] for n in nodes)
    assert fake.instances[nodes[0]["instance_id"]]["label"] == nodes[0]["label"]


def test_terminate_nodes_goes_on_past_errors(fake: FakeVast,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAST_RETRY_TOTAL", "2")
    nodes = vast.rent_nodes(1.0, 3, "img")
    ids = [n["instance_id"] for n in nodes]
    fake.fail("DELETE", rf"/instances/{ids[1]}/", 500, times=3)
    result = vast.terminate_nodes(nodes + [424242])
    assert result["destroyed"] == [ids[0], ids[2]] and result["gone"] == [424242]
    assert list(result["failed"]) == [ids[1]] and "HTTP 500" in result["failed"][ids[1]]
    assert list(fake.instances) == [ids[1]]
    assert vast.terminate_nodes([ids[1]])["destroyed"] == [ids[1]]


def test_self_destruct(fake: FakeVast, monkeypatch: pytest.MonkeyPatch,
                       caplog: pytest.LogCaptureFixture) -> None:
    a, b, c = (vast.create_instance(i, "img")["new_contract"] for i in (1, 2, 3))
    before = len(fake.calls)
    monkeypatch.delenv("VAST_API_KEY")
    assert vast.self_destruct(a) is False  # no key at all
    monkeypatch.setenv("VAST_API_KEY", KEY)
    assert vast.self_destruct() is False  # no CONTAINER_ID
    monkeypatch.setenv("CONTAINER_ID", "../instances/1")
    assert vast.self_destruct() is False
    assert len(fake.calls) == before
    monkeypatch.setenv("CONTAINER_ID", str(a))
    assert vast.self_destruct() is True and a not in fake.instances
    assert fake.destroyed == [(a, f"Bearer {KEY}")]
    assert vast.self_destruct() is True  # already gone is fine
    assert vast.self_destruct(b, api_key="wrong-key-1234") is False and b in fake.instances
    monkeypatch.setenv("VAST_RETRY_TOTAL", "1")
    fake.fail("DELETE", "/instances/", 500, times=2)
    assert vast.self_destruct(b) is False and b in fake.instances
    monkeypatch.delenv("VAST_API_KEY")
    monkeypatch.setenv("CONTAINER_API_KEY", KEY)
    assert vast.self_destruct(c) is True and c not in fake.instances
    assert "wrong-key-1234" not in caplog.text


def test_self_destruct_uses_the_instance_key_first(fake: FakeVast,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """On a node: CONTAINER_API_KEY (good for that instance only) by default; an account key
    (VAST_API_KEY, sent only on purpose) only when the instance key is missing or refused."""
    caplog.set_level(logging.INFO)
    a, b, c, d = (vast.create_instance(i, "img")["new_contract"] for i in (1, 2, 3, 4))
    key_of = fake.container_keys
    monkeypatch.delenv("VAST_API_KEY")
    monkeypatch.setenv("CONTAINER_ID", str(a))
    monkeypatch.setenv("CONTAINER_API_KEY", key_of[b])  # another instance's key: refused
    assert vast.self_destruct() is False and a in fake.instances
    assert fake.calls[-1].status == 403
    monkeypatch.setenv("CONTAINER_API_KEY", key_of[a])
    monkeypatch.setenv("VAST_API_KEY", KEY)  # present, but the instance key comes first
    assert vast.self_destruct() is True
    assert fake.destroyed == [(a, f"Bearer {key_of[a]}")]
    monkeypatch.setenv("CONTAINER_ID", str(b))
    monkeypatch.setenv("CONTAINER_API_KEY", key_of[c])  # refused: the account key is the fallback
    assert vast.self_destruct() is True
    assert fake.destroyed[-1] == (b, f"Bearer {KEY}")
    monkeypatch.delenv("VAST_API_KEY")
    monkeypatch.setenv("CONTAINER_ID", str(d))
    monkeypatch.setenv("CONTAINER_API_KEY", key_of[d])
    assert vast.self_destruct() is True and fake.destroyed[-1] == (d, f"Bearer {key_of[d]}")
    assert list(fake.instances) == [c]
    with pytest.raises(vast.VastError) as info:  # an instance key cannot do anything else
        vast.list_instances(api_key=key_of[c])
    assert info.value.status == 403
    assert not any(k in caplog.text for k in [KEY, *key_of.values()])


def test_hold_keys_moves_the_keys_out_of_the_environment(fake: FakeVast,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    iid = vast.create_instance(1, "img")["new_contract"]
    monkeypatch.setenv("CONTAINER_ID", str(iid))
    monkeypatch.setenv("CONTAINER_API_KEY", fake.container_keys[iid])
    monkeypatch.setenv("VAST_NODE_API_KEY", "node-key-0000")
    assert vast.hold_keys() == ["VAST_API_KEY", "CONTAINER_API_KEY", "VAST_NODE_API_KEY"]
    assert not set(vast.KEY_VARS) & set(os.environ)
    child = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.environ))"],
                           capture_output=True, text=True, check=True).stdout
    assert not any(name in child for name in vast.KEY_VARS)
    assert vast.self_destruct() is True  # the held instance key still works
    assert fake.destroyed == [(iid, f"Bearer {fake.container_keys[iid]}")]
    assert vast.hold_keys() == []


@pytest.mark.parametrize("name, value", [
    ("VAST_RETRY_TOTAL", "nan"), ("VAST_RETRY_TOTAL", "-1"), ("VAST_RETRY_TOTAL", "2.5"),
    ("VAST_RETRY_BACKOFF", "inf"), ("VAST_RETRY_BACKOFF", "-0.5"),
    ("VAST_RETRY_BACKOFF_MAX", "lots"), ("VAST_TIMEOUT_S", "0"), ("VAST_TIMEOUT_S", "nan"),
])
def test_malformed_settings_name_the_variable(fake: FakeVast, monkeypatch: pytest.MonkeyPatch,
                                              name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingError, match=name) as info:
        vast.list_instances()
    assert isinstance(info.value, vast.DistributeError)
    assert fake.calls == []
    assert vast.self_destruct(1) is False  # never raises


def test_node_env_sends_no_account_key_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    env = vast.node_env("git@h:me/j.git", "jobs:run", extra={"X": "1"})
    assert env == {"X": "1", "DISTRIBUTE_REMOTE": "git@h:me/j.git", "DISTRIBUTE_RUN": "jobs:run"}
    assert node_command(env) == ["distribute", "worker", "--run=jobs:run",
                                 "--name=vast-$CONTAINER_ID", "--idle-exit", "--", "git@h:me/j.git"]
    assert vast.node_env("r", "m:f", self_destruct=True) == {
        "DISTRIBUTE_REMOTE": "r", "DISTRIBUTE_RUN": "m:f", "DISTRIBUTE_SELF_DESTRUCT": "1"}
    monkeypatch.setenv("VAST_API_KEY", "main-key")
    env = vast.node_env("r", "m:f", self_destruct=True)
    assert "VAST_API_KEY" not in env and "main-key" not in env.values()
    monkeypatch.setenv("VAST_NODE_API_KEY", "scoped-key")
    env = vast.node_env("r", "m:f", self_destruct=True)
    assert env["VAST_API_KEY"] == "scoped-key" and env["DISTRIBUTE_SELF_DESTRUCT"] == "1"
    assert vast.node_env("r", "m:f", self_destruct=True, api_key="given")["VAST_API_KEY"] == "given"
    assert "VAST_API_KEY" not in vast.node_env("r", "m:f")  # no self-destruct: never a key
    assert node_command(dict(env, DISTRIBUTE_NAME="n1"))[3:6] == [
        "--name=n1", "--idle-exit", "--self-destruct"]


@pytest.mark.parametrize("value, expected", [("", False), ("0", False), ("off", False),
                                             ("No", False), ("1", True), ("on", True),
                                             ("TRUE", True), (" yes ", True)])
def test_node_command_reads_the_flag_like_the_settings(value: str, expected: bool) -> None:
    cmd = node_command({"DISTRIBUTE_SELF_DESTRUCT": value, "DISTRIBUTE_RUN": "m:f"})
    assert ("--self-destruct" in cmd) is expected


def test_node_command_refuses_a_malformed_flag() -> None:
    with pytest.raises(SettingError, match="DISTRIBUTE_SELF_DESTRUCT"):
        node_command({"DISTRIBUTE_SELF_DESTRUCT": "maybe"})


def test_a_job_of_a_self_destructing_worker_sees_no_vast_key(fake: FakeVast, file_remote: str,
                                                              tmp_path: Path) -> None:
    """``distribute worker --self-destruct`` moves the keys out of its environment before the
    first job, and still destroys its instance with the instance's own key when it is done."""
    init_remote(file_remote, ["j1", "j2"])
    iid = vast.create_instance(1, "img")["new_contract"]
    (tmp_path / "keyjobs.py").write_text(
        "import json, os, subprocess, sys\n"
        "from pathlib import Path\n"
        "NAMES = ('VAST_API_KEY', 'CONTAINER_API_KEY', 'VAST_NODE_API_KEY')\n"
        "def run(job, worker):\n"
        "    child = subprocess.run([sys.executable, '-c', 'import os; print(dict(os.environ))'],\n"
        "                           capture_output=True, text=True).stdout\n"
        "    seen = {'env': [n for n in NAMES if n in os.environ], 'child': child}\n"
        "    Path(worker.job_dir, 'seen.json').write_text(json.dumps(seen))\n"
        "    with open(os.environ['SEEN_LOG'], 'a') as f:\n"
        "        f.write(json.dumps(seen) + '\\n')\n")
    secrets_ = {"VAST_API_KEY": KEY, "CONTAINER_API_KEY": fake.container_keys[iid],
                "VAST_NODE_API_KEY": "node-key-3a9e77"}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VAST_", "DISTRIBUTE_", "CONTAINER_"))}
    env.update(secrets_, CONTAINER_ID=str(iid), VAST_API_URL=fake.url, SEEN_LOG=str(
        tmp_path / "seen.jsonl"), PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
        DISTRIBUTE_POLL_S="0.2", DISTRIBUTE_POLL_MAX_S="0.2", VAST_RETRY_BACKOFF="0.01")
    proc = subprocess.run([sys.executable, "-m", "distribute", "worker", file_remote,
                           "--run", "keyjobs:run", "--idle-exit", "--self-destruct",
                           "--name", "w-keys", "--path", str(tmp_path / "copy")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
    assert len(seen) == 2
    for record in seen:
        assert record["env"] == []
        assert not any(value in record["child"] for value in secrets_.values())
    assert fake.destroyed == [(iid, f"Bearer {fake.container_keys[iid]}")]
    assert not any(value in proc.stdout + proc.stderr for value in secrets_.values())


# --- the whole story: nodes drain a real remote and destroy themselves -------------------------

@pytest.mark.slow
def test_rented_nodes_drain_the_queue_and_destroy_themselves(daemon_remote: str,
                                                             tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    jobs = [f"job-{i}" for i in range(12)]
    init_remote(daemon_remote, jobs)
    code = tmp_path / "code"
    code.mkdir()
    (code / "vastjobs.py").write_text(
        "from pathlib import Path\n"
        "def run(job, worker):\n"
        "    Path(worker.job_dir, 'out.txt').write_text(job + ' on ' + worker.name)\n")
    bin_dir = tmp_path / "bin"  # `distribute` as the image has it: this checkout's console script
    bin_dir.mkdir()
    (bin_dir / "distribute").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m distribute "$@"\n')
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for tool in ("distribute", "python"):
        (bin_dir / tool).chmod(0o755)
    node_env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH":
                os.pathsep.join([str(code), str(ROOT)]), "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": os.devnull}
    with FakeVast(api_key=KEY, offers=offers(5), workdir=tmp_path / "nodes",
                  node_command=["bash", str(ROOT / "docker" / "entrypoint.sh")],
                  node_env=node_env) as fake:
        monkeypatch.setenv("VAST_API_URL", fake.url)
        monkeypatch.setenv("VAST_API_KEY", KEY)
        env = vast.node_env(daemon_remote, "vastjobs:run", self_destruct=True, extra={
            "VAST_API_URL": fake.url, "VAST_RETRY_BACKOFF": "0.05",
            "DISTRIBUTE_POLL_S": "0.2", "DISTRIBUTE_POLL_MAX_S": "0.2",
            "DISTRIBUTE_LOCK_LEASE_S": "5", "DISTRIBUTE_JOB_LEASE_S": "30"})
        nodes = vast.rent_nodes(0.35, 3, "me/distribute-worker:test", env=env)
        assert [n["offer_id"] for n in nodes] == [1, 2, 3]
        codes = fake.wait_nodes(timeout=150)
        logs = {iid: fake.node_log(iid) for iid in codes}
        assert fake.instances == {}, logs
        assert sorted(i for i, _ in fake.destroyed) == sorted(n["instance_id"] for n in nodes)
        # no account key went to the nodes: each destroyed itself with its own instance key
        assert all("VAST_API_KEY" not in e for e in fake.instance_env.values())
        assert all(auth == f"Bearer {fake.container_keys[i]}" for i, auth in fake.destroyed)
        secrets_ = [KEY, *fake.container_keys.values()]
        assert not any(k in text for k in secrets_ for text in logs.values())
    done = ledger_file(daemon_remote, "done.txt", tmp_path)
    assert sorted(line.split("\t")[0] for line in done) == sorted(jobs)
    workers = {line.split("\t")[1] for line in done}
    assert workers <= {f"vast-{n['instance_id']}" for n in nodes}
    assert ledger_file(daemon_remote, "running.txt", tmp_path) == []
