"""A local copy of the remote (:class:`Clone`): creating it, and the local plumbing above it.

Every git command of the package goes through a :class:`Clone` (or its bases in this package):
its named operations on the remote (:mod:`.transport`), on the copy's objects (:mod:`.reading`)
and on its refs, index and work tree (:mod:`.plumbing`).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Optional, Sequence, Union

from ..exceptions import HostUnsupportedError, NotARemoteError, NotInitializedError, RemoteError
from ..protocol import COORD_PREFIX, ORIGIN_MASTER, marker_message
from ..redact import redact
from .plumbing import Plumbing
from .process import GitProcess
from .transport import RefUpdate, Transport

log = logging.getLogger(__name__)

_INCLUDED_FILE = "distribute-included-paths"
#: How a server refuses a partial clone's filter it does not allow (e.g. trees below depth 0).
_FILTER_REFUSED = re.compile(r"filter allows max depth|filter '[^']*' not supported|"
                             r"filter .* not (allowed|supported)", re.IGNORECASE)


def _validate_url(url: str) -> str:
    if not url or url.startswith("-") or any(c in url for c in "\n\r\0"):
        raise NotARemoteError(f"not a usable git remote URL: {redact(url)!r}")
    return url


def is_local_path(url: str) -> bool:
    """Whether git would read ``url`` as a path on this machine (git's own rule): no ``scheme://``,
    and no colon before the first slash (``host:path`` and ``user@host:path`` are ssh)."""
    if "://" in url:
        return False
    colon, slash = url.find(":"), url.find("/")
    return colon < 0 or 0 <= slash < colon


def normalize_url(url: str) -> str:
    """The remote ``url`` as every part of the package should see it.

    A relative path on this machine (``jobs.git``, ``./jobs.git``, ``../x``) or one under ``~``
    becomes the absolute path it names now, so that it means the same repository from any
    directory (the clones of workers and commands run elsewhere). Absolute paths, ``file://``,
    ``ssh://``, ``https://``… URLs and ssh's ``user@host:path`` are returned as they are. A URL
    that starts with ``-`` or holds a control character is refused (:class:`NotARemoteError`).
    """
    _validate_url(url)
    if not is_local_path(url):
        return url
    expanded = os.path.expanduser(url)
    return expanded if os.path.isabs(expanded) else os.path.abspath(expanded)


class Clone(Plumbing, Transport):
    """A local copy of the remote, always with the remote called ``origin``."""

    def __init__(self, path: os.PathLike[str] | str, name: str = "distribute",
                 retries: Optional[int] = None, backoff_s: float = 0.25,
                 backoff_max_s: float = 20.0) -> None:
        super().__init__(path, name, retries, backoff_s, backoff_max_s)
        self._empty_tree: Optional[str] = None

    # ---- creation -----------------------------------------------------------------------------
    @classmethod
    def clone(cls, url: str, path: os.PathLike[str] | str, *, slim: bool = False,
              **kwargs: object) -> "Clone":
        """Clone ``url`` into ``path`` (which must not exist) and return the :class:`Clone`.

        ``slim`` makes the copy a worker needs and no more: ``master``'s last commit only (shallow),
        no file contents but those checked out (partial clone), and a sparse checkout of the
        top-level files (the ledger). Later fetches bring the new commits with their files up to
        1 MB; anything else is fetched from the remote when git needs it.
        """
        url = normalize_url(url)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not slim:
            probe = cls(target.parent, **kwargs)  # type: ignore[arg-type]
            probe._network(["clone", "--quiet", "--no-checkout", "--origin", "origin", "--", url,
                            str(target)], what="clone")
            full = cls(target, **kwargs)  # type: ignore[arg-type]
            full.drop_cloned_copies()
            return full
        clone = cls._slim(url, target, partial=True, **kwargs)
        if clone is None:  # the server cannot send single files later: take them all now
            shutil.rmtree(target)
            clone = cls._slim(url, target, partial=False, **kwargs)
        assert clone is not None
        return clone

    @staticmethod
    def init_bare(path: os.PathLike[str] | str) -> None:
        """Create an empty bare repository at ``path`` whose ``HEAD`` is ``master`` (a new
        remote on this machine)."""
        target = Path(path)
        runner = GitProcess(target.parent, name="distribute-init")
        runner.git("init", "--quiet", "--bare", str(target))
        runner.git("--git-dir", str(target), "symbolic-ref", "HEAD", "refs/heads/master")

    @classmethod
    def _slim(cls, url: str, target: Path, partial: bool, **kwargs: object) -> Optional["Clone"]:
        """A shallow sparse copy, partial if ``partial``; ``None`` if the server turned out unable
        to send missing files on demand (it speaks only protocol v0 and does not allow it)."""
        cls(target.parent, **kwargs).git("init", "--quiet", "--", str(target))  # type: ignore[arg-type]
        clone = cls(target, **kwargs)  # type: ignore[arg-type]
        clone.git("remote", "add", "origin", "--", url)
        if clone.run("sparse-checkout", "set", "--cone", "--sparse-index")[0] != 0:
            clone.git("sparse-checkout", "set", "--cone")  # (a git without sparse indexes)
        settings = [("advice.updateSparsePath", "false"), ("fetch.showForcedUpdates", "false"),
                    # a running job's files lie outside the cone: git must not expand the
                    # sparse index to every path of the repository because they exist
                    ("sparse.expectFilesOutsideOfPatterns", "true")]
        if partial:
            settings += [("remote.origin.promisor", "true"),
                         # the commit, its top-level files and two levels of directories:
                         # not the trees of every job's results (fetched when needed)
                         ("remote.origin.partialclonefilter", "tree:3")]
        for key, value in settings:
            clone.git("config", key, value)
        clone = cls(target, **kwargs)  # type: ignore[arg-type]  # (sees the URL: git:// tuning)
        try:
            clone.fetch(depth=1)
        except NotInitializedError:
            return clone  # a new remote: the worker says so; later fetches are whole and small
        except RemoteError as exc:
            if not partial or not _FILTER_REFUSED.search(str(exc)):
                raise
            # a host may allow fewer filters (trees to depth 0 only): every tree, no file
            log.info("%s refuses the tree:3 filter (%s); cloning with blob:none", redact(url),
                     redact(str(exc))[-200:])
            clone.git("config", "remote.origin.partialclonefilter", "blob:none")
            try:
                clone.fetch(depth=1)
            except NotInitializedError:
                return clone
        if partial:
            status, _, err = clone.run("checkout", "--quiet", "--detach", ORIGIN_MASTER)
            if (status != 0 and "promisor remote" in err) or not clone._serves_on_demand():
                log.info("%s cannot send files on demand; cloning without a filter", redact(url))
                return None
            # later fetches bring the blobs of new commits (ledgers, results) in the same round
            # trip, instead of one request per checkout
            clone.git("config", "remote.origin.partialclonefilter", "blob:limit=1m")
        return clone

    def _serves_on_demand(self) -> bool:
        """Fetch one object the partial copy lacks (the first one on the way down ``updates/``),
        as git will when it needs it: ``False`` if the server refuses (protocol v0 only)."""
        rev = ORIGIN_MASTER
        for depth in range(5):
            listing = self.run("ls-tree", rev)[1].splitlines() if rev != ORIGIN_MASTER else \
                [line for line in self.run("ls-tree", rev)[1].splitlines()
                 if line.endswith("\tupdates")]
            if not listing:
                return True  # nothing is missing: later fetches bring whole commits
            meta = listing[0].partition("\t")[0].split()
            if len(meta) < 3:
                return True
            if self.run("cat-file", "-e", meta[2])[0] != 0:
                return False  # it was missing and could not be fetched
            # (three levels down from the root: the first level the tree:3 filter left out,
            # so this object was just fetched: one request proves the server sends them)
            if meta[1] != "tree" or depth == 2:
                return True
            rev = meta[2]
        return True

    # ---- local helpers ------------------------------------------------------------------------
    def show(self, rev: str, path: str) -> Optional[str]:
        """The text of ``path`` at ``rev``, or ``None`` if absent."""
        status, out, _ = self._run(["cat-file", "-p", f"{rev}:{path}"])
        return out if status == 0 else None

    def make_marker(self, message: str, parent: Union[str, Sequence[str], None] = None) -> str:
        """Create a commit with an empty tree (used as lock and heartbeat values); parentless
        unless ``parent`` is given: a commit (or several) whose history the marker should carry
        along."""
        if self._empty_tree is None:
            self._empty_tree = self.store("tree", b"") or \
                self.git("hash-object", "-t", "tree", "-w", os.devnull)
        parents = [parent] if isinstance(parent, str) else list(parent or ())
        return self.commit_tree(self._empty_tree, message,
                                list(dict.fromkeys(p for p in parents if p)))

    def messages(self, commits: list[str]) -> dict[str, str]:
        """``{sha: full message}`` of ``commits`` (one git process; missing ones are left out)."""
        if not commits:
            return {}
        status, out, _ = self._run(["log", "--no-walk=unsorted", "--format=%H%x00%B%x1e",
                                    "--end-of-options", *commits])
        found: dict[str, str] = {}
        for record in out.split("\x1e"):
            sha, sep, message = record.strip("\n").partition("\0")
            if sep:
                found[sha] = message
        return found if status == 0 else {}

    def exclude(self, pattern: str) -> None:
        """Make git ignore ``pattern`` in this copy (``.git/info/exclude``), once."""
        path = self.path / ".git" / "info" / "exclude"
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        if pattern not in text.splitlines():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + ("" if not text or text.endswith("\n") else "\n")
                            + pattern + "\n", encoding="utf-8")

    def stage_all(self) -> None:
        """``git add --all``, including paths outside a sparse checkout (a job's new files)."""
        self.git("add", "--sparse", "--all")

    def sparse_paths(self) -> Optional[list[str]]:
        """The directories the user asked to check out in a sparse copy; ``None`` if not sparse."""
        if not (self.path / ".git" / "info" / "sparse-checkout").exists():
            return None
        chosen = self.path / ".git" / _INCLUDED_FILE
        return chosen.read_text(encoding="utf-8").splitlines() if chosen.exists() else []

    def set_sparse_paths(self, paths: Sequence[str], *extra: str) -> None:
        """Check out the top-level files, ``paths`` (remembered) and ``extra`` (not remembered)."""
        unique = list(dict.fromkeys(paths))
        (self.path / ".git" / _INCLUDED_FILE).write_text(
            "".join(p + "\n" for p in unique), encoding="utf-8")
        self.git("sparse-checkout", "set", "--cone", "--", *unique, *extra)

    def abort_interrupted(self) -> None:
        """Abort a merge or rebase left behind by a killed process (cheap when there is none)."""
        git_dir = self.path / ".git"
        if (git_dir / "MERGE_HEAD").exists():
            log.warning("aborting a merge left unfinished in %s", self.path)
            self.abort_merge()
        if (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists():
            log.warning("aborting a rebase left unfinished in %s", self.path)
            self.git("rebase", "--abort", check=False)

    def local_refs(self, prefix: str) -> dict[str, str]:
        """``{ref: sha}`` for local refs under ``prefix``."""
        out = self.git("for-each-ref", "--format=%(objectname) %(refname)", prefix)
        return {ref: sha for sha, _, ref in (line.partition(" ") for line in out.splitlines())
                if ref}

    def resolve(self, rev: str) -> Optional[str]:
        """The sha of ``rev`` in the copy, or ``None`` if it does not exist."""
        return self._sha_of(rev)

    def object_at(self, commit: str, path: str) -> Optional[str]:
        """The sha of the file or directory ``path`` in ``commit``, or ``None`` if absent."""
        answer = self.cat(f"{commit}:{path}")
        if answer is not None:
            return answer[0][0] if answer[0] else None
        status, out, _ = self._run(["rev-parse", "--verify", "--quiet", "--end-of-options",
                                    f"{commit}:{path}"])
        return out.strip() if status == 0 and out.strip() else None


def takes_custom_refs(clone: Clone) -> bool:
    """Whether the host takes a ref under ``refs/distribute/``: push a marker to a new one and
    delete it again (``distribute init``'s choice of namespace). ``False`` when the push is
    refused (a host's rule allowing only branches and tags)."""
    ref = f"{COORD_PREFIX}init-{uuid.uuid4().hex[:10]}"
    marker = clone.make_marker(marker_message("init", "distribute-init"))
    clone.namespace = COORD_PREFIX  # (this very name, wherever master may say they live)
    try:
        applied = clone.push_result([RefUpdate(ref, marker, expect="")]).applied
    except HostUnsupportedError:
        applied = False
    if applied:
        clone.push_result([RefUpdate(ref, None, expect=marker)])
    log.info("%s takes refs under %s: %s", redact(clone.remote_url() or ""), COORD_PREFIX,
             "yes" if applied else "no (its coordination refs go to a branch namespace)")
    return applied
