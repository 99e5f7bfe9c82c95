"""The fake Vast API's instance life, through the package's real client: interruptible instances
created with a bid and preempted (the container stopped with SIGTERM then SIGKILL, the disk kept
and billed), containers that exit, images that never finish loading, per-instance billing."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from support.vastserver import FakeVast, make_offer

from distribute import config
from distribute.vast import api, nodes

KEY = "test-vast-key-77e0d1"
#: A node that notes SIGTERM in ``term.txt``, then ignores it (only SIGKILL ends it).
STUBBORN = ("import pathlib, signal, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: pathlib.Path('term.txt').write_text('x'))\n"
            "pathlib.Path('up.txt').write_text('x')\n"
            "while True: time.sleep(0.05)\n")


@pytest.fixture(autouse=True)
def _vast_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No real key or instance from the developer's shell."""
    for name in list(os.environ):
        if name.startswith(("VAST_", "DISTRIBUTE_")) or name.startswith("CONTAINER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VAST_RETRY_BACKOFF", "0.01")
    config.use_env_file(None)
    yield
    config.use_env_file(None)


def serve(monkeypatch: pytest.MonkeyPatch, fake: FakeVast) -> FakeVast:
    """Point the client at ``fake`` (started)."""
    fake.__enter__()
    monkeypatch.setenv("VAST_API_URL", fake.url)
    monkeypatch.setenv("VAST_API_KEY", KEY)
    return fake


def until(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Poll ``condition`` until it holds (fail after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)


def test_a_bid_below_the_minimum_is_refused_a_winning_one_rents(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Offers of a bid search carry ``min_bid``; a lower bid is refused, a winning one rents an
    interruptible instance billed at the bid instead of the on-demand price."""
    fake = serve(monkeypatch, FakeVast(KEY, [make_offer(1, 3.6)]))
    try:
        offer = nodes.search_offers(4.0, offer_type="bid")[0]
        assert offer["min_bid"] == pytest.approx(1.44)
        with pytest.raises(api.VastError, match="minimum bid"):
            nodes.create_instance(1, "img", price=1.0)
        iid = nodes.create_instance(1, "img", price=1.8)["new_contract"]
        row = nodes.get_instance(iid)
        assert (row["is_bid"], row["dph_total"], row["actual_status"]) == (True, 1.8, "running")
        with pytest.raises(ValueError, match="positive"):
            nodes.create_instance(1, "img", price=-1)
    finally:
        fake.__exit__(None, None, None)


def test_preemption_stops_the_container_and_keeps_billing_the_disk(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Preempted, the container gets SIGTERM and, still alive after the grace, SIGKILL; the
    instance stays ``stopped`` (the renter still intends it to run), billed for its disk only,
    until destroyed; an on-demand instance cannot be preempted."""
    fake = serve(monkeypatch, FakeVast(KEY, [make_offer(1, 3.6, storage_cost=0.5),
                                             make_offer(2, 0.5)],
                                       node_command=[sys.executable, "-c", STUBBORN],
                                       workdir=tmp_path))
    try:
        iid = nodes.create_instance(1, "img", args=[], price=1.8, disk=20)["new_contract"]
        home = tmp_path / f"node-{iid}"
        until(lambda: (home / "up.txt").exists())
        fake.preempt(iid, grace_s=0.5)
        stopped_at = time.time()
        row = nodes.get_instance(iid)
        assert (row["actual_status"], row["intended_status"], row["cur_state"]) == (
            "stopped", "running", "stopped")
        assert "outbid" in row["status_msg"]
        until(lambda: fake.processes[iid].poll() is not None)
        assert (home / "term.txt").exists() and fake.processes[iid].returncode == -9
        assert nodes.get_instance(iid)["actual_status"] == "stopped"
        storage = 0.5 * 20 / 730  # $/h: $/GB/month x GB / hours in a month
        first, t1 = fake.cost(iid), time.time()
        until(lambda: time.time() > t1 + 0.3)
        t2 = time.time()
        second = fake.cost(iid)
        t3 = time.time()
        assert (t2 - t1) * storage / 3600 <= second - first <= (t3 - stopped_at) * storage / 3600
        nodes.destroy_instance(iid)
        final = fake.cost(iid)
        until(lambda: time.time() > t3 + 0.2)
        assert fake.cost(iid) == final
        other = nodes.create_instance(2, "img")["new_contract"]
        with pytest.raises(ValueError, match="on-demand"):
            fake.preempt(other)
    finally:
        fake.__exit__(None, None, None)


def test_billing_per_instance_and_the_account_credit(monkeypatch: pytest.MonkeyPatch) -> None:
    """While loading only the disk is billed, while running ``dph_total``; after the destroy
    nothing; ``/users/current/`` shows the credit less everything spent."""
    fake = serve(monkeypatch, FakeVast(KEY, [make_offer(1, 36.0, storage_cost=7.3)],
                                       boot_delay_s=0.5, credit=10.0))
    try:
        t0 = time.time()
        iid = nodes.create_instance(1, "img", disk=10)["new_contract"]
        assert nodes.get_instance(iid)["actual_status"] == "loading"
        until(lambda: nodes.get_instance(iid)["actual_status"] == "running")
        t1 = time.time()
        until(lambda: time.time() > t1 + 0.3)
        t2 = time.time()
        cost = fake.cost(iid)
        t3 = time.time()
        storage = 7.3 * 10 / 730
        assert 36.0 * (t2 - t1) / 3600 <= cost <= (36.0 + storage) * (t3 - t0) / 3600
        nodes.destroy_instance(iid)
        spent = fake.spent()
        credit = api.http_get(api.apiurl("/users/current/"))["credit"]
        assert credit == pytest.approx(10.0 - spent, abs=1e-5)
    finally:
        fake.__exit__(None, None, None)


def test_exited_containers_and_images_that_never_load(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    """A node process that ends leaves its instance ``exited`` (billed for its disk); an
    instance on a dud machine stays ``loading`` and never starts its node."""
    offer = make_offer(1, 1.0)
    dud = make_offer(2, 1.0, machine_id=4242)
    fake = serve(monkeypatch, FakeVast(KEY, [offer, dud], duds={4242}, workdir=tmp_path,
                                       node_command=[sys.executable, "-c", "print('bye')"]))
    try:
        quick = nodes.create_instance(1, "img", args=[])["new_contract"]
        stuck = nodes.create_instance(2, "img", args=[])["new_contract"]
        until(lambda: nodes.get_instance(quick)["actual_status"] == "exited")
        assert fake.meters[quick]["state"] == "exited"
        assert nodes.get_instance(stuck)["actual_status"] == "loading"
        assert stuck not in fake.processes
        assert fake.states() == {quick: "exited", stuck: "loading"}
    finally:
        fake.__exit__(None, None, None)
