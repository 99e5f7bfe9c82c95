"""The remote's protocol, written down once: every ref name, branch name, file name, commit-message
format and marker format that workers exchange through the remote, and their parsers (the ref
names in :mod:`.refs`, re-exported here).

Nothing here runs git or does I/O. ``docs/protocol.md`` ("Remote layout and lock protocol") explains
what these names mean together; this module is what the code uses.

``master`` holds the ledger (:data:`LEDGER_FILES`) and the merged results (``updates/<slug>/``).
Coordination refs live under :data:`COORD_PREFIX`, outside any branch: the lock
(:data:`LOCK_REF`), heartbeats (``hb/<worker>``) and lock waiters (``wait/<worker>``); so the code
names them, and so a remote keeps them unless its host takes only branches and tags (then under
:data:`BRANCH_COORD_PREFIX`, as master records: :func:`parse_namespace`). Their values
are *markers*: commits with the empty tree whose message says who made them and when; a waiter's
marker may carry a :class:`Request` for the holder to serve.
Every commit the library puts on ``master`` has trailers (:func:`commit_message`) that say what
happened to which job, so that readers never parse the subject line.
"""
from __future__ import annotations

import calendar
import hashlib
import re
import socket
import time
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Optional

from ..exceptions import DistributeError, InvalidJobError, WorkerNameError
from .refs import *  # noqa: F403  (the ref names, re-exported)
from .refs import COORD_PREFIX, NAMESPACES, RESERVED_NAME


# ---- sessions ------------------------------------------------------------------------------------
def new_session() -> str:
    """A fresh session id: one per worker process, recorded with its claims and heartbeat, so
    that two processes with the same worker name are never taken for each other."""
    return uuid.uuid4().hex[:10]


# ---- files on master ----------------------------------------------------------------------------
QUEUE_FILE = "jobs.txt"
RUNNING_FILE = "running.txt"
DONE_FILE = "done.txt"
FAILED_FILE = "failed.txt"
ATTEMPTS_FILE = "attempts.txt"
#: ``job⇥branch``: the branch holding the last checkpoint of a job whose next attempt resumes.
RESUME_FILE = "resume.txt"
#: ``job⇥parent⇥parent…``: the parents of a job queued after others, from when it is queued
#: (waiting, or in ``jobs.txt`` once every parent is done) until it ends (done or failed).
PARENTS_FILE = "parents.txt"
LEDGER_FILES = (QUEUE_FILE, RUNNING_FILE, DONE_FILE, FAILED_FILE)
UPDATES_DIR = "updates"
#: Older records of ``done.txt`` live in immutable segments ``done/<6 digits>.txt``; ``done.txt``
#: keeps the most recent ones, between DONE_RECENT and twice that many.
DONE_DIR = "done"
DONE_RECENT = 1000
#: A top-level file naming the layout of results on master (absent: the first, flat layout), and
#: where the remote keeps its coordination refs (:func:`parse_namespace`).
LAYOUT_FILE = ".distribute"
#: ``updates/<slug>/`` — remotes made before results were sharded.
FLAT = 1
#: ``updates/<ab>/<cd>/<slug>/`` with ``abcd`` the first hex digits of the slug's SHA-256: the trees
#: one finish rewrites stay small (a million jobs: ~15 entries per leaf directory).
SHARDED = 2


# ---- times --------------------------------------------------------------------------------------
#: How every time the remote holds is written (ledger, markers, pages): UTC, whole seconds.
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_MINUTES: dict[str, Optional[int]] = {}  # "2024-01-02T03:04" -> its epoch (a run shares minutes)


def format_utc(epoch: Optional[float] = None) -> str:
    """``epoch`` (default: now) as ``2024-01-02T03:04:05Z`` (:data:`UTC_FORMAT`)."""
    return time.strftime(UTC_FORMAT, time.gmtime(epoch))


def parse_utc(text: str) -> Optional[int]:
    """Seconds since the epoch of a time written by :func:`format_utc`; ``None`` if malformed.

    Fast enough for a report over a million ledger entries: a run's entries share their minutes,
    which are parsed once."""
    if (len(text) != 20 or text[16] != ":" or text[19] != "Z" or not text[17:19].isdigit()
            or int(text[17:19]) > 61):  # (what strptime's %S allows)
        return None
    minute = _MINUTES.get(text[:16], -1)
    if minute == -1:
        try:
            minute = calendar.timegm(time.strptime(text[:16], UTC_FORMAT[:14]))
        except ValueError:
            minute = None
        if len(_MINUTES) > 100_000:
            _MINUTES.clear()
        _MINUTES[text[:16]] = minute
    return None if minute is None else minute + int(text[17:19])


def utc_now() -> str:
    """The current UTC time as written on the remote (ledger and markers): :func:`format_utc`."""
    return format_utc()


