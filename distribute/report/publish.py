"""Publishing the report page: ``index.html`` as the one commit of a branch that is not ``master``,
so that a forge's static pages can serve it.

The commit is made with plumbing (the copy's checkout is not touched) and has no parent: each
publication replaces the last one, so the branch does not grow. The push is a compare-and-swap on
the value just read, and a branch that holds anything but a page written here is left alone.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile

from ..exceptions import DistributeError, RemoteError
from ..protocol import RESERVED_NAME, utc_now
from ..repo import Clone, RefUpdate

log = logging.getLogger(__name__)

DEFAULT_BRANCH = "report"
PAGE_FILE = "index.html"
COMMIT_PREFIX = "distribute report of master"
_BRANCH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,99}$")


def is_page_branch(name: str) -> bool:
    """Whether ``name`` can be the page's branch: a plain branch name that is not ``master``."""
    return not (not _BRANCH.match(name) or ".." in name or "//" in name or "/." in name
                or "@{" in name or name.endswith(("/", ".", ".lock"))
                or name in ("master", "HEAD")
                or name.split("/")[0] == RESERVED_NAME)  # (where coordination refs may live)


def publish_page(clone: Clone, branch: str, page: str, source: str, tries: int = 3) -> str:
    """Commit ``page`` as ``index.html`` to ``refs/heads/<branch>`` on the remote; return the sha.

    ``source`` is the commit of ``master`` the page shows (named in the commit message). The push
    is a compare-and-swap, tried ``tries`` times while the branch moves; a branch whose head is
    not a page commit of this function is never overwritten (:class:`DistributeError`).
    """
    if not is_page_branch(branch):
        raise DistributeError(f"the report page goes to a branch other than master, "
                              f"not {branch!r}")
    ref = "refs/heads/" + branch
    blob = _write_object(clone, "blob", page.encode("utf-8"))
    tree = _write_object(clone, "tree", f"100644 {PAGE_FILE}\0".encode() + bytes.fromhex(blob))
    when = utc_now()
    commit = clone.commit_tree(tree, f"{COMMIT_PREFIX} {source[:12] or '(none)'} at {when}")
    for _ in range(tries):
        current = clone.ls_remote(ref).get(ref)
        if current is not None:
            _check_page_commit(clone, ref, current)
        if clone.push([RefUpdate(ref, commit, expect=current or "")]):
            log.info("published %s on %s", commit[:12], ref)
            return commit
        log.info("%s moved while publishing; trying again", ref)
    raise DistributeError(f"branch {branch} kept changing while publishing the page "
                          f"({tries} tries); run the command again")


def _check_page_commit(clone: Clone, ref: str, sha: str) -> None:
    """Refuse to replace a branch whose head is not a page commit of this module."""
    clone.fetch(ref)  # (into FETCH_HEAD only: no local ref is left behind)
    try:
        out = clone.first_parent_log(sha, "%P%x00%s", limit=1)
    except RemoteError:
        out = None
    parents, _, subject = (out or "").strip().partition("\0")
    if out is None or parents or not subject.startswith(COMMIT_PREFIX):
        raise DistributeError(f"branch {ref.removeprefix('refs/heads/')} on the remote holds "
                              "commits not written by `distribute report`; it was left alone "
                              "(choose another branch with --publish BRANCH)")


def _write_object(clone: Clone, kind: str, data: bytes) -> str:
    """Store ``data`` as a git object of ``kind`` in the copy (``hash-object -w``); its sha.

    (A tree is written from its binary form: the same object ``git mktree`` makes, without stdin.)
    """
    fd, name = tempfile.mkstemp(prefix="distribute-report-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return clone.hash_object(name, kind)
    finally:
        os.unlink(name)
