"""The Hub mirror within the Hub's limits: quotas and ``Retry-After``, folder sizes, files per
commit, tar shards, and repositories mirrored by older versions.

Remotes of thousands of done jobs come from ``tests/support/bigremote.py`` (one
``git fast-import``); the catch-up reads them through a slim local copy, as ``distribute mirror``
does. Assertions are about what the Hub holds and how many commits and refusals it took, never
about time.
"""
from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest
from support import bigremote
from support.hubdata import REPO, TOKEN, serve_fake_hub
from support.hubserver import FakeHub

from distribute import hub, queue_jobs_func, worker_from_url
from distribute.hub.batch import COMMIT_MAX_FILES
from distribute.ledger import job_slug

pytestmark = pytest.mark.slow


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    yield from serve_fake_hub(monkeypatch, 1000, DISTRIBUTE_HF_TIMEOUT_S="30",
                              DISTRIBUTE_HF_COMMITS_PER_HOUR="360000",
                              HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_XET="1")


def folder_sizes(paths: list[str]) -> Counter[str]:
    """Entries (files and folders) directly in each folder of the repository ("" = the top)."""
    entries = set()
    for path in paths:
        parts = path.split("/")
        entries.update(("/".join(parts[:i]), parts[i]) for i in range(len(parts)))
    return Counter(folder for folder, _ in entries)


