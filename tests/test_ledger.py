"""Properties of the ledger files and of job slugs."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from distribute import InvalidJobError
from distribute.ledger import Ledger, check_job, job_slug

jobs = st.text(min_size=1, max_size=120).filter(lambda s: s == s.strip())


def valid(job: str) -> bool:
    try:
        check_job(job)
        return True
    except InvalidJobError:
        return False


@settings(max_examples=300, deadline=None)
@given(st.lists(jobs, min_size=2, max_size=30, unique=True))
def test_slugs_are_safe_and_distinct(batch: list[str]) -> None:
    slugs = [job_slug(j) for j in batch]
    assert len(set(slugs)) == len(slugs)
    root = Path("/x/updates")
    for slug in slugs:
        assert "/" not in slug and slug not in ("", ".", "..") and not slug.startswith(("-", "."))
        assert (root / slug).resolve().parent == root
        assert ".." not in slug and not slug.endswith((".", ".lock")) and "@{" not in slug


def test_slugs_are_valid_ref_components() -> None:
    samples = ["..", "a..b", "x.lock", "@{u}", "-rf", "a/b", "~^:?*[\\", "é", "x" * 500, "job.",
               "HEAD", "a-0123456789", "a b", ".hidden"]
    for job in samples:
        slug = job_slug(job)
        subprocess.run(["git", "check-ref-format", f"refs/heads/w/{slug}"], check=True)
    assert job_slug("a-0123456789") != "a-0123456789"  # looks hashed: hashed again, stays unique
    assert job_slug("job17") == "job17"


@settings(max_examples=200, deadline=None)
@given(st.lists(jobs.filter(valid), min_size=1, max_size=15, unique=True),
       st.lists(st.tuples(st.sampled_from(["claim", "finish", "fail", "requeue"]),
                          st.integers(0, 14)), max_size=40))
def test_each_job_stays_in_exactly_one_file(tmp_path_factory: pytest.TempPathFactory,
                                            batch: list[str], ops: list[tuple[str, int]]) -> None:
    root = tmp_path_factory.mktemp("ledger")
    ledger = Ledger(queued=list(batch))
    for op, index in ops:
        job = batch[index % len(batch)]
        try:
            if op == "claim":
                if job in ledger.queued:
                    ledger.queued.remove(job)
                    ledger.claim(job, "w")
            elif op == "finish":
                ledger.finish(job, "w")
            elif op == "fail":
                ledger.fail(job, "w", "reason\twith\ntabs")
            else:
                ledger.requeue(job, 3, "silent")
        except InvalidJobError:
            pass
        ledger.write(root, queue=True)
        ledger = Ledger.read(root)  # parse -> write round trip at every step
        places = (ledger.queued + [e.job for e in ledger.running] + [e.job for e in ledger.done]
                  + [e.job for e in ledger.failed])
        assert sorted(places) == sorted(batch)


def test_hand_edited_files_parse(tmp_path: Path) -> None:
    (tmp_path / "jobs.txt").write_bytes(b"a\r\n\r\n  b  \n\nc")
    (tmp_path / "running.txt").write_text("x\tw1\t2026-01-01T00:00:00Z\t2\n\n")
    (tmp_path / "done.txt").write_text("y\n")
    ledger = Ledger.read(tmp_path)
    assert ledger.queued == ["a", "b", "c"]
    assert (ledger.running[0].job, ledger.running[0].attempt) == ("x", 2)
    assert (ledger.done[0].job, ledger.done[0].worker, ledger.done[0].attempt) == ("y", "", 1)


def test_resume_records_follow_the_job(tmp_path: Path) -> None:
    """``resume.txt`` names the branch a requeued or given-back job resumes from, stays while its
    next attempt runs, goes with its finish or failure, and is absent when empty."""
    ledger = Ledger(queued=["a", "b"])
    ledger.claim("a", "w1")
    assert ledger.requeue("a", 3, "w1 silent")
    assert ledger.resume == {"a": "w1/a"}
    ledger.claim("a", "w2")
    ledger.claim("b", "w3")
    assert ledger.give_back("b", "w3", "w3/b-0abcde")
    ledger.write(tmp_path, queue=True)
    read = Ledger.read(tmp_path)
    assert read.resume == {"a": "w1/a", "b": "w3/b-0abcde"}
    read.finish("a", "w2")
    read.claim("b", "w4")
    read.fail("b", "w4", "boom")
    assert read.resume == {}
    read.write(tmp_path)
    assert not (tmp_path / "resume.txt").exists()
    assert ledger.requeue("a", 3, "by hand", resume=False) is True
    assert "a" not in ledger.resume
