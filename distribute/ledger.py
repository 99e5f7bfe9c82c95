"""The ledger: the plain-text files on ``master`` that say where every job is.

``jobs.txt`` holds queued jobs, one per line (user job functions read and rewrite it).
``running.txt``, ``done.txt`` and ``failed.txt`` hold one tab-separated record per line:
``job, worker, UTC time, attempt[, reason]``. ``attempts.txt`` remembers ``job, attempts`` for jobs
that were given back to the queue after their worker went silent. The layout is documented in the
README; this module only parses, checks and rewrites those files — it never runs git.
"""
from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from .exceptions import InvalidJobError

log = logging.getLogger(__name__)

QUEUE_FILE = "jobs.txt"
RUNNING_FILE = "running.txt"
DONE_FILE = "done.txt"
FAILED_FILE = "failed.txt"
ATTEMPTS_FILE = "attempts.txt"
LEDGER_FILES = (QUEUE_FILE, RUNNING_FILE, DONE_FILE, FAILED_FILE)
UPDATES_DIR = "updates"

_SAFE_SLUG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,79}$")
_HASHED_SLUG = re.compile(r"-[0-9a-f]{10}$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def utc_now() -> str:
    """The current UTC time as an ISO-8601 string with second precision."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_job(job: object) -> str:
    """Return ``job`` if it can be stored as one ledger field, else raise :class:`InvalidJobError`."""
    if not isinstance(job, str):
        raise InvalidJobError(f"a job must be a string, not {type(job).__name__}")
    if job == "" or job != job.strip():
        raise InvalidJobError(f"job {job!r} is empty or has leading/trailing whitespace")
    bad = sorted({c for c in job if unicodedata.category(c) in ("Cc", "Zl", "Zp")})
    if bad:
        raise InvalidJobError(f"job {job[:80]!r} contains control characters {bad!r}")
    try:
        job.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidJobError(f"job {job[:80]!r} is not valid UTF-8 text") from exc
    return job


def job_slug(job: str) -> str:
    """A name for ``job`` that is a valid ref component and a safe directory name.

    Distinct jobs get distinct slugs: a job that is already a short safe name is its own slug; any
    other job becomes a readable prefix plus ``-`` and 10 hex digits of its SHA-256.
    """
    if (_SAFE_SLUG.match(job) and ".." not in job and not job.endswith((".", ".lock"))
            and not _HASHED_SLUG.search(job)):
        return job
    prefix = _UNSAFE_CHARS.sub("-", job).strip("-.")[:40].strip("-.")
    prefix = prefix.replace("..", ".") or "job"
    digest = hashlib.sha256(job.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{prefix}-{digest}"


def _clean_field(text: str, limit: int = 500) -> str:
    return " ".join(str(text).split())[:limit]


@dataclass
class Entry:
    """One record of ``running.txt``, ``done.txt`` or ``failed.txt``."""

    job: str
    worker: str = ""
    at: str = ""
    attempt: int = 1
    reason: str = ""

    def line(self) -> str:
        fields = [self.job, self.worker, self.at, str(self.attempt)]
        if self.reason:
            fields.append(_clean_field(self.reason))
        return "\t".join(fields)

    @classmethod
    def parse(cls, line: str) -> "Entry":
        parts = line.split("\t")
        attempt = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 1
        return cls(parts[0], *(parts[1:3] + [""] * (2 - len(parts[1:3]))), attempt,
                   "\t".join(parts[4:]))


def read_lines(path: Path) -> list[str]:
    """Non-blank lines of a ledger file with CR and surrounding blanks removed (missing file: [])."""
    try:
        return split_lines(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return []


def split_lines(text: Optional[str]) -> list[str]:
    """Non-blank lines of ``text`` with CR and surrounding blanks removed."""
    return [l.strip() for l in (text or "").split("\n") if l.strip()]


def _read_text(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(l + "\n" for l in lines), encoding="utf-8")


@dataclass
class Ledger:
    """The parsed ledger of one checkout of ``master``."""

    queued: list[str] = field(default_factory=list)
    running: list[Entry] = field(default_factory=list)
    done: list[Entry] = field(default_factory=list)
    failed: list[Entry] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)

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
        entries = {name: [Entry.parse(l) for l in split_lines(text_of(name))]
                   for name in (RUNNING_FILE, DONE_FILE, FAILED_FILE)}
        return cls(queued=split_lines(text_of(QUEUE_FILE)), running=entries[RUNNING_FILE],
                   done=entries[DONE_FILE], failed=entries[FAILED_FILE], attempts=attempts)

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

    # ---- lookups ------------------------------------------------------------------------------
    def running_entry(self, job: str) -> Optional[Entry]:
        return next((e for e in self.running if e.job == job), None)

    def is_done(self, job: str) -> bool:
        return any(e.job == job for e in self.done)

    # ---- transitions --------------------------------------------------------------------------
    def claim(self, job: str, worker: str) -> Entry:
        """Record ``job`` as running on ``worker``; a job that failed before may be claimed again."""
        check_job(job)
        if self.running_entry(job) or self.is_done(job):
            raise InvalidJobError(f"job {job!r} is already running or done")
        self.failed = [e for e in self.failed if e.job != job]
        entry = Entry(job, worker, utc_now(), self.attempts.pop(job, 0) + 1)
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
        done = Entry(job, worker, utc_now(), entry.attempt)
        self.done.append(done)
        return done

    def fail(self, job: str, worker: str, reason: str) -> Entry:
        """Move ``job`` from running to failed with ``reason``."""
        entry = self._take_running(job)
        failed = Entry(job, worker, utc_now(), entry.attempt, reason or "failed")
        self.failed.append(failed)
        return failed

    def requeue(self, job: str, max_attempts: int, why: str) -> bool:
        """Give a running job back: head of the queue, or failed once ``max_attempts`` are used.

        Returns ``True`` if the job was queued again, ``False`` if it went to failed.
        """
        entry = self._take_running(job)
        if entry.attempt >= max_attempts:
            self.failed.append(Entry(job, entry.worker, utc_now(), entry.attempt,
                                     f"{why}; gave up after {entry.attempt} attempts"))
            self.attempts.pop(job, None)
            return False
        self.queued.insert(0, job)
        self.attempts[job] = entry.attempt
        return True

    def close(self, job: str, worker: str, reason: Optional[str]) -> Entry:
        """Finish (``reason`` is ``None``) or fail ``worker``'s job, taking it back first if it was
        requeued or taken over by another worker while ``worker`` was silent."""
        entry = self.running_entry(job)
        if entry is None or entry.worker != worker:
            log.warning("%s: job %r had been given away (%s); taking it back", worker, job,
                        f"now running on {entry.worker}" if entry else "requeued")
            if entry is not None:
                self.running.remove(entry)
            if job in self.queued:
                self.queued.remove(job)
            self.attempts.pop(job, None)
            self.claim(job, worker)
        return self.finish(job, worker) if reason is None else self.fail(job, worker, reason)
