"""The ledger: the plain-text files on ``master`` that say where every job is.

``jobs.txt`` holds queued jobs, one per line (user job functions read and rewrite it).
``running.txt``, ``done.txt`` and ``failed.txt`` hold one tab-separated record per line:
``job, worker, UTC time, attempt[, reason]``; a ``failed.txt`` record may end with a sixth
field, the last commit of the failed attempt's branch (its *kept tip*: the failure's commit on
master has it as a second parent, and the branch itself is deleted). ``attempts.txt`` remembers
``job, attempts`` for jobs that were given back to the queue after their worker went silent;
``resume.txt`` names ``job, branch[, kept tip]`` for jobs whose next attempt starts from a
checkpoint. The layout is documented in ``docs/protocol.md`` and in :mod:`distribute.protocol`;
this module only parses, checks and
rewrites those files — it never runs git.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .exceptions import InvalidJobError
from .protocol import (
    ATTEMPTS_FILE,
    DONE_FILE,
    DONE_RECENT,
    FAILED_FILE,
    LEDGER_FILES,
    PARENTS_FILE,
    QUEUE_FILE,
    RESUME_FILE,
    RUNNING_FILE,
    UPDATES_DIR,
    check_job,
    job_branch,
    job_slug,
    utc_now,
)

log = logging.getLogger(__name__)

_SHA = re.compile(r"^[0-9a-f]{40}$")

__all__ = ["Entry", "Ledger", "check_job", "job_slug", "utc_now", "read_lines", "split_lines",
           "QUEUE_FILE", "RUNNING_FILE", "DONE_FILE", "FAILED_FILE", "ATTEMPTS_FILE",
           "RESUME_FILE", "PARENTS_FILE", "LEDGER_FILES", "UPDATES_DIR"]


def _clean_field(text: str, limit: int = 500) -> str:
    return " ".join(str(text).split())[:limit]


@dataclass
class Entry:
    """One record of ``running.txt``, ``done.txt`` or ``failed.txt``. The fifth field is the
    ``reason`` in ``failed.txt`` and the worker's ``session`` in ``running.txt``; a sixth, in
    ``failed.txt``, the failed attempt's kept ``tip`` (the last commit of its branch, in
    master's history since the failure: see ``docs/protocol.md``, "Failed jobs' branches")."""

    job: str
    worker: str = ""
    at: str = ""
    attempt: int = 1
    reason: str = ""
    session: str = ""
    tip: str = ""

    def line(self) -> str:
        """The record as one tab-separated line."""
        fields = [self.job, self.worker, self.at, str(self.attempt)]
        if self.reason or self.session or self.tip:
            fields.append(_clean_field(self.reason or self.session))
        if self.tip:
            fields.append(self.tip)
        return "\t".join(fields)

    @classmethod
    def parse(cls, line: str) -> "Entry":
        """The record of one ledger line (a sixth field that is a commit: the kept tip)."""
        parts = line.split("\t")
        tip = parts.pop() if len(parts) > 5 and _SHA.match(parts[-1]) else ""
        attempt = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 1
        worker, at = (parts[1:3] + ["", ""])[:2]
        return cls(parts[0], worker, at, attempt, "\t".join(parts[4:]), tip=tip)


