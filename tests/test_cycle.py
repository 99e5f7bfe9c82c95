"""A worker's plain cycle and what it asks of git (issue 28): a lone worker's holds take no lock
and skip the fetch (one push, on the master of its own last push); a copy's reads go to one
long-lived ``cat-file``; small objects are written as git writes them."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Callable

from support.remotes import ledger_file, person_appends

from distribute import init_remote, queue_jobs_func, worker_from_url
from distribute.repo import Clone
from distribute.repo.loose import commit_content, write_object


class Recorder:
    """Runs every git command, remembering ``(worker, args)`` of each."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def around(self, process: Any, args: list[str], run: Callable[[], Any]) -> Any:
        self.calls.append((process.name, list(args)))
        return run()

    def since(self, mark: int, worker: str) -> list[str]:
        """The remote commands of ``worker`` since ``mark`` (``push``/``fetch``/``ls-remote``)."""
        commands = [next(a for a in args if not a.startswith("-")) for name, args in
                    self.calls[mark:] if name == worker]
        return [c for c in commands if c in ("push", "fetch", "ls-remote")]


def test_a_lone_worker_holds_without_the_lock_in_one_round_trip(file_remote: str,
                                                                tmp_path: Path,
                                                                seam: Any) -> None:
    init_remote(file_remote, ["a", "b", "c"])
    record = seam(Recorder())
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    assert worker.get_next_job(queue_jobs_func) == "a"
    for job in ("b", "c"):
        Path(worker.job_dir or "", "r.txt").write_text(job)
        worker.commit_update()  # (moves the heartbeat: the finish deletes it at that value)
        mark = len(record.calls)
        worker.finish_job()
        assert record.since(mark, "w") == ["push"]  # no lock, no fetch
        push = next(args for name, args in record.calls[mark:] if "push" in args)
        assert any(a.startswith("--force-with-lease=refs/heads/master:") for a in push)
        # the lock's lease "absent", on a deletion of the absent lock: never taken
        assert "--force-with-lease=refs/distribute/lock:" in push
        assert ":refs/distribute/lock" in push
        mark = len(record.calls)
        assert worker.get_next_job(queue_jobs_func) == job
        assert record.since(mark, "w") == ["push"]
    worker.finish_job()
    assert worker.get_next_job(queue_jobs_func) is None
    assert [line.split("\t")[0] for line in ledger_file(file_remote, "done.txt", tmp_path)] == \
        ["a", "b", "c"]
    worker.close()


def test_a_master_moved_meanwhile_is_fetched(file_remote: str, tmp_path: Path,
                                             seam: Any) -> None:
    """A person's push between two holds: the lockless push on the old master is refused, and
    the hold is made again under the lock, from a fetch; the person's jobs are seen."""
    init_remote(file_remote, ["a", "b"])
    record = seam(Recorder())
    worker = worker_from_url(file_remote, tmp_path / "w", "w")
    assert worker.get_next_job(queue_jobs_func) == "a"
    person_appends(file_remote, tmp_path / "person", ["x"])
    mark = len(record.calls)
    worker.finish_job()
    assert record.since(mark, "w") == ["push", "push", "fetch", "push"]
    assert worker.get_next_job(queue_jobs_func) == "b"
    worker.finish_job()
    assert worker.get_next_job(queue_jobs_func) == "x"
    worker.finish_job()
    done = [line.split("\t")[0] for line in ledger_file(file_remote, "done.txt", tmp_path)]
    assert done == ["a", "b", "x"]
    worker.close()


def test_a_worker_that_saw_others_fetches_in_every_hold(file_remote: str, tmp_path: Path,
                                                        seam: Any) -> None:
    init_remote(file_remote, ["a", "b", "c", "d"])
    record = seam(Recorder())
    one = worker_from_url(file_remote, tmp_path / "one", "one")
    two = worker_from_url(file_remote, tmp_path / "two", "two")
    assert one.get_next_job(queue_jobs_func) == "a"
    assert two.get_next_job(queue_jobs_func) == "b"  # two's heartbeat is on the remote now
    mark = len(record.calls)
    one.finish_job()  # master moved: the lockless push is refused, then a take and a fetch
    assert "fetch" in record.since(mark, "one")
    mark = len(record.calls)
    assert one.get_next_job(queue_jobs_func) == "c"
    assert record.since(mark, "one") == ["push", "fetch", "push"]  # two still runs b
    two.finish_job()
    one.finish_job()
    done = sorted(line.split("\t")[0] for line in ledger_file(file_remote, "done.txt", tmp_path))
    assert done == ["a", "b", "c"]
    one.close()
    two.close()


def test_loose_objects_are_what_git_writes(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    clone = Clone(repo, "w1")
    tree = clone.store("tree", b"")
    assert tree == "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    env = dict(os.environ, GIT_AUTHOR_NAME="w1", GIT_AUTHOR_EMAIL="w1@distribute",
               GIT_COMMITTER_NAME="w1", GIT_COMMITTER_EMAIL="w1@distribute",
               GIT_AUTHOR_DATE="1700000000 +0000", GIT_COMMITTER_DATE="1700000000 +0000", TZ="UTC")
    parent = None
    for message in ["lock w1", "a\n\nDistribute-Event: took\n", "x\n\n", "ünïcode"]:
        parents = [parent] if parent else []
        mine = write_object(repo / ".git" / "objects", "commit", commit_content(
            tree, parents, message, ("w1", "w1@distribute"), when=1700000000))
        git = subprocess.run(["git", "commit-tree", tree, *sum((["-p", p] for p in parents), []),
                              "-m", message], cwd=repo, env=env, capture_output=True, text=True)
        assert mine == git.stdout.strip()
        parent = mine
    made = clone.commit_tree(tree, "now", [parent])  # (written directly: no date in the env)
    assert clone.commit_subject(made) == "now" and clone.parents_of(made) == [parent]
    fsck = subprocess.run(["git", "fsck", "--strict"], cwd=repo, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr


def test_the_long_lived_reader_sees_refs_move_and_survives_its_process(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    env = dict(os.environ, GIT_AUTHOR_NAME="p", GIT_AUTHOR_EMAIL="p@p", GIT_COMMITTER_NAME="p",
               GIT_COMMITTER_EMAIL="p@p")

    def commit(message: str) -> str:
        subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", message], cwd=repo,
                       env=env, check=True)
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                              text=True).stdout.strip()

    clone = Clone(repo, "w")
    assert clone.resolve("HEAD") is None  # (no commit yet)
    first = commit("one")
    assert clone.resolve("HEAD") == first
    second = commit("two")
    subprocess.run(["git", "pack-refs", "--all"], cwd=repo, check=True)
    assert clone.resolve("HEAD") == second
    assert clone.resolve("refs/heads/nothing") is None
    assert clone.object_at("HEAD", "missing.txt") is None
    reader = clone._readers[False]  # noqa: SLF001 - the process under test
    proc = reader._proc  # noqa: SLF001
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    third = commit("three")
    assert clone.resolve("HEAD") == third  # (answered by rev-parse, then a new reader)
    assert clone.resolve("HEAD~2") == first
    assert reader._proc is not None and reader._proc.pid != proc.pid  # noqa: SLF001
    clone.close_readers()
