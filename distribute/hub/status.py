"""How far the Hub lags the ledger, from the fleet's mirror state: ``distribute mirror --status``.

One fetch of the remote and no request to the Hub: the done records on master against the cursor
of ``refs/distribute/mirror`` (:mod:`distribute.hub.cursor`). The cursor is moved only after
commits the Hub confirmed, so the lag shown is never too small; ``distribute mirror --dry-run``
compares with the Hub's tree instead (the truth, at the price of a listing).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional, Union

from ..exceptions import DistributeError, NotInitializedError
from ..protocol import ORIGIN_MASTER, job_slug, parse_utc
from ..repo import Clone
from ..worker import Worker
from .cursor import read_state
from .hubsettings import settings
from .layout import discover, hub_path_for
from .source import done_records, entries

__all__ = ["MirrorStatus", "mirror_status", "locate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MirrorStatus:
    """The mirror's lag behind the ledger (``as_json()`` for ``--status --json``)."""

    repo: str
    done: int  # done records on master
    mirrored: int  # ... of which the first ``mirrored`` are on the Hub (the fleet's cursor)
    oldest_pending: Optional[str]  # the oldest record not known on the Hub: its job
    oldest_pending_age_s: Optional[float]  # ... and how long ago it finished
    next_commit_in_s: float  # when the fleet may make its next Hub commit
    committing: Optional[str]  # the worker committing a batch right now
    last_commit: str  # the last Hub commit made through the mirror state
    last_commit_age_s: Optional[float]
    layout: str  # the repository's layout as the mirror state records it
    commits_per_hour: float

    @property
    def lag(self) -> int:
        """Done records not known to be on the Hub."""
        return max(0, self.done - self.mirrored)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dictionary (with ``lag``)."""
        return {**asdict(self), "lag": self.lag}


def _age(utc: str) -> Optional[float]:
    then = parse_utc(utc)
    return None if then is None else round(max(0.0, time.time() - then), 1)


def mirror_status(worker_or_clone: Union[Worker, Clone]) -> MirrorStatus:
    """Fetch the remote and say how far the Hub lags its done records (no Hub request)."""
    s = settings()
    clone = worker_or_clone.clone if isinstance(worker_or_clone, Worker) else worker_or_clone
    state = read_state(clone, s, refresh=True)
    master = clone.resolve(ORIGIN_MASTER)
    if master is None:
        raise NotInitializedError("the remote has no master branch: nothing to mirror")
    lines = done_records(clone).read(master)
    mirrored = min(state.cursor, len(lines))
    oldest = entries(lines, mirrored, mirrored + 1)
    now = time.time()
    fields = dict(part.partition("=")[::2] for part in state.layout.split())
    layout = "unknown until the first commit" if not fields else (
        f"tar shards of {fields.get('pack')} jobs" if fields.get("pack", "0") != "0" else "folders")
    return MirrorStatus(
        repo=f"{s.repo_type} {s.repo_id}", done=len(lines), mirrored=mirrored,
        oldest_pending=oldest[0].job if oldest else None,
        oldest_pending_age_s=_age(oldest[0].at) if oldest else None,
        next_commit_in_s=round(state.wait_s(now), 1),
        committing=state.holder if state.committing(now) else None,
        last_commit=state.hub_commit,
        last_commit_age_s=round(now - state.committed_at, 1) if state.committed_at else None,
        layout=layout + (" (older jobs at <slug>/)" if fields.get("flat") == "1" else ""),
        commits_per_hour=s.commits_per_hour)


def locate(worker_or_clone: Union[Worker, Clone], job: str) -> tuple[str, str]:
    """Where the done ``job``'s results are (or will be) in the repository:
    ``(path, member prefix)`` — ``("<ab>/<cd>/<slug>", "")`` for a folder, or
    ``("shards/<g>/<k>.tar", "<slug>/")`` in a packed repository (the shard follows from the
    position of the job's done record, read from master after a fetch)."""
    s = settings()
    clone = worker_or_clone.clone if isinstance(worker_or_clone, Worker) else worker_or_clone
    layout = discover(s, read_state(clone, s, refresh=True).hub_layout())
    if not layout.pack:
        return hub_path_for(job, layout), ""
    lines = done_records(clone).read(clone.resolve(ORIGIN_MASTER) or "HEAD")
    position = next((i for i, line in enumerate(lines) if line.split("\t", 1)[0] == job), None)
    if position is None:
        raise DistributeError(f"job {job!r} is not done on master")
    return hub_path_for(job, layout, position), f"{job_slug(job)}/"
