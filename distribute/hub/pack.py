"""Tar shards for packed repositories: ``shards/<g>/<k>.tar`` and its index ``index/<g>/<k>.jsonl``.

A shard holds the jobs whose done records are at positions ``k * N .. k * N + N - 1`` of the
ledger; its members are ``<slug>/<file>`` (WebDataset-style: all files of a job are adjacent).
The index lists each job of the shard with its files' git blob ids, so its own blob id
(which the Hub reports for a regular file) says whether the shard on the Hub matches master,
without downloading anything. The tar is deterministic too (sorted members, no times or owners).
"""
from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path
from typing import Sequence

from ..ledger import Entry
from .source import GitFile

__all__ = ["ShardJob", "index_text", "write_tar"]

log = logging.getLogger(__name__)

#: One job of a shard: its done record, its slug, and its regular files ``{rel: GitFile}``.
ShardJob = tuple[Entry, str, dict[str, GitFile]]


def index_text(jobs: Sequence[ShardJob]) -> str:
    """The index of a shard holding ``jobs`` (in ledger order): one JSON object per line."""
    lines = []
    for entry, slug, files in jobs:
        lines.append(json.dumps({"job": entry.job, "slug": slug, "worker": entry.worker,
                                 "finished": entry.at,
                                 "files": {rel: f.blob for rel, f in sorted(files.items())}},
                                sort_keys=True, ensure_ascii=False, separators=(",", ":")))
    return "".join(line + "\n" for line in lines)


def write_tar(dest: Path, members: Sequence[tuple[str, Path]]) -> None:
    """Write a tar at ``dest`` with ``(name, local file)`` members in the given order, without
    times, owners or modes that vary (the same files always make the same bytes)."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, local in members:
            info = tarfile.TarInfo(name)
            info.size = local.stat().st_size
            info.mode, info.mtime, info.uid, info.gid = 0o644, 0, 0, 0
            info.uname, info.gname = "", ""
            with open(local, "rb") as src:
                tar.addfile(info, src)
