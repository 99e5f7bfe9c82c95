"""Mirror job results to the Hugging Face repository: ``updates/<slug>/`` on master -> ``<slug>/``.

**No mirror state is stored.** A done job is *mirrored* when every file of its ``updates/<slug>/``
on ``master`` is in the repository under ``<slug>/`` with the same content. Both sides already
carry content ids: git's blob id of a file is exactly the Hub's ``oid`` of a regular file, and for
files the Hub keeps in LFS/Xet it reports size and sha256. So the catch-up compares one
``git ls-tree`` with one (paginated) tree listing of the repository, without reading any file,
and uploads the difference. That makes it safe to run repeatedly and next to live workers: a job
mirrored by anyone, by any means, is seen as mirrored; a run that died midway is run again.

Live: :func:`mirror_after_finish` uploads one job in one commit right after ``finish_job()`` and
never raises; a failure leaves the job unmirrored (hence picked up by the next catch-up).

Files are read from the commit with ``git archive`` (binary-safe, the work tree is not touched)
and checked against their blob ids; symlinks and submodules are not uploaded (reported, never
silently), nor files a ``.gitattributes`` rule changes on export (reported too).
"""
from __future__ import annotations

import hashlib
import logging
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from ..exceptions import DistributeError, NotInitializedError
from ..ledger import Entry, split_lines
from ..protocol import (DONE_FILE, FINISHED, LOG_RECORD_FORMAT, ORIGIN_MASTER, UPDATES_DIR,
                        finish_subject, job_slug, parse_log_record)
from ..repo import Clone
from ..worker import Worker
from .errors import HubError, HubUnavailableError
from .files import commit_files, remote_index
from .hubsettings import HubSettings, settings

log = logging.getLogger(__name__)

__all__ = ["mirror_job", "mirror_after_finish", "catch_up", "MirrorReport", "DEFAULT_BATCH"]

DEFAULT_BATCH = 25
BATCH_BYTES = 256 * 1024 * 1024  # a catch-up commit closes early past this much content
_paused_until: dict[tuple[str, str, str], float] = {}  # (endpoint, type, repo) -> monotonic time


@dataclass(frozen=True)
class GitFile:
    """One file of ``updates/<slug>/`` in a commit, as ``git ls-tree`` describes it."""

    rel: str
    blob: str
    size: int
    kind: str  # "blob", "symlink" or "submodule"


#: A job to upload: its done entry, its slug, and ``{path in the slug: (file, Hub sha256 or None)}``.
Pending = tuple[Entry, str, dict[str, tuple[GitFile, Optional[str]]]]


@dataclass
class MirrorReport:
    """What a catch-up found and did."""

    commit: str = ""  # the master commit whose files were compared and uploaded
    done: int = 0  # done jobs considered
    up_to_date: int = 0  # ... whose files were all on the Hub already
    empty: int = 0  # ... without any file to mirror
    pending: list[str] = field(default_factory=list)  # jobs that needed an upload
    uploaded_jobs: int = 0
    uploaded_files: int = 0
    commits: list[str] = field(default_factory=list)  # Hub commit ids made
    skipped: list[str] = field(default_factory=list)  # files not uploaded, with the reason


def _clone_of(worker_or_clone: Union[Worker, Clone]) -> Clone:
    if isinstance(worker_or_clone, Worker):
        return worker_or_clone.clone
    if isinstance(worker_or_clone, Clone):
        return worker_or_clone
    raise TypeError(f"expected a Worker or a Clone, not {type(worker_or_clone).__name__}")


def _done_entries(clone: Clone, rev: str) -> list[Entry]:
    seen, out = set(), []
    for line in split_lines(clone.show(rev, DONE_FILE)):
        entry = Entry.parse(line)
        if entry.job not in seen:
            seen.add(entry.job)
            out.append(entry)
    return out


def _git_files(clone: Clone, rev: str, slugs: Optional[list[str]] = None) -> dict[str, dict[str, GitFile]]:
    """``{slug: {path in the slug: GitFile}}`` from one ``git ls-tree``."""
    paths = [f"{UPDATES_DIR}/{s}/" for s in slugs] if slugs is not None else [f"{UPDATES_DIR}/"]
    out: dict[str, dict[str, GitFile]] = {}
    for record in clone.git("ls-tree", "-r", "-l", "-z", rev, "--", *paths).split("\0"):
        meta, _, path = record.partition("\t")
        parts = path.split("/", 2)
        if len(parts) < 3 or len(meta.split()) != 4:
            continue
        mode, kind, blob, size = meta.split()
        kind = "symlink" if mode == "120000" else "submodule" if kind == "commit" else "blob"
        number = int(size) if size.isdigit() else 0
        out.setdefault(parts[1], {})[parts[2]] = GitFile(parts[2], blob, number, kind)
    return out


