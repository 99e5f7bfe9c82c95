"""The Hugging Face mirror against a loopback fake Hub (tests/support/hubserver.py) and real git
remotes.

The real ``huggingface_hub`` client talks to the fake through ``HF_ENDPOINT``. The worker process
of the multi-process test is ``tests/support/hub_worker.py``.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from support import SUPPORT_DIR
from support.hubdata import (EAGER, REPO, TOKEN, expected_files, results, run_jobs,
                             serve_fake_hub, write_results)
from support.hubserver import FakeHub
from support.remotes import git_out, ledger_file

from distribute import (DistributeError, config, hub, init_remote, protocol, queue_jobs_func,
                        worker_from_url)
from distribute.hub.source import finish_commit
from distribute.ledger import Entry
from distribute.protocol import job_path
from distribute.repo import Clone
from distribute.settings import SettingError
from distribute.worker import Worker

pytestmark = pytest.mark.usefixtures("this_checkout")
JOBS = ["job-1", "a b/c", "ünïcödé", "x" * 120, "-opt"]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    yield from serve_fake_hub(monkeypatch, 5, DISTRIBUTE_HF_TIMEOUT_S="5", **EAGER)


@pytest.fixture
def worker(file_remote: str, tmp_path: Path) -> Iterator[Worker]:
    init_remote(file_remote, JOBS)
    w = worker_from_url(file_remote, tmp_path / "copy", "w1", poll_max_s=0.1)
    yield w
    w.close()


def finish_commits(url: str, tmp: Path) -> dict[str, str]:
    """``{job: sha of master's commit that finished it}``."""
    out = {}
    for line in git_out(url, "log", "--first-parent", "--format=%H%x09%s", "master", tmp=tmp).splitlines():
        sha, _, subject = line.partition("\t")
        _, _, job = subject.partition(" finished job ")
        if job:
            out[job] = sha
    return out


def described_jobs(commit) -> list[str]:  # noqa: ANN001
    """The jobs a Hub commit's description names."""
    return [line.split("\t")[0][len("job: "):] for line in commit.description.splitlines()
            if line.startswith("job: ")]


@pytest.mark.slow
def test_two_worker_processes_mirror_live_in_batches_and_flush(
        fake: FakeHub, file_remote: str, tmp_path: Path) -> None:
    jobs = JOBS + ["..", "job-7"]
    init_remote(file_remote, jobs)
    worker_py = str(SUPPORT_DIR / "hub_worker.py")
    procs = [subprocess.Popen([sys.executable, worker_py, file_remote, str(tmp_path / n), n],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in ("w1", "w2")]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    lines = [l for out, _ in outputs for l in out.splitlines()]
    assert sorted(l.split("\t")[1] for l in lines if not l.startswith("FLUSHED")) == sorted(jobs)
    assert [l for l in lines if l.startswith("FLUSHED")] == ["FLUSHED\tTrue"] * 2
    assert sorted(l.split("\t")[0] for l in ledger_file(file_remote, "done.txt", tmp_path)) == sorted(jobs)

    assert results(fake) == expected_files(jobs)
    commits = fake.commits(REPO)
    assert 1 <= len(commits) <= len(jobs)
    master = git_out(file_remote, "rev-list", "--first-parent", "master", tmp=tmp_path).split()
    first = {}
    for commit in commits:
        assert commit.description.splitlines()[0][len("git commit: "):] in master
        for job in described_jobs(commit):
            first.setdefault(job, commit)
            assert set(expected_files([job])) <= set(first[job].files)
    assert sorted(first) == sorted(jobs)  # every job was named by the commit that uploaded it
    assert fake.count("commit") == len(commits)
    assert 1 <= fake.count("create") <= 2  # the first upload (of each worker) finds no dataset
    assert fake.count("tree") <= 2  # the layout is looked up once; then the mirror state has it
    state = hub.read_state(Clone(tmp_path / "w1"), hub.settings(), refresh=True)
    assert state.cursor == len(jobs) and not state.committing()


@pytest.mark.slow
def test_hub_outage_leaves_jobs_pending_and_the_next_batch_takes_them_along(
        fake: FakeHub, worker: Worker, file_remote: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("DISTRIBUTE_HF_TIMEOUT_S", "0.3")
    outage = {JOBS[1]: "500", JOBS[2]: "429", JOBS[3]: "timeout"}

    def hub_state(job: str) -> None:
        fake.heal()
        if job in outage:
            fake.fail(outage[job])

    with caplog.at_level(logging.WARNING):
        mirrored = run_jobs(worker, before_mirror=hub_state, flush=False)
    fake.heal()
    done = [line.split("\t")[0] for line in ledger_file(file_remote, "done.txt", tmp_path)]
    assert sorted(done) == sorted(JOBS)  # every job is done in git
    assert {j for j, ok in mirrored.items() if ok is None} == set(outage)
    assert caplog.text.count("its results wait for a later Hub commit") == 3 and TOKEN not in caplog.text
    for problem in ("HTTP 500 after 2 attempts", "HTTP 429 after 2 attempts", "ReadTimeout after 2 attempts"):
        assert problem in caplog.text
    assert results(fake) == expected_files(JOBS)  # the last job's batch took the others along
    last = fake.commits(REPO)[-1]
    assert sorted(described_jobs(last)) == sorted([*outage, JOBS[4]])
    report = hub.catch_up(worker)
    assert report.pending == [] and report.commits == []


@pytest.mark.slow
def test_lost_commit_answer_then_repeated_mirror_runs_upload_nothing(fake: FakeHub, worker: Worker) -> None:
    fake.fail("drop-after-commit", times=1)
    mirrored = run_jobs(worker)
    assert mirrored[JOBS[0]] is None and all(mirrored[j] for j in JOBS[1:])
    assert results(fake) == expected_files(JOBS)  # the commit whose answer was lost did land
    commits = fake.commits(REPO)
    assert len(commits) == len(JOBS)
    assert set(commits[1].changed) == set(expected_files(JOBS[1:2]))  # job 1 was not sent twice
    fake.reset_counts()
    for _ in range(2):
        report = hub.catch_up(worker)
        assert report.pending == [] and report.commits == [] and report.up_to_date == len(JOBS)
    assert len(fake.commits(REPO)) == len(commits)
    assert fake.count("commit") == fake.count("preupload") == 0
    # 5 jobs x 3 files + the layout file, and 5 x 4 folders + 2 shared ones... in pages of 5:
    entries = len(fake.files(REPO)) + len({p.rsplit("/", i)[0] for p in fake.files(REPO)
                                           for i in range(1, p.count("/") + 1)})
    assert fake.count("tree") == 2 * -(-entries // 5)


@pytest.mark.slow
def test_mirror_run_that_dies_midway_is_simply_run_again(fake: FakeHub, worker: Worker) -> None:
    fake.fail("500")
    assert not any(run_jobs(worker, flush=False).values())
    fake.heal()
    fake.fail("500", kinds={"commit"}, times=1, after=1)  # the second batch's commit fails
    with pytest.raises(hub.HubUnavailableError, match="2 of 5 jobs were mirrored before that"):
        hub.catch_up(worker, batch=2)
    assert len(fake.commits(REPO)) == 1
    assert hub.read_state(worker.clone, hub.settings(), refresh=True).cursor == 2
    report = hub.catch_up(worker, batch=2)
    assert report.uploaded_jobs == 3 and len(report.commits) == 2
    assert results(fake) == expected_files(JOBS)
    assert hub.read_state(worker.clone, hub.settings(), refresh=True).cursor == len(JOBS)


@pytest.mark.slow
def test_a_file_changed_on_master_is_uploaded_again(fake: FakeHub, worker: Worker) -> None:
    run_jobs(worker)
    path = job_path(JOBS[3])
    commits = len(fake.commits(REPO))

    def edit(ledger, root: Path) -> str:  # noqa: ANN001
        (root / path / "result.txt").write_text("corrected\n")
        return "fix a result"

    worker.include_paths(path)  # a slim copy holds only the ledger
    worker.update_master(edit)
    report = hub.catch_up(worker)
    assert report.pending == [JOBS[3]] and report.uploaded_files == 1
    assert fake.commits(REPO)[-1].changed == {f"{hub.hub_path_for(JOBS[3])}/result.txt": b"corrected\n"}
    assert len(fake.commits(REPO)) == commits + 1


@pytest.mark.slow
def test_since_considers_only_jobs_finished_after_the_commit(
        fake: FakeHub, worker: Worker, file_remote: str, tmp_path: Path) -> None:
    fake.fail("500")
    run_jobs(worker, flush=False)
    fake.heal()
    finished = finish_commits(file_remote, tmp_path)
    report = hub.catch_up(worker, since=finished[JOBS[3]], dry_run=True)
    assert report.pending == JOBS[4:] and report.commits == []
    assert fake.commits(REPO) == []
    hub.catch_up(worker, since=finished[JOBS[3]])
    assert results(fake) == expected_files(JOBS[4:])
    assert hub.read_state(worker.clone, hub.settings(), refresh=True).cursor == 0  # (not all looked at)
    with pytest.raises(DistributeError, match="no such commit"):
        hub.catch_up(worker, since="0" * 40)


@pytest.mark.slow
def test_wrong_token_is_a_clear_error_and_never_shown(
        fake: FakeHub, worker: Worker, file_remote: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "hf_WrongTokenP4s8Kd0Jw6Yc"
    monkeypatch.delenv("HF_TOKEN")  # only in a .env file: redact() cannot know it, the hub module must
    env_file = tmp_path / "hub.env"
    env_file.write_text(f"HF_TOKEN={wrong}\n")
    config.use_env_file(str(env_file))
    try:
        with caplog.at_level(logging.DEBUG):
            mirrored = run_jobs(worker, flush=False)
            with pytest.raises(hub.HubAuthError) as raised:
                hub.catch_up(worker)
    finally:
        config.use_env_file(None)
    assert set(mirrored.values()) == {None}
    message = str(raised.value)
    assert "refused the token (HTTP 401)" in message and "HF_TOKEN" in message and "\n" not in message
    assert caplog.text.count("refused the token (HTTP 401)") == len(JOBS)
    assert wrong not in message and wrong not in caplog.text
    assert wrong not in git_out(file_remote, "log", "--all", "-p", "--format=%B", tmp=tmp_path)
    assert fake.repos == {} and fake.count() >= len(JOBS)


def test_file_functions(fake: FakeHub, tmp_path: Path) -> None:
    url = hub.initialize_dataset()
    assert url == f"{fake.url}/datasets/{REPO}" and hub.initialize_dataset() == url
    assert fake.count("create") == 2 and len(fake.repos) == 1  # created once, then kept
    single = tmp_path / "a.txt"
    single.write_text("A")
    hub.upload_file(single)
    hub.upload_file(single, "docs/renamed.txt")
    folder = tmp_path / "dir"
    (folder / "sub").mkdir(parents=True)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "x.bin").write_bytes(b"\0\1\xff")
    (folder / "sub" / "y.txt").write_text("y")
    hub.upload_directory(folder, "dir")
    assert set(fake.commits(REPO)[-1].changed) == {"dir/x.bin", "dir/sub/y.txt"}  # one commit
    commits = len(fake.commits(REPO))
    hub.upload_directory(folder, "dir")  # unchanged: no new commit
    assert len(fake.commits(REPO)) == commits
    assert hub.list_files() == ["a.txt", "dir/sub/y.txt", "dir/x.bin", "docs/renamed.txt"]
    hub.delete_file("a.txt")
    assert "a.txt" not in fake.files(REPO)
    with pytest.raises(hub.HubError, match="no such file"):
        hub.delete_file("missing.txt")
    from huggingface_hub import hf_hub_download

    got = hf_hub_download(REPO, "dir/x.bin", repo_type="dataset", endpoint=fake.url, token=TOKEN,
                          cache_dir=tmp_path / "cache")
    assert Path(got).read_bytes() == b"\0\1\xff"


def test_settings_are_checked(fake: FakeHub, worker: Worker, monkeypatch: pytest.MonkeyPatch,
                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HF_REPO_TYPE", "model")
    hub.upload_directory(_one_file_dir(worker))
    assert list(fake.files(REPO, "model")) == ["f.txt"]
    monkeypatch.setenv("HF_REPO_TYPE", "bucket")
    with pytest.raises(hub.HubError, match="HF_REPO_TYPE must be one of"):
        hub.list_files()
    monkeypatch.delenv("HF_REPO_TYPE")
    monkeypatch.delenv("HF_REPO_ID")
    with caplog.at_level(logging.WARNING):
        assert hub.mirror_after_finish(worker, "job-1") is False
    assert "HF_REPO_ID" in caplog.text
    with pytest.raises(hub.HubError, match="set HF_REPO_ID"):
        hub.catch_up(worker)


@pytest.mark.parametrize("name, value", [
    ("DISTRIBUTE_HF_RETRIES", "nan"), ("DISTRIBUTE_HF_RETRIES", "1.5"),
    ("DISTRIBUTE_HF_TIMEOUT_S", "inf"), ("DISTRIBUTE_HF_TIMEOUT_S", "0.01"),
    ("DISTRIBUTE_HF_BACKOFF_S", "-1"), ("DISTRIBUTE_HF_PAUSE_S", "soon"),
    ("DISTRIBUTE_HF_COMMITS_PER_HOUR", "0"), ("DISTRIBUTE_HF_BATCH_FILES", "0"),
    ("DISTRIBUTE_HF_BATCH_S", "-5"), ("DISTRIBUTE_HF_MAX_WAIT_S", "forever"),
    ("DISTRIBUTE_HF_PACK", "2.5"), ("DISTRIBUTE_MIRROR_BATCH", "0"),
])
def test_malformed_numbers_name_the_variable(fake: FakeHub, worker: Worker,
                                             monkeypatch: pytest.MonkeyPatch, name: str,
                                             value: str, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingError, match=name):
        hub.settings()
    with pytest.raises(DistributeError, match=name):
        hub.list_files()
    with caplog.at_level(logging.WARNING):
        assert hub.mirror_after_finish(worker, "job-1") is False  # never raises
    assert name in caplog.text


def _commit(repo: Path, message: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", message],
                   check=True, env=env)
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


def test_the_finish_commit_is_found_by_its_trailers(tmp_path: Path) -> None:
    """The mirror names the commit that finished a job: the one whose trailers say so (never a
    commit whose subject only looks like it); a commit of an older version, without trailers,
    by its subject."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    job = "b: finished job ü"
    old = _commit(repo, "w1 finished job a")  # before trailers
    new = _commit(repo, protocol.commit_message("w2", protocol.FINISHED, "w2 merged b", job))
    _commit(repo, protocol.commit_message("w2", protocol.TOOK, f"w2 finished job {job}", job))
    _commit(repo, f"w2 finished job {job}")  # a person's commit imitating the old subject
    head = _commit(repo, protocol.commit_message("w3", protocol.FINISHED, "w3 finished job a2",
                                                 "a2"))
    clone = Clone(repo)
    assert finish_commit(clone, head, Entry(job, "w2")) == new
    assert finish_commit(clone, head, Entry("a", "w1")) == old
    assert finish_commit(clone, head, Entry("a2", "w3")) == head
    assert finish_commit(clone, head, Entry("never", "w1")) == head  # not found: the commit given
    assert finish_commit(clone, old, Entry(job, "w2")) == old


def _one_file_dir(worker: Worker) -> Path:
    folder = Path(worker.path).parent / "one"
    folder.mkdir(exist_ok=True)
    (folder / "f.txt").write_text("f")
    return folder


def test_symlinks_are_reported_and_live_mirroring_pauses_after_an_outage(
        fake: FakeHub, worker: Worker, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("DISTRIBUTE_HF_PAUSE_S", "3600")
    said = []
    with caplog.at_level(logging.INFO):
        for step in range(3):
            job = worker.get_next_job(queue_jobs_func)
            write_results(job, Path(worker.job_dir or ""))
            (Path(worker.job_dir or "") / "link").symlink_to("result.txt")
            worker.finish_job()
            if step == 1:
                fake.fail("500")
            requests = fake.count()
            said.append(hub.mirror_after_finish(worker, job))
            fake.heal()
    assert said == [True, None, None]
    assert fake.count() == requests  # paused: the third job did not even try
    assert "paused for" in caplog.text and "link (symlinks are not uploaded)" in caplog.text
    assert results(fake) == expected_files(JOBS[:1])
    report = hub.catch_up(worker)  # the catch-up is not paused
    assert report.pending == JOBS[1:3]
    assert sorted(report.skipped) == sorted(f"{job_path(j)}/link (symlinks are not uploaded)"
                                            for j in JOBS[:3])
    assert results(fake) == expected_files(JOBS[:3])

