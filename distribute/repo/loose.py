"""Writing small objects (trees, commits) into the copy without a git process each.

A worker's cycle writes a handful of small objects: the lock's and the heartbeat's markers, the
trees on the way to a job's directory, a merge commit. Each was a git process of its own
(``commit-tree``, ``hash-object``: ~2 ms here, nearly all of it starting git). A loose object is
a documented, stable format — ``zlib("<kind> <size>\\0<content>")`` stored under
``.git/objects/<2 hex>/<38 hex>`` of its SHA-1 — so :func:`write_object` writes it the way git
does: into a temporary file beside its place (``tmp_obj_*``, which ``git gc`` cleans up if a
crash leaves one), read-only, then moved there in one step; an object already there is left
alone. Git reads such objects like its own, packs them in ``gc``, and ``fsck`` checks them.

:func:`commit_content` builds a commit as ``git commit-tree`` does for the copy's identity.
Callers use git itself where this would not match what git writes (:func:`plain_identity`): a
repository that is not SHA-1 with a plain ``.git`` directory, dates or identities set from the
environment, signed commits.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import zlib
from pathlib import Path
from typing import Optional, Sequence

#: Characters git strips from both ends of a name or e-mail (``crud`` in git's ident.c), plus
#: what it refuses inside them: an identity holding any of them is left to git.
_CRUD = " .,:;<>\"\\'\t\n"
_BAD_INSIDE = re.compile(r"[<>\n\r\0]")


def objects_dir(work_tree: Path) -> Optional[Path]:
    """The object directory of the copy at ``work_tree`` when objects may be written there
    directly: a plain ``.git`` directory of a SHA-1 repository; else ``None``."""
    git_dir = work_tree / ".git"
    objects = git_dir / "objects"
    if not objects.is_dir():
        return None
    try:
        config = (git_dir / "config").read_text(encoding="utf-8", errors="replace").lower()
    except OSError:
        return None
    if "objectformat" in config.replace(" ", "") or "compatobjectformat" in config:
        return None
    return objects


def write_object(objects: Path, kind: str, content: bytes) -> str:
    """Store ``content`` as a loose object of ``kind`` (``tree``, ``commit``, ``blob``) under
    ``objects``; its sha."""
    data = f"{kind} {len(content)}\0".encode("ascii") + content
    sha = hashlib.sha1(data).hexdigest()
    target = objects / sha[:2] / sha[2:]
    if target.exists():
        return sha
    target.parent.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix="tmp_obj_")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(zlib.compress(data))
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return sha


def plain_identity(env: dict[str, str]) -> Optional[tuple[str, str]]:
    """``(name, email)`` of the committer git would use with ``env``, when the author and the
    committer are the same plain identity and no date is set there; else ``None``."""
    name, email = env.get("GIT_COMMITTER_NAME"), env.get("GIT_COMMITTER_EMAIL")
    if not name or not email or env.get("GIT_AUTHOR_NAME") != name or \
            env.get("GIT_AUTHOR_EMAIL") != email or "GIT_AUTHOR_DATE" in env or \
            "GIT_COMMITTER_DATE" in env:
        return None
    for part in (name, email):
        if part.strip(_CRUD) != part or _BAD_INSIDE.search(part):
            return None
    return name, email


def commit_content(tree: str, parents: Sequence[str], message: str,
                   identity: tuple[str, str], when: Optional[float] = None) -> bytes:
    """A commit object's content as ``git commit-tree -m message`` writes it for ``identity``
    (author and committer) now (or at ``when``), in the local time zone."""
    now = time.time() if when is None else when
    seconds = int(now)
    offset = time.localtime(seconds).tm_gmtoff // 60
    zone = f"{'+' if offset >= 0 else '-'}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"
    stamp = f"{identity[0]} <{identity[1]}> {seconds} {zone}"
    lines = [f"tree {tree}", *(f"parent {p}" for p in parents), f"author {stamp}",
             f"committer {stamp}"]
    text = message if message.endswith("\n") else message + "\n"
    return ("\n".join(lines) + "\n\n" + text).encode("utf-8", "surrogateescape")
