"""The fleet's mirror state on the git remote: the ref ``refs/distribute/mirror``.

Its value is a *marker* (a parentless commit with the empty tree, like the lock's) whose message
is ``mirror <worker> <UTC time> <random>`` followed by trailers::

    Distribute-Mirror-Repo: dataset me/results https://huggingface.co
    Distribute-Mirror-Cursor: 12000      # the first 12 000 done records are on the Hub
    Distribute-Mirror-Next: 1767225636.0 # no Hub commit by anyone before this (Unix time)
    Distribute-Mirror-Until: 0           # > now: <worker> is committing a batch until then
    Distribute-Mirror-Layout: pack=0 flat=0
    Distribute-Mirror-Hub-Commit: 1a2b3c...   # the last Hub commit made through this ref
    Distribute-Mirror-Committed: 1767225600.0 # ... and when

A worker that wants to commit a batch to the Hub first moves the ref (compare-and-swap, so one
worker wins) from a value whose ``Next`` has passed and that nobody holds to one naming itself as
the holder (``Until`` = now + :data:`COMMIT_LEASE_S`) with ``Next`` = now + ``3600 /
DISTRIBUTE_HF_COMMITS_PER_HOUR``; after the commit it moves it again with the new cursor and
``Until`` = 0. So the whole fleet makes at most one Hub commit per interval, and never two at once.
A holder that died is replaced once its ``Until`` has passed. ``Next`` and ``Until`` are times of
the holder's clock; hosts whose clocks disagree by seconds only shift a commit by that much (and a
429 from the Hub, whose ``Retry-After`` goes into ``Next``, corrects the rest).

The cursor is only ever moved after a commit the Hub confirmed, and only over records whose files
that commit (or an earlier one) holds: it never says mirrored what is not. It is an optimisation —
the Hub's tree stays the source of truth (``distribute mirror`` compares it, and moves the cursor
over what it found complete). A marker naming another repository is treated as absent.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Optional

from ..protocol import MIRROR_REF, marker_message, tracking_ref
from ..repo import Clone, RefUpdate
from .hubsettings import HubSettings
from .layout import HubLayout

__all__ = ["MIRROR_REF", "COMMIT_LEASE_S", "MirrorState", "read_state", "claim", "release",
           "advance"]

log = logging.getLogger(__name__)

#: The first word of its markers' messages.
MARKER_KIND = "mirror"
#: How long a holder may take to commit one batch before another worker replaces it.
COMMIT_LEASE_S = 600.0
_PREFIX = "Distribute-Mirror-"


@dataclass(frozen=True)
class MirrorState:
    """What ``refs/distribute/mirror`` says (a fresh state when it is absent)."""

    repo: str = ""
    cursor: int = 0
    next_at: float = 0.0
    until: float = 0.0
    holder: str = ""
    layout: str = ""
    hub_commit: str = ""
    committed_at: float = 0.0
    sha: Optional[str] = field(default=None, compare=False)  # the marker this was read from

    def wait_s(self, now: Optional[float] = None) -> float:
        """Seconds until a commit slot is free (0: now)."""
        now = time.time() if now is None else now
        busy_until = self.until if self.until > now else 0.0
        return max(0.0, max(self.next_at, busy_until) - now)

    def committing(self, now: Optional[float] = None) -> bool:
        """Whether a holder is committing a batch right now."""
        return self.until > (time.time() if now is None else now)

    def hub_layout(self) -> Optional[HubLayout]:
        """The repository layout recorded here, if any."""
        fields = dict(part.partition("=")[::2] for part in self.layout.split())
        if "pack" not in fields or not fields["pack"].isdigit():
            return None
        return HubLayout(pack=int(fields["pack"]), legacy_flat=fields.get("flat") == "1")

    def message(self, holder: str) -> str:
        """The marker message recording this state, made by ``holder``."""
        trailers = {"Repo": self.repo, "Cursor": str(self.cursor), "Next": f"{self.next_at:.1f}",
                    "Until": f"{self.until:.1f}", "Layout": self.layout,
                    "Hub-Commit": self.hub_commit, "Committed": f"{self.committed_at:.1f}"}
        return (marker_message(MARKER_KIND, holder) + "\n\n"
                + "".join(f"{_PREFIX}{k}: {v}\n" for k, v in trailers.items() if v))


def repo_key(s: HubSettings) -> str:
    """How a marker names the configured repository."""
    return f"{s.repo_type} {s.repo_id} {s.host}"


def layout_field(layout: HubLayout) -> str:
    """The ``Layout`` trailer for ``layout``."""
    return f"pack={layout.pack} flat={int(layout.legacy_flat)}"


def parse(message: str, sha: Optional[str], key: str) -> MirrorState:
    """The state a marker's message records (fresh if it names another repository than ``key``)."""
    values: dict[str, str] = {}
    lines = message.splitlines()
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        if name.startswith(_PREFIX):
            values[name[len(_PREFIX):]] = value.strip()
    if values.get("Repo") != key:
        return MirrorState(repo=key, sha=sha)

    def num(name: str) -> float:
        try:
            return float(values.get(name, "0"))
        except ValueError:
            return 0.0

    words = lines[0].split() if lines else []
    return MirrorState(repo=key, cursor=int(num("Cursor")), next_at=num("Next"), until=num("Until"),
                       holder=words[1] if len(words) > 1 else "?", layout=values.get("Layout", ""),
                       hub_commit=values.get("Hub-Commit", ""), committed_at=num("Committed"),
                       sha=sha)


