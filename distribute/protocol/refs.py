"""The remote's ref names: ``master``, and the coordination refs outside any branch (the lock,
heartbeats, lock waiters, integrations' own refs) with their local tracking copies.

Nothing here runs git. :mod:`distribute.protocol` re-exports every name; ``docs/protocol.md``
("Remote layout and lock protocol") explains them.
"""
from __future__ import annotations

__all__ = ["MASTER", "ORIGIN_MASTER", "COORD_PREFIX", "LOCK_REF", "HEARTBEAT_PREFIX", "WAIT_PREFIX",
           "FLEET_REF", "MIRROR_REF", "TRACKING_PREFIX", "FETCH_REFSPECS", "ZERO_SHA",
           "heartbeat_ref", "heartbeat_owner", "wait_ref", "tracking_ref", "remote_ref"]

MASTER = "refs/heads/master"
ORIGIN_MASTER = "refs/remotes/origin/master"
COORD_PREFIX = "refs/distribute/"
LOCK_REF = COORD_PREFIX + "lock"
HEARTBEAT_PREFIX = COORD_PREFIX + "hb/"
WAIT_PREFIX = COORD_PREFIX + "wait/"
#: ``distribute fleet``'s spend: a parentless commit whose message is ``fleet`` and a JSON object.
FLEET_REF = COORD_PREFIX + "fleet"
#: The fleet's mirror state on the Hub (:mod:`distribute.hub.cursor`).
MIRROR_REF = COORD_PREFIX + "mirror"
#: Where a local copy keeps the coordination refs it fetched.
TRACKING_PREFIX = "refs/remotes/origin/distribute/"
#: What every fetch of a worker brings: master and the coordination refs.
FETCH_REFSPECS = ("+refs/heads/master:refs/remotes/origin/master",
                  "+refs/distribute/*:refs/remotes/origin/distribute/*")
ZERO_SHA = "0" * 40


def heartbeat_ref(worker: str, session: str = "") -> str:
    """The remote ref the heartbeat of ``worker``'s process ``session`` lives on
    (``hb/<worker>@<session>``; ``hb/<worker>`` for records written before sessions existed)."""
    return HEARTBEAT_PREFIX + worker + (f"@{session}" if session else "")


def heartbeat_owner(ref: str) -> tuple[str, str]:
    """``(worker, session)`` of a heartbeat ref (inverse of :func:`heartbeat_ref`)."""
    worker, _, session = ref[len(HEARTBEAT_PREFIX):].partition("@")
    return worker, session


def wait_ref(worker: str) -> str:
    """The remote ref a worker pushes while it waits for the lock."""
    return WAIT_PREFIX + worker


def tracking_ref(remote_ref: str) -> str:
    """The local tracking ref of a coordination ref (``refs/distribute/x`` → its fetched copy)."""
    return TRACKING_PREFIX + remote_ref[len(COORD_PREFIX):]


def remote_ref(tracking: str) -> str:
    """The coordination ref a local tracking ref mirrors (inverse of :func:`tracking_ref`)."""
    return COORD_PREFIX + tracking[len(TRACKING_PREFIX):]
