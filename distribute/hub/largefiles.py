"""Files over the size limit kept on the Hub: the store a worker uses when the mirror is configured.

A job's file over ``DISTRIBUTE_MAX_FILE_MB`` (or over what the git host takes) cannot go to git.
:func:`keep_large_files` gives a worker a :class:`HubFileStore`: such a file is uploaded to
``large-files/<ab>/<cd>/<slug>/<path in the job's directory>`` of the configured repository (the
job's folder of the mirror's layout, under :data:`~distribute.hub.layout.LARGE_DIR`), in one Hub
commit per checkpoint or finish that brings new big files (big files are rare: these commits are
not counted in the mirror's ``DISTRIBUTE_HF_COMMITS_PER_HOUR`` slots; a 429 is waited out within
``DISTRIBUTE_HF_MAX_WAIT_S``). The job's directory in git gets the pointer
(:mod:`distribute.protocol.pointer`) instead; readers download the file of the pointer's Hub
commit back, its SHA-256 checked (:mod:`distribute.bigfiles`). ``docs/hub.md`` tells the story.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..bigfiles import LargeFile, fetch_into
from ..protocol.pointer import Pointer
from .errors import HubError
from .files import commit_files
from .hubsettings import REPO_TYPES, HubSettings, settings
from .layout import LARGE_DIR, hub_path_for
from .transport import calling

if TYPE_CHECKING:  # pragma: no cover
    from ..worker import Worker

__all__ = ["HubFileStore", "keep_large_files", "large_file_path"]

log = logging.getLogger(__name__)


def large_file_path(job: str, rel: str) -> str:
    """Where the file ``rel`` of ``job``'s directory is kept in the repository."""
    return f"{LARGE_DIR}/{hub_path_for(job)}/{rel}"


class HubFileStore:
    """A :class:`~distribute.bigfiles.LargeFileStore` in the Hugging Face repository of ``s``."""

    def __init__(self, s: HubSettings) -> None:
        self.s = s

    def put(self, job: str, files: list[LargeFile]) -> dict[str, Pointer]:
        """Upload ``files`` of ``job`` in one Hub commit; their pointers by ``rel``."""
        s = self.s
        paths = {f.rel: large_file_path(job, f.rel) for f in files}
        names = ", ".join(f.rel for f in files)
        revision = commit_files([(paths[f.rel], f.local) for f in files],
                                f"Large files of job {job}: {names}",
                                "Kept here by git-distribute instead of git (over the size "
                                "limit); the job's directory in git holds their pointers.", s)
        revision = revision or self._head()  # ("": the same files were there already)
        log.info("%s", s.mask(f"job {job!r}: {names} uploaded to the {s.where} at "
                              f"{revision[:12]}"))
        return {f.rel: Pointer(name=f.local.name, repo_type=s.repo_type, repo_id=s.repo_id,
                               path=paths[f.rel], size=f.size, sha256=f.sha256,
                               revision=revision) for f in files}

    def get(self, pointer: Pointer, target: Path) -> None:
        """Download the file ``pointer`` names (its repository on this Hub, at its commit) to
        ``target``, size and SHA-256 checked."""
        if pointer.repo_type not in REPO_TYPES:
            raise HubError(f"a pointer names an unknown repository type {pointer.repo_type!r}")
        s = replace(self.s, repo_id=pointer.repo_id, repo_type=pointer.repo_type)

        def download(tmp: Path) -> None:
            with calling(f"downloading {pointer.path} from {s.repo_id}", s), \
                    tempfile.TemporaryDirectory(prefix="distribute-large-") as folder:
                got = s.api().hf_hub_download(s.repo_id, pointer.path, repo_type=s.repo_type,
                                              revision=pointer.revision, local_dir=folder)
                shutil.move(got, tmp)

        fetch_into(pointer, target, download)
        log.info("%s", s.mask(f"{target.name}: downloaded from the {s.where} "
                              f"({pointer.size} bytes, sha256 checked)"))

    def _head(self) -> str:
        """The repository's newest commit."""
        s = self.s
        with calling(f"reading the head of {s.repo_id}", s):
            sha = s.api().repo_info(s.repo_id, repo_type=s.repo_type).sha
        if not sha:
            raise HubError(s.mask(f"the {s.where} names no commit"))
        return str(sha)


def keep_large_files(worker: "Worker") -> HubFileStore:
    """Send ``worker``'s files over the size limit to the configured Hugging Face repository
    (:func:`~distribute.hub.settings`), a pointer committed in git in their place, and let its
    reads resolve pointers from there; ``distribute worker --mirror hf`` does this. Raises
    :class:`HubError` when the settings are unusable."""
    store = HubFileStore(settings())
    worker.large_files.store = store
    return store