def _export(clone: Clone, rev: str, wanted: dict[str, dict[str, GitFile]], tmp: Path
            ) -> tuple[dict[tuple[str, str], tuple[Path, str]], list[str]]:
    """Write the wanted files of ``rev`` under ``tmp``: ``({(slug, rel): (path, sha256)}, skipped)``."""
    tar_path = tmp / "export.tar"
    clone.git("archive", "--format=tar", f"--output={tar_path}", rev, "--",
              *(f"{UPDATES_DIR}/{slug}/" for slug in wanted))
    got: dict[tuple[str, str], tuple[Path, str]] = {}
    skipped = []
    with tarfile.open(tar_path) as tar:
        for number, member in enumerate(tar):
            parts = member.name.split("/", 2)
            if not member.isfile() or len(parts) < 3:
                continue
            expected = wanted.get(parts[1], {}).get(parts[2])
            if expected is None:
                continue
            local = tmp / f"f{number}" / parts[2].rsplit("/", 1)[-1]  # keeps the name progress bars show
            local.parent.mkdir()
            blob = hashlib.sha1(b"blob %d\0" % member.size)
            sha256 = hashlib.sha256()
            with tar.extractfile(member) as src, open(local, "wb") as dst:  # type: ignore[union-attr]
                while chunk := src.read(1 << 20):
                    blob.update(chunk)
                    sha256.update(chunk)
                    dst.write(chunk)
            if blob.hexdigest() == expected.blob:
                got[(parts[1], parts[2])] = (local, sha256.hexdigest())
            else:
                skipped.append(f"{member.name} (a .gitattributes rule changes it on export)")
    tar_path.unlink()
    for slug, files in wanted.items():
        for rel in files:
            name = f"{UPDATES_DIR}/{slug}/{rel}"
            if (slug, rel) not in got and not any(s.startswith(name + " (") for s in skipped):
                skipped.append(f"{name} (left out by git archive: a .gitattributes export-ignore rule)")
    return got, skipped


def _non_blobs(slug: str, files: dict[str, GitFile]) -> list[str]:
    return [f"{UPDATES_DIR}/{slug}/{f.rel} ({f.kind}s are not uploaded)" for f in files.values()
            if f.kind != "blob"]


def _message(entries: list[Entry], rev: str) -> tuple[str, str]:
    """Commit title and description naming the job(s), the worker(s) and the git commit."""
    if len(entries) == 1:
        e = entries[0]
        job = e.job if len(e.job) <= 100 else e.job[:97] + "..."
        title = f"Mirror job {job} by {e.worker} from git {rev[:12]}"
    else:
        title = f"Mirror {len(entries)} jobs from git {rev[:12]}: " + ", ".join(e.job for e in entries)
        title = title if len(title) <= 200 else title[:197] + "..."
    lines = [f"git commit: {rev}"]
    lines += [f"job: {e.job}\tworker: {e.worker}\tfinished: {e.at}" for e in entries]
    return title, "\n".join(lines) + "\n"


def _source(clone: Clone, job: str) -> tuple[str, Entry]:
    """The commit that finished ``job`` (found from the worker's HEAD, else master) and its entry."""
    for fetched in (False, True):
        if fetched:
            clone.fetch()
        for sha in dict.fromkeys(filter(None, (clone.resolve("HEAD"), clone.resolve(ORIGIN_MASTER)))):
            entry = next((e for e in _done_entries(clone, sha) if e.job == job), None)
            if entry is not None:
                return _finish_commit(clone, sha, entry), entry
    raise DistributeError(f"job {job!r} is not done on master: only finished jobs are mirrored")


