"""The pointer a job's directory holds in git for a file kept elsewhere (a file over the size limit
that went to the Hugging Face Hub): ``<name>.hub.json`` beside where ``<name>`` would be.

A pointer is one JSON object (keys sorted, one line) naming the file's place in the Hub
repository, its size, its SHA-256 and the Hub commit holding it::

    {"distribute": "hub-pointer", "version": 1, "name": "big.bin", "repo_type": "dataset",
     "repo_id": "me/results", "path": "large-files/ab/cd/job-7/big.bin", "size": 2097152,
     "sha256": "…", "revision": "<hub commit sha>"}

Readers write the file at ``<name>`` beside the pointer; the pointer's own ``name`` and ``path``
are never used as local paths. Nothing here does I/O; ``docs/protocol.md`` ("Files over the size
limit") explains the route.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional

__all__ = ["POINTER_SUFFIX", "POINTER_KIND", "Pointer", "pointer_name", "pointed_name"]

#: The suffix of a pointer's file name: ``big.bin`` is stood for by ``big.bin.hub.json``.
POINTER_SUFFIX = ".hub.json"
#: The value of a pointer's ``distribute`` key, by which it is told from a job's own JSON files.
POINTER_KIND = "hub-pointer"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REVISION = re.compile(r"^[0-9a-f]{7,64}$")


@dataclass(frozen=True)
class Pointer:
    """Where a file of a job's directory is kept on the Hub, and how to know it is the same."""

    name: str  #: the file's base name (informative: readers use the pointer's own file name)
    repo_type: str
    repo_id: str
    path: str  #: the file's path in the Hub repository
    size: int
    sha256: str
    revision: str  #: the Hub commit that holds the file at ``path``

    def text(self) -> str:
        """The pointer file's content."""
        return json.dumps({"distribute": POINTER_KIND, "version": 1, "name": self.name,
                           "repo_type": self.repo_type, "repo_id": self.repo_id,
                           "path": self.path, "size": self.size, "sha256": self.sha256,
                           "revision": self.revision}, sort_keys=True) + "\n"

    @classmethod
    def parse(cls, text: str) -> Optional["Pointer"]:
        """The pointer ``text`` holds, or ``None`` when it is not one (any other file, a newer
        version, a malformed field)."""
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        if not isinstance(doc, dict) or doc.get("distribute") != POINTER_KIND \
                or doc.get("version") != 1:
            return None
        fields = {key: doc.get(key) for key in ("name", "repo_type", "repo_id", "path", "sha256",
                                                "revision")}
        size = doc.get("size")
        if not all(isinstance(v, str) and v for v in fields.values()) or \
                not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return None
        if not _SHA256.match(fields["sha256"] or "") or not _REVISION.match(
                fields["revision"] or "") or ".." in (fields["path"] or "").split("/"):
            return None
        return cls(size=size, **{k: str(v) for k, v in fields.items()})


def pointer_name(name: str) -> str:
    """The file name of the pointer standing for the file ``name``."""
    return name + POINTER_SUFFIX


def pointed_name(name: str) -> Optional[str]:
    """The file a pointer file named ``name`` stands for (``None``: not a pointer's name)."""
    if not name.endswith(POINTER_SUFFIX) or len(name) == len(POINTER_SUFFIX):
        return None
    return name[:-len(POINTER_SUFFIX)]
