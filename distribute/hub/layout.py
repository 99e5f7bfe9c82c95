"""Where each job's results live in the Hugging Face repository, and how the repository says so.

Two layouts, named by ``distribute.json`` at the top of the repository (written with the mirror's
first commit to a new repository; the table is in ``docs/hub.md``):

* **folders** (the default): a done job's ``updates/<ab>/<cd>/<slug>/<file>`` on master becomes
  ``<ab>/<cd>/<slug>/<file>`` — the sharding of the git layout, so that no folder of the
  repository holds more than a few hundred entries however many jobs there are
  (``<ab>``, ``<cd>``: the first four hex digits of the SHA-256 of the job's slug);
* **packed** (``DISTRIBUTE_HF_PACK=N`` / ``--pack N``, for very many small results): the done
  record at position ``p`` of the ledger (see :mod:`distribute.hub.source`) goes into tar shard
  ``k = p // N``, ``shards/<k // 1000>/<k>.tar`` (WebDataset-style members ``<slug>/<file>``),
  listed by ``index/<k // 1000>/<k>.jsonl`` (one JSON object per job: ``job``, ``slug``,
  ``files`` with their git blob ids and sizes). A million jobs at N = 100 make 20 000 files.

A repository mirrored by versions before this layout existed has folders ``<slug>/`` at its top
and no ``distribute.json``: it keeps them (nothing is uploaded twice — a job whose files are all at
``<slug>/`` counts as mirrored), and new jobs go to the sharded folders (``legacy_flat``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Optional

from huggingface_hub import RepoFile
from huggingface_hub.errors import RepositoryNotFoundError

from ..protocol import SHARDED, job_slug, slug_path
from .hubsettings import HubSettings
from .transport import calling

__all__ = ["HubLayout", "LAYOUT_FILE", "hub_path_for", "shard_of", "shard_path", "index_path",
           "discover", "from_listing", "remember", "known_layout", "written", "text_blob_id",
           "LARGE_DIR"]

log = logging.getLogger(__name__)

LAYOUT_FILE = "distribute.json"
SHARDS_DIR = "shards"
INDEX_DIR = "index"
SHARDS_PER_FOLDER = 1000
#: Files over the git size limit live under this folder (:mod:`distribute.hub.largefiles`).
LARGE_DIR = "large-files"
_SHARD_FOLDER = re.compile(r"^[0-9a-f]{2}$")
_cache: dict[tuple[str, str, str], "HubLayout"] = {}


@dataclass(frozen=True)
class HubLayout:
    """How results are laid out in a repository."""

    pack: int = 0  # jobs per tar shard; 0: one folder per job
    legacy_flat: bool = False  # jobs mirrored before this layout existed are at ``<slug>/``
    written: bool = True  # False: ``distribute.json`` is still to be written (a new repository)

    def text(self) -> str:
        """The content of :data:`LAYOUT_FILE` for this layout."""
        doc = {"mirror": "git-distribute", "version": 1,
               "layout": "packed" if self.pack else "folders",
               "folders": "<ab>/<cd>/<slug>/ with abcd the first hex digits of sha256(slug)",
               "legacy_flat": self.legacy_flat}
        if self.pack:
            doc.update(jobs_per_shard=self.pack, shards=f"{SHARDS_DIR}/<k // 1000>/<k>.tar",
                       index=f"{INDEX_DIR}/<k // 1000>/<k>.jsonl",
                       shard_of_job="k = position of the job's done record in the ledger // "
                                    "jobs_per_shard")
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    @classmethod
    def parse(cls, text: str) -> "HubLayout":
        """The layout :data:`LAYOUT_FILE`'s ``text`` names (unreadable: folders)."""
        try:
            doc = json.loads(text)
            pack = int(doc.get("jobs_per_shard") or 0) if doc.get("layout") == "packed" else 0
            return cls(pack=max(0, pack), legacy_flat=bool(doc.get("legacy_flat")))
        except (ValueError, TypeError, AttributeError):
            log.warning("%s is unreadable; assuming one folder per job", LAYOUT_FILE)
            return cls()

    def describe(self) -> str:
        """A few words for messages."""
        kind = f"tar shards of {self.pack} jobs" if self.pack else "<ab>/<cd>/<slug>/ folders"
        return kind + (" (older jobs at <slug>/)" if self.legacy_flat else "")