def _finish_commit(clone: Clone, sha: str, entry: Entry) -> str:
    """The commit that finished ``entry.job`` among the last ones before ``sha`` (else ``sha``).

    Right after ``finish_job`` it is HEAD, or HEAD's parent when the next job was claimed in the
    same lock hold (``finish_job(next_job_func)``). It is the commit whose trailers say
    ``finished`` and name the job; only when there is none, a commit without trailers (made by a
    version before them) whose subject is ``<worker> finished job <job>``."""
    out = clone.git("log", "--first-parent", "-n", "50", f"--format={LOG_RECORD_FORMAT}%x1f%s", sha)
    old_style = None
    for line in out.split("\n"):  # not splitlines(): it also splits at the trailer separator
        fields = line.split("\x1f", 4)  # the trailers hold no control characters; a subject may
        commit, event, _, job = parse_log_record("\x1f".join(fields[:4]))
        if event == FINISHED and job == entry.job:
            return commit
        if (not event and old_style is None and len(fields) > 4
                and fields[4] == finish_subject(entry.worker, entry.job)):
            old_style = commit
    return old_style or sha


def mirror_job(worker_or_clone: Union[Worker, Clone], job: str,
               s: Optional[HubSettings] = None) -> Optional[str]:
    """Upload the done ``job``'s ``updates/<slug>/`` to ``<slug>/`` in ONE commit; return its id.

    Files are taken from the commit that finished the job (the merge of its branch into master);
    the Hub commit's message names the job, the worker that finished it and that git commit.
    Returns ``None`` when the job has no file. Raises :class:`~distribute.hub.HubError` (or a git
    error) on failure.
    """
    s = s or settings()
    clone = _clone_of(worker_or_clone)
    rev, entry = _source(clone, job)
    slug = job_slug(job)
    files = _git_files(clone, rev, [slug]).get(slug, {})
    for note in _non_blobs(slug, files):
        log.warning("%s", s.mask(f"job {job!r}: not uploaded: {note}"))
    blobs = {rel: f for rel, f in files.items() if f.kind == "blob"}
    if not blobs:
        log.info("%s", s.mask(f"job {job!r} has no file to mirror"))
        return None
    with tempfile.TemporaryDirectory(prefix="distribute-mirror-") as tmp:
        got, skipped = _export(clone, rev, {slug: blobs}, Path(tmp))
        for note in skipped:
            log.warning("%s", s.mask(f"job {job!r}: not uploaded: {note}"))
        if not got:
            return None
        pairs = [(f"{slug}/{rel}", path) for (_, rel), (path, _) in sorted(got.items())]
        title, description = _message([entry], rev)
        oid = commit_files(pairs, title, description, s)
    log.info("%s", s.mask(f"mirrored job {job!r} ({len(pairs)} files) to {s.repo_id}: commit {oid[:12]}"))
    return oid


def mirror_after_finish(worker: Worker, job: str) -> bool:
    """Mirror ``job`` right after ``worker.finish_job()``. Never raises.

    Returns ``True`` when its files are on the Hub. On any failure (network, 401, 429, 5xx, ...)
    it logs one warning and returns ``False``: the job stays done in git and unmirrored until
    ``distribute mirror`` runs. After the Hub was unreachable, live mirroring of that repository
    pauses for ``DISTRIBUTE_HF_PAUSE_S`` seconds in this process (jobs finished meanwhile are left
    unmirrored at once instead of each waiting out the retries).
    """
    try:
        s = settings()
    except DistributeError as exc:
        log.warning("job %r is done but not mirrored: %s", job, exc)
        return False
    key = (s.endpoint or "", s.repo_type, s.repo_id)
    left = _paused_until.get(key, 0.0) - time.monotonic()
    if left > 0:
        log.warning("%s", s.mask(f"job {job!r} is done but not mirrored: Hub calls are paused for "
                                 f"{left:.0f}s more after a failure; `distribute mirror` will upload it"))
        return False
    try:
        mirror_job(worker, job, s)
        return True
    except HubUnavailableError as exc:
        _paused_until[key] = time.monotonic() + s.pause_s
        problem = str(exc)
    except DistributeError as exc:
        problem = str(exc)
    except Exception as exc:  # noqa: BLE001 - mirroring must never fail a finished job
        problem = f"{type(exc).__name__}: {exc}"
    log.warning("%s", s.mask(f"job {job!r} is done but not mirrored ({problem}); "
                             "`distribute mirror` will upload it"))
    return False