def read_lines(path: Path) -> list[str]:
    """Non-blank lines of a ledger file, CR and surrounding blanks removed (missing file: [])."""
    try:
        return split_lines(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return []


def split_lines(text: Optional[str]) -> list[str]:
    """Non-blank lines of ``text`` with CR and surrounding blanks removed."""
    return [line.strip() for line in (text or "").split("\n") if line.strip()]


def _read_text(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@dataclass
class Ledger:
    """The parsed ledger of one checkout of ``master``."""

    queued: list[str] = field(default_factory=list)
    running: list[Entry] = field(default_factory=list)
    done: list[Entry] = field(default_factory=list)
    failed: list[Entry] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    #: ``{job: branch}``: where the next (or running) attempt of a job resumes from.
    resume: dict[str, str] = field(default_factory=dict)
    #: ``{job: commit}``: the kept tip of that branch, when the branch was deleted (a failure).
    resume_tips: dict[str, str] = field(default_factory=dict)
    #: ``{job: [parent, ...]}`` of jobs queued after others, until they end (``parents.txt``).
    parents: dict[str, list[str]] = field(default_factory=dict)
    _done_index: tuple[int, frozenset[str]] = field(default=(-1, frozenset()), init=False,
                                                    repr=False, compare=False)
    _known: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    _failed_index: tuple[int, frozenset[str]] = field(default=(-1, frozenset()), init=False,
                                                      repr=False, compare=False)
    #: Looks a job up among the older done records (the segments under ``done/``), if known.
    done_lookup: Optional[Callable[[str], bool]] = field(default=None, repr=False, compare=False)

    @classmethod
    def read(cls, root: Path) -> "Ledger":
        """Parse the ledger files under ``root``."""
        return cls.parse(lambda name: _read_text(root / name))

    @classmethod
    def parse(cls, text_of: Callable[[str], Optional[str]]) -> "Ledger":
        """Parse a ledger given a function returning each file's text (``None`` if absent)."""
        attempts: dict[str, int] = {}
        for line in split_lines(text_of(ATTEMPTS_FILE)):
            job, _, count = line.rpartition("\t")
            if job and count.isdigit():
                attempts[job] = int(count)
        resume: dict[str, str] = {}
        tips: dict[str, str] = {}
        for line in split_lines(text_of(RESUME_FILE)):
            job, _, branch = line.partition("\t")
            branch, _, tip = branch.partition("\t")
            resume[job] = branch.strip()
            if _SHA.match(tip.strip()):
                tips[job] = tip.strip()
        entries = {name: [Entry.parse(line) for line in split_lines(text_of(name))]
                   for name in (RUNNING_FILE, DONE_FILE, FAILED_FILE)}
        for entry in entries[RUNNING_FILE]:
            entry.session, entry.reason = entry.reason, ""
        parents: dict[str, list[str]] = {}
        for line in split_lines(text_of(PARENTS_FILE)):
            job, *above = [part.strip() for part in line.split("\t")]
            parents[job] = [p for p in above if p]
        return cls(queued=split_lines(text_of(QUEUE_FILE)), running=entries[RUNNING_FILE],
                   done=entries[DONE_FILE], failed=entries[FAILED_FILE], attempts=attempts,
                   resume={job: branch for job, branch in resume.items() if job and branch},
                   resume_tips={job: tip for job, tip in tips.items() if resume.get(job)},
                   parents={job: above for job, above in parents.items() if job and above})

    def write(self, root: Path, queue: bool = False) -> None:
        """Rewrite the ledger files under ``root``; ``jobs.txt`` only when ``queue`` is true."""
        if queue:
            _write_lines(root / QUEUE_FILE, self.queued)
        _write_lines(root / RUNNING_FILE, [e.line() for e in self.running])
        _write_lines(root / DONE_FILE, [e.line() for e in self.done])
        _write_lines(root / FAILED_FILE, [e.line() for e in self.failed])
        if self.attempts:
            _write_lines(root / ATTEMPTS_FILE, [f"{j}\t{n}" for j, n in self.attempts.items()])
        else:
            (root / ATTEMPTS_FILE).unlink(missing_ok=True)
        if self.resume:
            _write_lines(root / RESUME_FILE, [
                f"{j}\t{b}" + (f"\t{self.resume_tips[j]}" if self.resume_tips.get(j) else "")
                for j, b in self.resume.items()])
        else:
            (root / RESUME_FILE).unlink(missing_ok=True)
        if self.parents:
            _write_lines(root / PARENTS_FILE, ["\t".join([j, *p]) for j, p in self.parents.items()])
        else:
            (root / PARENTS_FILE).unlink(missing_ok=True)

    # ---- lookups ------------------------------------------------------------------------------
    def running_entry(self, job: str) -> Optional[Entry]:
        """The running record of ``job``, or ``None``."""
        return next((e for e in self.running if e.job == job), None)

    def waiting(self) -> list[str]:
        """Jobs queued after others that are not claimable yet: some parent is not done."""
        if not self.parents:
            return []
        active = set(self.queued) | {e.job for e in self.running}
        return [job for job in self.parents if job not in active]

    def is_done(self, job: str) -> bool:
        """Whether ``job`` is done: in ``done.txt`` (a set lookup, rebuilt when ``done`` changed
        size), or in an older segment (through :attr:`done_lookup`)."""
        if self._done_index[0] != len(self.done):
            self._done_index = (len(self.done), frozenset(e.job for e in self.done))
        return job in self._done_index[1] or (self.done_lookup is not None
                                               and self.done_lookup(job))

    def roll(self) -> list[Entry]:
        """Take the oldest done records out once ``done.txt`` holds twice :data:`DONE_RECENT`
        (they go to a new segment); returns them, or ``[]``."""
        if len(self.done) < 2 * DONE_RECENT:
            return []
        old, self.done = self.done[:-DONE_RECENT], self.done[-DONE_RECENT:]
        return old

    # ---- transitions --------------------------------------------------------------------------
    def claim(self, job: str, worker: str, session: str = "") -> Entry:
        """Record ``job`` as running on ``worker`` (in process ``session``); a job that failed
        before may be claimed again."""
        check_job(job)
        if self.running_entry(job) or self.is_done(job):
            raise InvalidJobError(f"job {job!r} is already running or done")
        if job in self.parents and job not in self.queued and not all(
                self.is_done(p) for p in self.parents[job]):
            raise InvalidJobError(f"job {job!r} is waiting for its parents")
        self.failed = [e for e in self.failed if e.job != job]
        entry = Entry(job, worker, utc_now(), self.attempts.pop(job, 0) + 1, session=session)
        self.running.append(entry)
        return entry

    def _take_running(self, job: str) -> Entry:
        entry = self.running_entry(job)
        if entry is None:
            raise InvalidJobError(f"job {job!r} is not running")
        self.running.remove(entry)
        return entry

    def finish(self, job: str, worker: str) -> Entry:
        """Move ``job`` from running to done."""
        entry = self._take_running(job)
        self._drop_resume(job)
        done = Entry(job, worker, utc_now(), entry.attempt)
        self.done.append(done)
        self._release_children(job)
        return done

    def fail(self, job: str, worker: str, reason: str, tip: str = "") -> Entry:
        """Move ``job`` from running to failed with ``reason`` (and the kept ``tip`` of its
        branch, if the failure's commit keeps it)."""
        entry = self._take_running(job)
        self._drop_resume(job)
        failed = Entry(job, worker, utc_now(), entry.attempt, reason or "failed", tip=tip)
        self.failed.append(failed)
        self.fail_children(job, worker)
        return failed

    def requeue(self, job: str, max_attempts: int, why: str, resume: bool = True) -> bool:
        """Give a running job back: head of the queue, or failed once ``max_attempts`` are used.
        With ``resume``, its next attempt starts from the checkpoint on the branch of the attempt
        that ran (:meth:`resume_from`); without, from nothing.

        Returns ``True`` if the job was queued again, ``False`` if it went to failed.
        """
        entry = self._take_running(job)
        self._drop_resume(job)
        if entry.attempt >= max_attempts:
            self.failed.append(Entry(job, entry.worker, utc_now(), entry.attempt,
                                     f"{why}; gave up after {entry.attempt} attempts"))
            self.attempts.pop(job, None)
            self.fail_children(job, entry.worker)
            return False
        self.queued.insert(0, job)
        self.attempts[job] = entry.attempt
        if resume:
            self.resume[job] = job_branch(entry.worker, job, entry.attempt)
        return True

    def resume_from(self, job: str, entry: Entry) -> None:
        """Let the next attempt of ``job`` start from the checkpoint of the attempt recorded in
        ``entry`` (a running or failed record: its worker and attempt name the branch; a failed
        record's kept tip is where the checkpoint is when that branch is gone)."""
        self._drop_resume(job)
        self.resume[job] = job_branch(entry.worker, job, entry.attempt)
        if entry.tip:
            self.resume_tips[job] = entry.tip

    def _drop_resume(self, job: str) -> None:
        self.resume.pop(job, None)
        self.resume_tips.pop(job, None)

    def give_back(self, job: str, worker: str, branch: str = "") -> bool:
        """Put ``worker``'s running ``job`` back at the head of the queue, its attempt not
        counted, its next attempt resuming from ``branch`` (if given); ``False`` if it is not
        running on ``worker`` (nothing changed)."""
        entry = self.running_entry(job)
        if entry is None or entry.worker != worker:
            return False
        self.running.remove(entry)
        self.queued.insert(0, job)
        if entry.attempt > 1:
            self.attempts[job] = entry.attempt - 1
        if branch:
            self._drop_resume(job)
            self.resume[job] = branch
        return True

    def close(self, job: str, worker: str, reason: Optional[str], session: str = "",
              tip: str = "") -> Entry:
        """Finish (``reason`` is ``None``) or fail ``worker``'s job (``tip``: its kept tip, see
        :meth:`fail`), taking it back first if it was requeued or taken over by another worker
        while ``worker`` was silent."""
        entry = self.running_entry(job)
        if entry is None or entry.worker != worker or (session and entry.session not in ("",
                                                                                        session)):
            log.warning("%s: job %r had been given away (%s); taking it back", worker, job,
                        f"now running on {entry.worker}" if entry else "requeued")
            if entry is not None:
                self.running.remove(entry)
            if job in self.queued:
                self.queued.remove(job)
            self.attempts.pop(job, None)
            self.claim(job, worker, session)
        return self.finish(job, worker) if reason is None else self.fail(job, worker, reason, tip)

    # ---- pipelines: jobs queued after others (parents.txt) ------------------------------------
    def add_after(self, job: str, parents: list[str], by: str,
                  coming: frozenset[str] = frozenset()) -> str:
        """Queue ``job`` after ``parents``: into ``jobs.txt`` if every parent is done, else waiting
        (its parents recorded in ``parents.txt`` until it ends); straight to ``failed.txt`` (in
        ``by``'s name) when a parent has failed. A parent must be known: queued, waiting,
        running, done, failed, or in ``coming`` (jobs queued in the same edit). Returns
        ``"queued"``, ``"waiting"`` or ``"failed"``."""
        check_job(job)
        parents = list(dict.fromkeys(check_job(p) for p in parents))
        if job in parents:
            raise InvalidJobError(f"job {job!r} cannot be its own parent")
        for parent in parents:
            if self.is_done(parent) or parent in coming:
                continue
            if self._failed_index[0] != len(self.failed):
                self._failed_index = (len(self.failed), frozenset(e.job for e in self.failed))
            if parent in self._failed_index[1]:
                self.failed.append(Entry(job, by, utc_now(), 0, f"parent {parent} failed"))
                return "failed"
            if parent not in self._known:  # (built again only when a parent is new to it)
                self._known = frozenset(self.queued) | {e.job for e in self.running} | \
                    frozenset(self.parents)
            if parent not in self._known:
                raise InvalidJobError(f"parent job {parent!r} of {job!r} is not queued, "
                                      "running, done or failed: add it first")
        self.parents[job] = parents
        if all(self.is_done(p) for p in parents):
            self.queued.append(job)
            return "queued"
        return "waiting"

    def _release_children(self, job: str) -> None:
        """``job`` is done: its parents record goes, and its waiting children whose parents are
        now all done move to the end of the queue."""
        self.parents.pop(job, None)
        waiting = set(self.waiting())
        for child, parents in self.parents.items():
            if child in waiting and job in parents and all(self.is_done(p) for p in parents):
                self.queued.append(child)

    def fail_children(self, job: str, worker: str) -> list[str]:
        """``job`` failed: its waiting children (and theirs) move to failed without running,
        each with a reason naming the parent that failed; returns them."""
        self.parents.pop(job, None)
        waiting, failed, todo = set(self.waiting()), [], [job]
        while todo:
            parent = todo.pop(0)
            for child in [c for c, ps in self.parents.items() if c in waiting and parent in ps]:
                del self.parents[child]
                self.failed.append(Entry(child, worker, utc_now(), 0, f"parent {parent} failed"))
                failed.append(child)
                todo.append(child)
        return failed
