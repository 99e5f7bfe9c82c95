"""Seeing a push land: the refs of a push answered "ok" are read back where the host may misreport.

A host may answer a push "ok" that it never applied: GitLab (Gitaly) has reported atomic pushes
as successful although every ref update failed. A worker that acted on such an answer would think
it holds a lock nobody holds, or that a job it claimed or closed is recorded when master never
moved: exactly-once would be lost. So a push the transport reports applied is one it has seen
land: after the host's "ok", :class:`~distribute.repo.transport.Transport` reads the pushed refs
back (one ``ls-remote`` naming just those refs) and counts the push applied only when
:func:`seen_landed` says so, or, for a push that moved ``master``, when the caller's own check
finds its commit in master's history (others may have moved master on since: it only moves
forward). A push not seen is taken for one whose answer was lost: it is pushed again, and a
refusal of that retry is settled as any uncertain push is (:mod:`.transport`).

Whether to read back is ``DISTRIBUTE_VERIFY_PUSHES`` (:func:`verifies`):

* ``auto`` (the default): wherever the host is not known to report truthfully, that is for every
  remote but a local one (a path or ``file://``: git runs ``receive-pack`` on this machine
  itself, and its report is what it did). Hosted and self-hosted servers (ssh, https, git://)
  run software the worker cannot see, so their answers are checked;
* ``always``: on every remote (tests and simulations of a misreporting host on ``file://``);
* ``never``: trust every answer (a host known to report truthfully: one extra read per push saved).

The cost is one read of a few refs per push (no objects), paid only where verification is on.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Optional, Sequence

from ..settings import choice_setting, setting_row

if TYPE_CHECKING:  # pragma: no cover
    from .transport import RefUpdate

#: What ``DISTRIBUTE_VERIFY_PUSHES`` may be: ``auto``, ``always``, ``never``.
MODES = setting_row("DISTRIBUTE_VERIFY_PUSHES").choices
_SCP_LIKE = re.compile(r"^[^/]*:")  # user@host:path (git's rule: a colon before any slash)
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def local_remote(url: Optional[str]) -> bool:
    """Whether ``url`` names a repository on this machine (a path or ``file://``): git applies
    such a push itself, so its answer is the truth."""
    if not url:
        return False
    if url.startswith("file://"):
        return True
    if "://" in url:
        return False
    return bool(_WINDOWS_DRIVE.match(url)) or not _SCP_LIKE.match(url)


def verify_mode() -> str:
    """``DISTRIBUTE_VERIFY_PUSHES``: one of :data:`MODES`."""
    return choice_setting("DISTRIBUTE_VERIFY_PUSHES")


def verifies(url: Optional[str]) -> bool:
    """Whether pushes to ``url`` are read back after an "ok" (``DISTRIBUTE_VERIFY_PUSHES``, see
    the module's docstring)."""
    mode = verify_mode()
    if mode == "auto":
        return not local_remote(url)
    return mode == "always"


def seen_landed(updates: Sequence["RefUpdate"], values: Sequence[Optional[str]],
                current: dict[str, str], atomic: bool) -> bool:
    """Whether the refs read back (``current``: ``{ref: sha}``) show that the push of
    ``updates`` landed; ``values`` are the shas the updates put (``None``: a deletion).

    Every ref holding what the push put there (a deleted ref absent) says so. An atomic push is
    all or nothing, so one ref holding a value that only this push could have put there (one it
    created or changed, from an expected value it named) says so too: others may have moved the
    rest since (a released lock taken by the next worker)."""
    held = [current.get(u.ref) == value if value else u.ref not in current
            for u, value in zip(updates, values)]
    if all(held):
        return True
    return atomic and any(ok and value and u.expect is not None and u.expect != value
                          for u, value, ok in zip(updates, values, held))