# ---- jobs and names -----------------------------------------------------------------------------
_SAFE_SLUG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,79}$")
_HASHED_SLUG = re.compile(r"-[0-9a-f]{10}$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def check_job(job: object) -> str:
    """Return ``job`` if it can be stored as one ledger field, else raise
    :class:`InvalidJobError`."""
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


def job_path(job: str, layout: int = SHARDED) -> str:
    """The directory of ``job``'s files on master and on its branch, relative to the root."""
    return slug_path(job_slug(job), layout)


def slug_path(slug: str, layout: int = SHARDED) -> str:
    """The directory of the job whose slug is ``slug`` (see :func:`job_path`)."""
    if layout == FLAT:
        return f"{UPDATES_DIR}/{slug}"
    digest = hashlib.sha256(slug.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{UPDATES_DIR}/{digest[:2]}/{digest[2:4]}/{slug}"


#: Done segments up to this number lie in ``done/`` itself (where every remote made before the
#: bound kept them all); later ones in ``done/<seq // 1000>/`` (three digits or more), so that no
#: directory holds more than about 1 000 entries however many jobs are done.
SEGMENTS_FLAT = 999


def segment_path(seq: int) -> str:
    """The path of done segment number ``seq`` (1, 2, ...): ``done/000001.txt`` …
    ``done/000999.txt``, then ``done/001/001000.txt``, ``done/001/001001.txt`` …"""
    if seq <= SEGMENTS_FLAT:
        return f"{DONE_DIR}/{seq:06d}.txt"
    return f"{DONE_DIR}/{seq // 1000:03d}/{seq:06d}.txt"


def layout_text(layout: int, namespace: str = COORD_PREFIX) -> str:
    """The content of :data:`LAYOUT_FILE` for ``layout``, on a remote keeping its coordination
    refs under ``namespace`` (a line ``refs <namespace>`` when not the default)."""
    return f"layout {layout}\n" + (f"refs {namespace}\n" if namespace != COORD_PREFIX else "")


def parse_namespace(text: Optional[str]) -> str:
    """Where the remote whose :data:`LAYOUT_FILE` says ``text`` keeps its coordination refs (no
    ``refs`` line, or no file: :data:`COORD_PREFIX`); :class:`DistributeError` for one this
    version does not know (a newer one chose it)."""
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "refs":
            if value.strip() not in NAMESPACES:
                raise DistributeError(
                    f"the remote keeps its coordination refs under {value.strip()[:80]!r} "
                    f"({LAYOUT_FILE} on master), which this version of distribute does not know: "
                    "upgrade distribute")
            return value.strip()
    return COORD_PREFIX


def parse_layout(text: Optional[str]) -> int:
    """The layout named by :data:`LAYOUT_FILE`'s text (``None``: the file is absent → flat)."""
    if text is None:
        return FLAT
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "layout" and value.strip().isdigit():
            return int(value)
    return FLAT


def job_branch(worker: str, job: str, attempt: int) -> str:
    """The branch (without ``refs/heads/``) a worker commits a job's progress on."""
    return f"{worker}/{job_slug(job)}" + (f"@{attempt}" if attempt > 1 else "")


def check_worker_name(name: str) -> str:
    """Return ``name`` if it is usable as a path component and a ref component, else raise."""
    if (not isinstance(name, str) or not _NAME.match(name) or ".." in name
            or name.endswith((".", ".lock")) or name in ("master", "HEAD")
            or name.lower() == RESERVED_NAME):
        raise WorkerNameError(
            f"worker name {name!r} is not allowed: use 1-64 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'")
    return name


def short_host() -> str:
    """This machine's short host name, usable in a worker name."""
    host = socket.gethostname().split(".")[0]
    return re.sub(r"[^A-Za-z0-9_.-]", "-", host).strip("-.")[:40] or "host"


def default_worker_name() -> str:
    """The host name plus a short random suffix."""
    return f"{short_host()}-{uuid.uuid4().hex[:6]}"


# ---- markers (values of the coordination refs) ---------------------------------------------------
def marker_message(kind: str, worker: str) -> str:
    """The message of a fresh marker: ``<kind> <worker> <UTC time> <random>``; ``kind`` is
    ``lock``, ``heartbeat`` or ``wait``. The random part makes every marker a new commit."""
    return f"{kind} {worker} {utc_now()} {uuid.uuid4().hex[:12]}"


def marker_holder(message: str) -> str:
    """The worker named in a marker's message (``?`` if it has none)."""
    parts = message.split()
    return parts[1] if len(parts) > 1 else "?"


# ---- requests (what a lock waiter asks the holder to do for it) --------------------------------
#: Trailer keys of a waiter's request: its id, its process, the next-job function to claim with
#: (its import path), and the job to close — its branch, the branch's tip and the tip on the
#: remote (empty: never pushed), and a failure's reason (absent: finish).
REQUEST_TRAILER = "Distribute-Request"
SESSION_TRAILER = "Distribute-Session"
NEXT_JOB_TRAILER = "Distribute-Next-Job"
CLOSE_TRAILER = "Distribute-Close"
BRANCH_TRAILER = "Distribute-Branch"
TIP_TRAILER = "Distribute-Tip"
PUSHED_TRAILER = "Distribute-Pushed"
REASON_TRAILER = "Distribute-Reason"
#: One more job a batch request closes (finished): ``job⇥branch⇥tip⇥pushed``, one trailer each.
ALSO_CLOSE_TRAILER = "Distribute-Also-Close"
#: How many jobs a batch request asks to claim (absent: one).
CLAIMS_TRAILER = "Distribute-Claims"


@dataclass(frozen=True)
class Close:
    """One job a request closes: its branch, the branch's ``tip`` (the commit to merge) and the
    value the branch has on the remote (``pushed``; empty when never pushed); ``reason`` fails
    it instead."""

    job: str
    branch: str
    tip: str = ""
    pushed: str = ""
    reason: Optional[str] = None

    def trailer(self) -> str:
        """The value of its :data:`ALSO_CLOSE_TRAILER` (finishes only)."""
        return "\t".join((self.job, self.branch, self.tip, self.pushed or "-"))

    @classmethod
    def parse(cls, value: str) -> Optional["Close"]:
        """The close an :data:`ALSO_CLOSE_TRAILER` value names (``None``: malformed)."""
        parts = value.split("\t")
        if len(parts) != 4 or not all(parts):
            return None
        return cls(parts[0], parts[1], parts[2], "" if parts[3] == "-" else parts[3])


@dataclass(frozen=True)
class Request:
    """What a worker waiting for the lock asks whoever holds it to do in its name: close its
    running job (``close``: finish, or fail with ``reason``) and/or claim its next job with the
    next-job function ``next_job`` (``module:qualname``). The value of its wait ref is a marker
    with these trailers, whose parent is the job branch's ``tip`` (so the holder's fetch of the
    wait refs brings the branch's commits)."""

    worker: str
    session: str
    next_job: Optional[str] = None
    close: Optional[str] = None
    branch: str = ""
    tip: str = ""
    pushed: str = ""
    reason: Optional[str] = None
    #: Unique per request: whoever serves it records it on master with each part it did
    #: (:data:`ANSWER_TRAILER`), and the waiter decides only from that record.
    id: str = ""
    #: A batch: more jobs to finish (closed before ``close``), and how many jobs to claim.
    also: tuple[Close, ...] = ()
    claims: int = 1

    def closes(self) -> list[Close]:
        """Every job the request closes, in the order its worker would close them."""
        main = [Close(self.close, self.branch, self.tip, self.pushed, self.reason)] \
            if self.close is not None else []
        return [*self.also, *main]

    def message(self) -> str:
        """The marker message carrying this request."""
        fields = [(REQUEST_TRAILER, self.id or None), (SESSION_TRAILER, self.session),
                  (NEXT_JOB_TRAILER, self.next_job),
                  (CLOSE_TRAILER, self.close), (BRANCH_TRAILER, self.branch or None),
                  (TIP_TRAILER, self.tip or None), (PUSHED_TRAILER, self.pushed or None),
                  (REASON_TRAILER, self.reason),
                  (CLAIMS_TRAILER, str(self.claims) if self.claims != 1 else None),
                  *((ALSO_CLOSE_TRAILER, close.trailer()) for close in self.also)]
        return marker_message("wait", self.worker) + "\n\n" + "".join(
            f"{key}: {value}\n" for key, value in fields if value is not None)

    @classmethod
    def parse(cls, message: str) -> Optional["Request"]:
        """The request a wait marker's ``message`` carries (``None``: a plain waiter)."""
        head, _, body = message.partition("\n\n")
        fields: dict[str, str] = {}
        also: list[Optional[Close]] = []
        for line in body.splitlines():
            key, sep, value = line.partition(": ")
            if sep and key == ALSO_CLOSE_TRAILER:
                also.append(Close.parse(value))
            elif sep:
                fields[key] = value
        if SESSION_TRAILER not in fields or head.split()[:1] != ["wait"] or None in also:
            return None
        claims = fields.get(CLAIMS_TRAILER, "1")
        return cls(marker_holder(head), fields[SESSION_TRAILER], fields.get(NEXT_JOB_TRAILER),
                   fields.get(CLOSE_TRAILER), fields.get(BRANCH_TRAILER, ""),
                   fields.get(TIP_TRAILER, ""), fields.get(PUSHED_TRAILER, ""),
                   fields.get(REASON_TRAILER), fields.get(REQUEST_TRAILER, ""),
                   tuple(c for c in also if c is not None),
                   max(1, min(int(claims), 64)) if claims.isdigit() else 1)


def new_request_id() -> str:
    """A fresh request id (random: unique across workers, processes and retries)."""
    return uuid.uuid4().hex[:16]


# ---- commits on master --------------------------------------------------------------------------
#: Trailer keys of the library's commits on master.
EVENT_TRAILER = "Distribute-Event"
JOB_TRAILER = "Distribute-Job"
WORKER_TRAILER = "Distribute-Worker"
#: Events: what a commit did (the value of its ``Distribute-Event`` trailer).
TOOK, FINISHED, FAILED, GAVE_BACK, REQUEUED, GAVE_UP, REJECTED = (
    "took", "finished", "failed", "gave-back", "requeued", "gave-up", "rejected")
QUEUE, ADDED, INIT, MERGE = "queue", "added", "init", "merge"


def commit_message(worker: str, event: str, subject: str, job: Optional[str] = None,
                   answers: Optional[str] = None) -> str:
    """A commit message for master: ``subject`` (what ``git log`` shows), then trailers naming the
    event, the worker and the job (job strings are single-line by :func:`check_job`), and for a
    commit made to serve a waiter, the request it answers (``answers``: ``<id> <part>``)."""
    trailers = [f"{EVENT_TRAILER}: {event}", f"{WORKER_TRAILER}: {worker}"]
    if job is not None:
        trailers.append(f"{JOB_TRAILER}: {job}")
    if answers is not None:
        trailers.append(f"{ANSWER_TRAILER}: {answers}")
    return f"{subject}\n\n" + "\n".join(trailers) + "\n"


#: The trailer of a commit made for a waiter: ``<request id> close`` or ``<request id> claim``
#: (and ``<request id> none`` on its last close when its next-job function found no job).
ANSWER_TRAILER = "Distribute-Answer"


def with_answer(message: str, answer: str) -> str:
    """``message`` (one of :func:`commit_message`'s) with one more answer trailer."""
    return message.rstrip("\n") + f"\n{ANSWER_TRAILER}: {answer}\n"
#: ``git log --format`` of :func:`parse_answers`: the answer and job trailers of each commit.
ANSWER_LOG_FORMAT = ("%(trailers:key=Distribute-Answer,valueonly,separator=%x1e)%x1f"
                     "%(trailers:key=Distribute-Job,valueonly,separator=%x1e)%x1d")


def parse_answers(log: str, request_id: str) -> dict[str, list[str]]:
    """``{part: [job, …]}`` of the commits in ``log`` (printed with :data:`ANSWER_LOG_FORMAT`)
    that answer the request ``request_id``, oldest first: ``close`` and ``claim`` with the jobs
    closed and claimed, ``none`` when the holder's next-job function (the waiter's) found no job
    for it after its closes."""
    found: dict[str, list[str]] = {}
    for record in reversed(log.split("\x1d")):  # (git log lists the newest first)
        answers, _, job = record.strip().partition("\x1f")
        for answer in answers.split("\x1e"):
            rid, _, part = answer.strip().partition(" ")
            if rid and rid == request_id and part in ("close", "claim", "none"):
                found.setdefault(part, []).append(job.strip() if part != "none" else "")
    return found


#: ``git log --format`` of :func:`parse_log_record`: sha, then event, worker and job trailers.
LOG_RECORD_FORMAT = ("%H%x1f%(trailers:key=Distribute-Event,valueonly,separator=%x1e)%x1f"
                     "%(trailers:key=Distribute-Worker,valueonly,separator=%x1e)%x1f"
                     "%(trailers:key=Distribute-Job,valueonly,separator=%x1e)")


def parse_log_record(line: str) -> tuple[str, str, str, str]:
    """``(sha, event, worker, job)`` of one line printed with :data:`LOG_RECORD_FORMAT` (empty
    strings where a commit has no such trailer, e.g. a person's commit)."""
    sha, event, worker, job = (line.split("\x1f") + ["", "", ""])[:4]
    return sha, event.strip(), worker.strip(), job.strip()


def finish_subject(worker: str, job: str, queued: int = 0) -> str:
    """The subject of the commit that moves ``job`` to done (and queues ``queued`` follow-ups)."""
    more = f" and queued {queued} job{'' if queued == 1 else 's'}" if queued else ""
    return f"{worker} finished job {job}{more}"


def job_stage(job: str) -> str:
    """A job's stage: the text before its first ``:`` (``proc:v1-0`` → ``proc``; no ``:`` → the
    empty stage)."""
    return job.partition(":")[0] if ":" in job else ""


def served_note(holder: str) -> str:
    """What the subject of a commit made for a waiter ends with: who made it."""
    return f" (served by {holder})"
