"""The Hugging Face mirror against a loopback fake Hub (tests/hubserver.py) and real git remotes.

The real ``huggingface_hub`` client talks to the fake through ``HF_ENDPOINT``. This file is also
the worker process of the multi-process test: ``python test_hub.py URL PATH NAME``.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

# Keep the client off the internet and out of the user's cache, in this process and the ones it
# starts: its once-a-day user-agent registry lives in HF_HOME; seeded here, it is never fetched.
_HF_HOME = Path(tempfile.mkdtemp(prefix="distribute-tests-hf-home-"))
(_HF_HOME / ".agent_harnesses.json").write_text('{"standardEnvVars": [], "harnesses": {}}')
os.environ["HF_HOME"] = str(_HF_HOME)
atexit.register(shutil.rmtree, _HF_HOME, True)

sys.path.insert(0, str(Path(__file__).parent))
from conftest import git_out, ledger_file  # noqa: E402
from hubserver import FakeHub  # noqa: E402

from distribute import DistributeError, config, hub, init_remote, queue_jobs_func, worker_from_url  # noqa: E402
from distribute import protocol  # noqa: E402
from distribute.hub.mirror import _finish_commit  # noqa: E402
from distribute.ledger import Entry, job_slug  # noqa: E402
from distribute.repo import Clone  # noqa: E402
from distribute.settings import SettingError  # noqa: E402
from distribute.worker import Worker  # noqa: E402

TOKEN = "hf_TestTokenQ7x9Zr2Lk5Vb8Nm3"
REPO = "tester/results"
JOBS = ["job-1", "a b/c", "ünïcödé", "x" * 120, "-opt"]


def write_results(job: str, job_dir: Path) -> None:
    """Three files per job: text, binary in a subdirectory, and a non-ASCII name."""
    (job_dir / "data").mkdir(parents=True, exist_ok=True)
    (job_dir / "result.txt").write_text(f"result of {job}\n", encoding="utf-8")
    (job_dir / "data" / "blob.bin").write_bytes(bytes(range(256)) + job.encode())
    (job_dir / "notes é.md").write_text(f"# {job}\n", encoding="utf-8")


def expected_files(jobs: list[str]) -> dict[str, bytes]:
    out = {}
    for job in jobs:
        slug = job_slug(job)
        out[f"{slug}/result.txt"] = f"result of {job}\n".encode()
        out[f"{slug}/data/blob.bin"] = bytes(range(256)) + job.encode()
        out[f"{slug}/notes é.md"] = f"# {job}\n".encode()
    return out


def run_jobs(worker: Worker, before_mirror=None) -> dict[str, bool]:  # noqa: ANN001
    """Drain the queue like the CLI's loop (each finish claims the next job in the same lock hold),
    mirroring each job right after its finish; ``{job: mirrored?}``."""
    mirrored = {}
    job = worker.get_next_job(queue_jobs_func)
    while job is not None:
        write_results(job, Path(worker.job_dir or ""))
        next_job = worker.finish_job(queue_jobs_func)
        if before_mirror:
            before_mirror(job)
        mirrored[job] = hub.mirror_after_finish(worker, job)
        job = next_job
    return mirrored


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub(TOKEN, page_size=5) as server:
        for key, value in {"HF_ENDPOINT": server.url, "HF_TOKEN": TOKEN, "HF_REPO_ID": REPO,
                           "DISTRIBUTE_HF_RETRIES": "1", "DISTRIBUTE_HF_BACKOFF_S": "0.01",
                           "DISTRIBUTE_HF_TIMEOUT_S": "5", "DISTRIBUTE_HF_PAUSE_S": "0"}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("HF_REPO_TYPE", raising=False)
        yield server


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


def test_worker_loop_with_live_mirroring_puts_every_job_in_one_commit_each(
        fake: FakeHub, file_remote: str, tmp_path: Path) -> None:
    jobs = JOBS + ["..", "job-7"]
    init_remote(file_remote, jobs)
    procs = [subprocess.Popen([sys.executable, __file__, file_remote, str(tmp_path / n), n],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in ("w1", "w2")]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    lines = [l for out, _ in outputs for l in out.splitlines()]
    assert sorted(lines) == sorted(f"MIRRORED\t{j}" for j in jobs)
    assert sorted(l.split("\t")[0] for l in ledger_file(file_remote, "done.txt", tmp_path)) == sorted(jobs)

    assert fake.files(REPO) == expected_files(jobs)
    commits = fake.commits(REPO)
    assert len(commits) == len(jobs)  # one commit per job
    done = {l.split("\t")[0]: l.split("\t")[1] for l in ledger_file(file_remote, "done.txt", tmp_path)}
    finished = finish_commits(file_remote, tmp_path)
    for commit in commits:
        job = next(j for j in jobs if f"job: {j}\t" in commit.description)
        assert set(commit.changed) == set(expected_files([job]))
        sha = finished[job]
        assert f"git commit: {sha}" in commit.description
        assert f"by {done[job]} from git {sha[:12]}" in commit.title
        assert (job if len(job) <= 100 else job[:97]) in commit.title
    assert fake.count("commit") == len(jobs)
    assert 1 <= fake.count("create") <= 2  # the first upload (of each worker) finds no dataset
    assert fake.count("preupload") == len(jobs) + fake.count("create")
    assert fake.count("tree") == 0  # live mirroring never lists the repository


def test_hub_outage_leaves_jobs_done_and_unmirrored_then_mirror_uploads_exactly_those(
        fake: FakeHub, worker: Worker, file_remote: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("DISTRIBUTE_HF_TIMEOUT_S", "0.3")
    outage = {JOBS[1]: "500", JOBS[2]: "429", JOBS[3]: "timeout"}

    def hub_state(job: str) -> None:
        fake.heal()
        if job in outage:
            fake.fail(outage[job])

    with caplog.at_level(logging.WARNING):
        mirrored = run_jobs(worker, before_mirror=hub_state)
    fake.heal()
    done = [line.split("\t")[0] for line in ledger_file(file_remote, "done.txt", tmp_path)]
    assert sorted(done) == sorted(JOBS)  # every job is done in git
    assert {j for j, ok in mirrored.items() if not ok} == set(outage)
    assert caplog.text.count("is done but not mirrored") == 3 and TOKEN not in caplog.text
    for problem in ("HTTP 500 after 2 attempts", "HTTP 429 after 2 attempts", "ReadTimeout after 2 attempts"):
        assert problem in caplog.text
    ok_jobs = [j for j in JOBS if j not in outage]
    assert fake.files(REPO) == expected_files(ok_jobs)
    assert len(fake.commits(REPO)) == len(ok_jobs)

    report = hub.catch_up(worker, batch=2)
    assert sorted(report.pending) == sorted(outage)
    new = fake.commits(REPO)[len(ok_jobs):]
    assert len(new) == 2  # 3 jobs, 2 per commit
    assert set().union(*(c.changed for c in new)) == set(expected_files(sorted(outage)))
    assert fake.files(REPO) == expected_files(JOBS)


def test_lost_commit_answer_then_repeated_mirror_runs_upload_nothing(fake: FakeHub, worker: Worker) -> None:
    fake.fail("drop-after-commit", times=1)
    mirrored = run_jobs(worker)
    assert not mirrored[JOBS[0]] and all(mirrored[j] for j in JOBS[1:])
    assert fake.files(REPO) == expected_files(JOBS)  # the commit whose answer was lost did land
    commits = len(fake.commits(REPO))
    assert commits == len(JOBS)
    fake.reset_counts()
    for _ in range(2):
        report = hub.catch_up(worker)
        assert report.pending == [] and report.commits == [] and report.up_to_date == len(JOBS)
    assert len(fake.commits(REPO)) == commits
    assert fake.count("commit") == fake.count("preupload") == 0
    assert fake.count("tree") == 2 * 5  # 25 entries (15 files, 10 folders) in pages of 5, per run


def test_mirror_run_that_dies_midway_is_simply_run_again(fake: FakeHub, worker: Worker) -> None:
    fake.fail("500")
    assert not any(run_jobs(worker).values())
    fake.heal()
    fake.fail("500", kinds={"commit"}, times=1, after=1)  # the second batch's commit fails
    with pytest.raises(hub.HubUnavailableError, match="2 of 5 jobs were mirrored before that"):
        hub.catch_up(worker, batch=2)
    assert len(fake.commits(REPO)) == 1
    report = hub.catch_up(worker, batch=2)
    assert report.uploaded_jobs == 3 and len(report.commits) == 2
    assert fake.files(REPO) == expected_files(JOBS)


def test_a_file_changed_on_master_is_uploaded_again(fake: FakeHub, worker: Worker) -> None:
    run_jobs(worker)
    slug = job_slug(JOBS[3])
    commits = len(fake.commits(REPO))

    def edit(ledger, root: Path) -> str:  # noqa: ANN001
        (root / "updates" / slug / "result.txt").write_text("corrected\n")
        return "fix a result"

    worker.include_paths(f"updates/{slug}")  # a slim copy holds only the ledger
    worker.update_master(edit)
    report = hub.catch_up(worker)
    assert report.pending == [JOBS[3]] and report.uploaded_files == 1
    assert fake.commits(REPO)[-1].changed == {f"{slug}/result.txt": b"corrected\n"}
    assert len(fake.commits(REPO)) == commits + 1


def test_since_considers_only_jobs_finished_after_the_commit(
        fake: FakeHub, worker: Worker, file_remote: str, tmp_path: Path) -> None:
    fake.fail("500")
    run_jobs(worker)
    fake.heal()
    finished = finish_commits(file_remote, tmp_path)
    report = hub.catch_up(worker, since=finished[JOBS[3]], dry_run=True)
    assert report.pending == JOBS[4:] and report.commits == []
    assert fake.commits(REPO) == []
    hub.catch_up(worker, since=finished[JOBS[3]])
    assert fake.files(REPO) == expected_files(JOBS[4:])
    with pytest.raises(DistributeError, match="no such commit"):
        hub.catch_up(worker, since="0" * 40)


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
            mirrored = run_jobs(worker)
            with pytest.raises(hub.HubAuthError) as raised:
                hub.catch_up(worker)
    finally:
        config.use_env_file(None)
    assert not any(mirrored.values())
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
    assert _finish_commit(clone, head, Entry(job, "w2")) == new
    assert _finish_commit(clone, head, Entry("a", "w1")) == old
    assert _finish_commit(clone, head, Entry("a2", "w3")) == head
    assert _finish_commit(clone, head, Entry("never", "w1")) == head  # not found: the commit given
    assert _finish_commit(clone, old, Entry(job, "w2")) == old


def test_old_module_paths_still_work() -> None:
    import distribute.hub_cli
    import distribute.mirror
    from distribute.cli import hub as cli_hub

    assert distribute.mirror.catch_up is hub.catch_up
    assert distribute.mirror.mirror_after_finish is hub.mirror_after_finish
    assert distribute.mirror.DEFAULT_BATCH == hub.DEFAULT_BATCH
    assert distribute.hub_cli.main is cli_hub.main


def _one_file_dir(worker: Worker) -> Path:
    folder = Path(worker.path).parent / "one"
    folder.mkdir(exist_ok=True)
    (folder / "f.txt").write_text("f")
    return folder


def test_symlinks_are_reported_and_live_mirroring_pauses_after_an_outage(
        fake: FakeHub, worker: Worker, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("DISTRIBUTE_HF_PAUSE_S", "3600")
    results = []
    with caplog.at_level(logging.WARNING):
        for step in range(3):
            job = worker.get_next_job(queue_jobs_func)
            write_results(job, Path(worker.job_dir or ""))
            (Path(worker.job_dir or "") / "link").symlink_to("result.txt")
            worker.finish_job()
            if step == 1:
                fake.fail("500")
            requests = fake.count()
            results.append(hub.mirror_after_finish(worker, job))
            fake.heal()
    assert results == [True, False, False]
    assert fake.count() == requests  # paused: the third job did not even try
    assert "paused for" in caplog.text and "link (symlinks are not uploaded)" in caplog.text
    assert fake.files(REPO) == expected_files(JOBS[:1])
    report = hub.catch_up(worker)  # the catch-up is not paused
    assert report.pending == JOBS[1:3]
    assert sorted(report.skipped) == sorted(f"updates/{job_slug(j)}/link (symlinks are not uploaded)"
                                            for j in JOBS[:3])
    assert fake.files(REPO) == expected_files(JOBS[:3])


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    url, path, name = sys.argv[1:4]
    w = worker_from_url(url, path, name, poll_max_s=0.1)
    try:
        for job, ok in run_jobs(w).items():
            print(f"{'MIRRORED' if ok else 'UNMIRRORED'}\t{job}", flush=True)
    finally:
        w.close()