def hub_path_for(job: str, layout: Optional[HubLayout] = None,
                 position: Optional[int] = None) -> str:
    """Where ``job``'s files are in the repository.

    Folders: ``<ab>/<cd>/<slug>`` (the job's files below it). Packed: the tar shard holding the job
    (members ``<slug>/<file>``), which needs the ``position`` of the job's done record in the ledger
    (:func:`distribute.hub.locate` finds it). In a ``legacy_flat`` repository a job mirrored by an
    older version may be at ``<slug>`` instead.
    """
    layout = layout or HubLayout()
    if not layout.pack:
        return slug_path(job_slug(job), SHARDED).split("/", 1)[1]
    if position is None:
        raise ValueError("a packed repository needs the position of the job's done record")
    return shard_path(shard_of(position, layout.pack))


def shard_of(position: int, pack: int) -> int:
    """The shard of the done record at ``position`` with ``pack`` jobs per shard."""
    return position // pack


def shard_path(k: int) -> str:
    """The tar of shard ``k``."""
    return f"{SHARDS_DIR}/{k // SHARDS_PER_FOLDER:04d}/{k:06d}.tar"


def index_path(k: int) -> str:
    """The index of shard ``k``."""
    return f"{INDEX_DIR}/{k // SHARDS_PER_FOLDER:04d}/{k:06d}.jsonl"


def _key(s: HubSettings) -> tuple[str, str, str]:
    return (s.host, s.repo_type, s.repo_id)


def known_layout(s: HubSettings) -> Optional[HubLayout]:
    """The layout this process already knows for the configured repository, if any."""
    return _cache.get(_key(s))


def remember(s: HubSettings, layout: HubLayout) -> HubLayout:
    """Keep ``layout`` as the configured repository's (e.g. once its file was committed)."""
    _cache[_key(s)] = layout
    return layout


def discover(s: HubSettings, hint: Optional[HubLayout] = None) -> HubLayout:
    """The repository's layout: :data:`LAYOUT_FILE` if present, else a new one (folders, or packed
    when ``DISTRIBUTE_HF_PACK`` is set and the repository holds no folder yet), to be written with
    the next commit. ``hint`` (e.g. from the mirror's marker) saves the look at the repository."""
    known = known_layout(s) or (hint if hint is not None and hint.written else None)
    if known is not None:
        return remember(s, known)
    api = s.api()
    with calling(f"reading the layout of {s.repo_id}", s):
        try:
            entries = list(api.list_repo_tree(s.repo_id, recursive=False, repo_type=s.repo_type))
        except RepositoryNotFoundError:
            return remember(s, HubLayout(pack=s.pack, written=False))
    if any(isinstance(e, RepoFile) and e.path == LAYOUT_FILE for e in entries):
        return remember(s, _read_layout_file(s))
    return _guessed(s, [e.path for e in entries if not isinstance(e, RepoFile)])


def from_listing(s: HubSettings, paths: Iterable[str],
                 hint: Optional[HubLayout] = None) -> HubLayout:
    """The layout of a repository whose whole file listing is ``paths``: its layout file's, as
    ``hint`` (the mirror state) or this process knows it, else read (two requests)."""
    paths = list(paths)
    known = known_layout(s)
    if known is not None and known.written:
        return known
    if LAYOUT_FILE in paths:
        if hint is not None:
            return remember(s, hint)
        return remember(s, _read_layout_file(s))
    return _guessed(s, {p.split("/", 1)[0] for p in paths if "/" in p})


def _guessed(s: HubSettings, folders: Iterable[str]) -> HubLayout:
    """The layout of a repository without a layout file, from its top-level ``folders``: folders
    not named like shards mean the first, flat layout; any folder at all rules out packing."""
    folders = [p for p in folders if p != LARGE_DIR]  # (big files come before any mirror)
    legacy = any(not _SHARD_FOLDER.match(p) and p not in (SHARDS_DIR, INDEX_DIR) for p in folders)
    pack = s.pack
    if pack and folders:
        log.warning("%s", s.mask(f"the {s.where} already holds folders: DISTRIBUTE_HF_PACK={pack} "
                                 "is ignored, results go to folders"))
        pack = 0
    return remember(s, HubLayout(pack=pack, legacy_flat=legacy, written=False))


def _read_layout_file(s: HubSettings) -> HubLayout:
    """Download and parse the repository's layout file."""
    with calling(f"reading {LAYOUT_FILE} of {s.repo_id}", s), \
            tempfile.TemporaryDirectory(prefix="distribute-layout-") as tmp:
        got = s.api().hf_hub_download(s.repo_id, LAYOUT_FILE, repo_type=s.repo_type, local_dir=tmp)
        return HubLayout.parse(Path(got).read_text(encoding="utf-8"))


def written(s: HubSettings, layout: HubLayout) -> HubLayout:
    """``layout`` once its file is in the repository."""
    return remember(s, replace(layout, written=True))


def text_blob_id(text: str) -> str:
    """The git blob id (the Hub's ``oid`` of a regular file) of ``text`` in UTF-8."""
    data = text.encode("utf-8")
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