def catch_up(worker_or_clone: Union[Worker, Clone], since: Optional[str] = None,
             batch: int = DEFAULT_BATCH, dry_run: bool = False) -> MirrorReport:
    """Upload the files of every done job that are missing or differ on the Hub, ``batch`` jobs per commit.

    ``since`` (a commit of master) limits the look to jobs finished after it. ``dry_run`` only
    reports what would be uploaded (it reads the files it must compare by sha256, uploads
    nothing and creates nothing). Earlier batches stay uploaded when a later one fails (the
    error says how far it got); running it again continues.
    """
    if batch < 1:
        raise DistributeError(f"the batch size must be at least 1, not {batch}")
    s = settings()
    clone = _clone_of(worker_or_clone)
    clone.fetch()
    master = clone.resolve(ORIGIN_MASTER)
    if master is None:
        raise NotInitializedError("the remote has no master branch: nothing to mirror")
    done = _done_entries(clone, master)
    if since:
        base = clone.resolve(since)
        if base is None:
            raise DistributeError(f"--since {since}: no such commit in the remote's master")
        before = {e.job for e in _done_entries(clone, base)}
        done = [e for e in done if e.job not in before]
    report = MirrorReport(commit=master, done=len(done))
    if not done:
        return report
    tree = _git_files(clone, master)
    remote = remote_index(s, create=not dry_run)
    pending: list[Pending] = []
    for e in done:
        slug = job_slug(e.job)
        files = tree.get(slug, {})
        report.skipped += _non_blobs(slug, files)
        need: dict[str, tuple[GitFile, Optional[str]]] = {}
        for rel, f in files.items():
            r = remote.get(f"{slug}/{rel}")
            if f.kind != "blob" or (r is not None and r.sha256 is None and r.blob_id == f.blob):
                continue
            if r is not None and r.sha256 is not None and r.size != f.size:
                r = None
            need[rel] = (f, r.sha256 if r is not None else None)  # a sha256 is checked on export
        if need:
            pending.append((e, slug, need))
        elif any(f.kind == "blob" for f in files.values()):
            report.up_to_date += 1
        else:
            report.empty += 1
    report.pending = [e.job for e, _, _ in pending]
    for group in _batches(pending, batch):
        try:
            _upload(clone, master, group, s, report, dry_run)
        except HubError as exc:
            raise type(exc)(s.mask(f"{exc}; {report.uploaded_jobs} of {len(report.pending)} jobs were "
                                   "mirrored before that; run `distribute mirror` again to continue")) from exc
    return report


def _batches(pending: list[Pending], size: int) -> list[list[Pending]]:
    out: list[list[Pending]] = []
    current: list[Pending] = []
    volume = 0
    for item in pending:
        item_bytes = sum(f.size for f, _ in item[2].values())
        if current and (len(current) >= size or volume + item_bytes > BATCH_BYTES):
            out.append(current)
            current, volume = [], 0
        current.append(item)
        volume += item_bytes
    return out + ([current] if current else [])


def _upload(clone: Clone, rev: str, group: list[Pending], s: HubSettings, report: MirrorReport,
            dry_run: bool) -> None:
    """Export one batch, drop LFS files whose sha256 matches after all, commit the rest."""
    if dry_run and not any(sha256 for _, _, need in group for _, sha256 in need.values()):
        return
    with tempfile.TemporaryDirectory(prefix="distribute-mirror-") as tmp:
        wanted = {slug: {rel: f for rel, (f, _) in need.items()} for _, slug, need in group}
        got, skipped = _export(clone, rev, wanted, Path(tmp))
        report.skipped += skipped
        pairs, entries = [], []
        for entry, slug, need in group:
            mine = [(f"{slug}/{rel}", got[(slug, rel)][0]) for rel, (_, sha256) in sorted(need.items())
                    if (slug, rel) in got and got[(slug, rel)][1] != sha256]
            if mine:
                pairs += mine
                entries.append(entry)
            else:
                report.pending.remove(entry.job)
                report.up_to_date += 1
        if not pairs or dry_run:
            return
        title, description = _message(entries, rev)
        oid = commit_files(pairs, title, description, s)
    report.commits.append(oid)
    report.uploaded_jobs += len(entries)
    report.uploaded_files += len(pairs)
    log.info("%s", s.mask(f"mirrored {len(entries)} jobs ({len(pairs)} files): commit {oid[:12]}"))

