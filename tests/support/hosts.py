"""Bare repositories that behave like the hosts of issue 25, made with git's own mechanisms.

Serve them like any other bare repository: ``file://``, :class:`~support.gitservers.GitDaemon`
or :class:`~support.gitservers.SmartHttpServer` (the hooks and settings live in the repository,
so every transport sees the same rules):

- :func:`no_atomic_bare`: ``receive.advertiseAtomic=false``: git refuses ``--atomic`` pushes with
  "the receiving end does not support --atomic push" (Azure DevOps, AWS CodeCommit);
- :func:`branches_only_bare`: a ``pre-receive`` hook refusing every ref outside ``refs/heads/``
  and ``refs/tags/`` (Alibaba Codeup's rule; GitHub's for ``refs/pull/*``);
- :func:`size_limited_bare`: a ``pre-receive`` hook refusing a push that brings a blob over N
  bytes, with GitHub's ``GH001`` message.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from support.gitservers import make_bare

_BRANCHES_ONLY = """#!/bin/sh
status=0
while read old new ref; do
  case "$ref" in
    refs/heads/*|refs/tags/*) ;;
    *) echo "error: refusing $ref: only branches and tags may be pushed to this repository" >&2
       status=1 ;;
  esac
done
exit $status
"""

_SIZE_LIMIT = """#!/bin/sh
limit=%(limit)d
zero=0000000000000000000000000000000000000000
big=$(while read old new ref; do
  [ "$new" = "$zero" ] && continue
  git rev-list --objects "$new" --not --all
done | git cat-file --batch-check='%%(objecttype) %%(objectsize) %%(rest)' |
  awk -v limit="$limit" '$1 == "blob" && $2 > limit {
    printf "error: File %%s is %%.2f MB; this exceeds GitHub'"'"'s file size limit of %%.2f MB\\n",
      $3, $2 / 1048576, limit / 1048576 }')
if [ -n "$big" ]; then
  echo "error: Trace: 0123456789abcdef" >&2
  echo "error: See https://gh.io/lfs for more information." >&2
  echo "$big" >&2
  echo "error: GH001: Large files detected. You may want to try Git Large File Storage" \\
       "- https://git-lfs.github.com." >&2
  exit 1
fi
exit 0
"""


def _hook(repo: Path, text: str) -> None:
    hook = repo / "hooks" / "pre-receive"
    hook.write_text(text, encoding="utf-8")
    hook.chmod(0o755)


def no_atomic_bare(root: Path, name: str = "remote.git") -> Path:
    """A bare repository ``root/name`` that does not advertise (so refuses) atomic pushes."""
    path = make_bare(root, name)
    subprocess.run(["git", "--git-dir", str(path), "config", "receive.advertiseAtomic", "false"],
                   check=True)
    return path


def branches_only_bare(root: Path, name: str = "remote.git") -> Path:
    """A bare repository ``root/name`` whose ``pre-receive`` hook refuses every push that moves
    a ref outside ``refs/heads/`` and ``refs/tags/`` (the whole push: hooks see all its refs)."""
    path = make_bare(root, name)
    _hook(path, _BRANCHES_ONLY)
    return path


def size_limited_bare(root: Path, limit_bytes: int, name: str = "remote.git") -> Path:
    """A bare repository ``root/name`` whose ``pre-receive`` hook refuses a push bringing a blob
    over ``limit_bytes``, saying so as GitHub does (``GH001: Large files detected``)."""
    path = make_bare(root, name)
    _hook(path, _SIZE_LIMIT % {"limit": limit_bytes})
    return path