def test_commit_quota_429_is_waited_out_as_the_hub_asks_within_the_bound(
        fake: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.txt").write_text("a")
    fake.set_quota(1, 2.0)  # one commit per 2 s
    hub.upload_file(tmp_path / "a.txt", "one.txt")
    before = hub.stats()
    hub.upload_file(tmp_path / "a.txt", "two.txt")  # refused once with Retry-After, then made
    assert fake.refused() == 1 and len(fake.commits(REPO)) == 2
    assert hub.stats()["quota_waits"] == before["quota_waits"] + 1
    assert [s.status for s in fake.seen if s.kind == "commit"] == ["200", "429", "200"]
    monkeypatch.setenv("DISTRIBUTE_HF_MAX_WAIT_S", "0.5")  # the Hub asks for more than allowed
    with pytest.raises(hub.HubQuotaError, match="asks to wait 2s, more than the 0.5s") as raised:
        hub.upload_file(tmp_path / "a.txt", "three.txt")
    assert raised.value.retry_after == 2 and len(fake.commits(REPO)) == 2
    assert TOKEN not in str(raised.value)


def test_catch_up_of_12000_jobs_in_few_large_commits_and_small_folders(
        fake: FakeHub, tmp_path: Path) -> None:
    bigremote.build(tmp_path / "big.git", 12_000, queued=0)
    worker = worker_from_url(f"file://{tmp_path}/big.git", tmp_path / "copy", "catch-up")
    try:
        report = hub.catch_up(worker)
        assert report.uploaded_jobs == 12_000 and report.uploaded_files == 12_000
        commits = fake.commits(REPO)
        assert len(commits) == 12 == len(report.commits)
        assert all(len(c.changed) <= COMMIT_MAX_FILES + 1 for c in commits)  # (+ the layout file)
        files = list(fake.files(REPO))
        assert len(files) == 12_001
        sizes = folder_sizes(files)
        assert max(sizes.values()) <= 257 < 10_000  # 256 shard folders and the layout file on top
        assert json.loads(fake.files(REPO)[hub.LAYOUT_FILE])["layout"] == "folders"
        assert f"{hub.hub_path_for('job0000042')}/result.txt" in fake.files(REPO)
        assert hub.mirror_status(worker).lag == 0
        fake.reset_counts()
        again = hub.catch_up(worker)
        assert again.pending == [] and again.up_to_date == 12_000 and again.commits == []
        assert {s.kind for s in fake.seen} == {"tree"}  # one paginated listing, nothing else
    finally:
        worker.close()


def test_catch_up_waits_for_retry_after_and_resumes_where_it_stopped(
        fake: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bigremote.build(tmp_path / "big.git", 30, queued=0)
    worker = worker_from_url(f"file://{tmp_path}/big.git", tmp_path / "copy", "catch-up")
    try:
        fake.set_quota(1, 2.0)
        report = hub.catch_up(worker, batch=10)  # 3 commits; the Hub allows one per 2 s
        assert report.uploaded_jobs == 30 and len(report.commits) == 3
        assert fake.refused() >= 1 and len(fake.files(REPO)) == 31
        monkeypatch.setenv("HF_REPO_ID", "tester/second")
        monkeypatch.setenv("DISTRIBUTE_HF_MAX_WAIT_S", "0.5")  # less than the Hub asks for
        fake.clear_quotas()
        fake.set_quota(1, 3.0)
        with pytest.raises(hub.HubQuotaError, match="10 of 30 jobs were mirrored before that"):
            hub.catch_up(worker, batch=10)
        assert len(fake.commits("tester/second")) == 1
        state = hub.read_state(worker.clone, hub.settings(), refresh=True)
        assert state.cursor == 10 and state.wait_s() > 0  # the fleet waits what the Hub asked
        monkeypatch.setenv("DISTRIBUTE_HF_MAX_WAIT_S", "30")
        report = hub.catch_up(worker, batch=10)
        assert report.uploaded_jobs == 20 and report.up_to_date == 10
        assert len(fake.files("tester/second")) == 31
    finally:
        worker.close()


def test_pack_puts_n_jobs_per_tar_shard_and_live_batches_extend_the_last_one(
        fake: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bigremote.build(tmp_path / "big.git", 1_250, queued=5)
    worker = worker_from_url(f"file://{tmp_path}/big.git", tmp_path / "copy", "w1")
    try:
        report = hub.catch_up(worker, pack=100)
        assert report.uploaded_jobs == 1_250
        files = fake.files(REPO)
        assert sorted(p for p in files if p.startswith("shards/")) == [
            f"shards/0000/{k:06d}.tar" for k in range(13)]
        assert len(files) == 2 * 13 + 1 and json.loads(files[hub.LAYOUT_FILE])["jobs_per_shard"] == 100
        with tarfile.open(fileobj=io.BytesIO(files["shards/0000/000012.tar"])) as tar:
            assert tar.getnames() == [f"job{i:07d}/result.txt" for i in range(1201, 1251)]
        index = [json.loads(line) for line in files["index/0000/000012.jsonl"].decode().splitlines()]
        assert [e["job"] for e in index] == [f"job{i:07d}" for i in range(1201, 1251)]
        assert hub.locate(worker, "job0000150") == ("shards/0000/000001.tar", "job0000150/")

        monkeypatch.setenv("DISTRIBUTE_HF_BATCH_FILES", "1")  # live: a batch after each finish
        job = worker.get_next_job(queue_jobs_func)
        Path(worker.job_dir or "", "result.txt").write_text("live\n")
        worker.finish_job()
        assert hub.mirror_after_finish(worker, job) is True
        with tarfile.open(fileobj=io.BytesIO(fake.files(REPO)["shards/0000/000012.tar"])) as tar:
            assert tar.getnames()[-1] == f"{job_slug(job)}/result.txt" and len(tar.getnames()) == 51
        assert set(fake.commits(REPO)[-1].changed) == {"shards/0000/000012.tar",
                                                       "index/0000/000012.jsonl"}
        fake.reset_counts()
        assert hub.catch_up(worker).commits == []  # indexes compare by blob id: nothing to send
        assert {s.kind for s in fake.seen} == {"tree"}
    finally:
        worker.close()


def test_a_repository_mirrored_flat_keeps_its_jobs_and_new_ones_go_to_shard_folders(
        fake: FakeHub, tmp_path: Path) -> None:
    bigremote.build(tmp_path / "big.git", 40, queued=0)
    old = {f"job{i:07d}/result.txt": b"a result\n" for i in range(1, 21)}  # an older mirror
    for path in old:
        (tmp_path / "r.txt").write_bytes(old[path])
    hub.commit_files([(p, tmp_path / "r.txt") for p in old], "an older version's mirror")
    worker = worker_from_url(f"file://{tmp_path}/big.git", tmp_path / "copy", "w1")
    try:
        report = hub.catch_up(worker)
    finally:
        worker.close()
    assert report.up_to_date == 20 and report.uploaded_jobs == 20  # nothing uploaded twice
    files = fake.files(REPO)
    assert set(old) <= set(files)
    assert all(f"{hub.hub_path_for(f'job{i:07d}')}/result.txt" in files for i in range(21, 41))
    assert json.loads(files[hub.LAYOUT_FILE])["legacy_flat"] is True