def read_state(clone: Clone, s: HubSettings, refresh: bool = False) -> MirrorState:
    """The mirror state as last fetched (``refresh``: fetch first, one round trip)."""
    if refresh:
        clone.fetch()
    sha = clone.resolve(tracking_ref(MIRROR_REF))
    if sha is None:
        return MirrorState(repo=repo_key(s))
    return parse(clone.commit_message(sha), sha, repo_key(s))


def _push(clone: Clone, old: MirrorState, new: MirrorState, holder: str) -> Optional[MirrorState]:
    """Move the ref from ``old`` to ``new`` (compare-and-swap); the state pushed, or ``None``."""
    marker = clone.make_marker(new.message(holder))
    if not clone.push([RefUpdate(MIRROR_REF, marker, expect=old.sha or "")]):
        return None
    clone.update_ref(tracking_ref(MIRROR_REF), marker)  # our copy sees what it pushed
    return replace(new, sha=marker, holder=holder)


def claim(clone: Clone, s: HubSettings, state: MirrorState, holder: str) -> Optional[MirrorState]:
    """Take the next commit slot if it is free; the state to :func:`release` after the commit,
    or ``None`` (not free yet, or another worker took it first)."""
    now = time.time()
    if state.wait_s(now) > 0:
        return None
    return _push(clone, state, replace(state, next_at=now + s.interval_s,
                                       until=now + COMMIT_LEASE_S), holder)


def release(clone: Clone, held: MirrorState, holder: str, cursor: Optional[int] = None,
            hub_commit: str = "", not_before: float = 0.0,
            layout: Optional[HubLayout] = None) -> bool:
    """Give the slot back after a commit: move the cursor to ``cursor`` (never backwards), record
    ``hub_commit``, and keep everyone from committing before ``not_before`` (a ``Retry-After``).
    ``False`` if the slot had been taken over meanwhile (the commit stands; the cursor does not
    move, which costs the next holder at most a no-op upload)."""
    now = time.time()
    new = replace(held, until=0.0, next_at=max(held.next_at, not_before),
                  cursor=max(held.cursor, cursor if cursor is not None else held.cursor),
                  layout=layout_field(layout) if layout is not None else held.layout)
    if hub_commit:
        new = replace(new, hub_commit=hub_commit, committed_at=now)
    if _push(clone, held, new, holder) is None:
        log.warning("the Hub commit slot of %s was taken over while it committed (longer than "
                    "%.0fs); the next holder checks the same jobs again", holder, COMMIT_LEASE_S)
        return False
    return True


def advance(clone: Clone, s: HubSettings, cursor: int, holder: str, not_before: float = 0.0,
            layout: Optional[HubLayout] = None, tries: int = 10) -> bool:
    """Move the cursor to at least ``cursor`` without taking a slot (after a catch-up found the
    first ``cursor`` records on the Hub); retried when the ref moves meanwhile."""
    for _ in range(tries):
        state = read_state(clone, s, refresh=True)
        if state.committing():  # its holder's release must find the marker it pushed
            time.sleep(min(2.0, state.until - time.time()))
            continue
        if state.cursor >= cursor and state.next_at >= not_before and (
                layout is None or state.layout == layout_field(layout)):
            return True
        new = replace(state, cursor=max(state.cursor, cursor),
                      next_at=max(state.next_at, not_before),
                      layout=layout_field(layout) if layout is not None else state.layout)
        if _push(clone, state, new, holder) is not None:
            return True
    return False
