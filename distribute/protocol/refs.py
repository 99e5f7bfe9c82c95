"""The remote's ref names: ``master``, and the coordination refs outside any branch (the lock,
heartbeats, lock waiters, integrations' own refs) with their local tracking copies.

The code names every coordination ref under :data:`COORD_PREFIX` (``refs/distribute/lock``…),
which is also where a remote keeps them, unless its host takes only branches and tags: then they
live under :data:`BRANCH_COORD_PREFIX`, a choice ``distribute init`` makes once per remote and
records on master (:func:`distribute.protocol.parse_namespace`). Only the transport sees the
difference (:func:`on_remote`, :func:`from_remote`).

Nothing here runs git. :mod:`distribute.protocol` re-exports every name; ``docs/protocol.md``
("Remote layout and lock protocol") explains them.
"""
from __future__ import annotations

from typing import Optional

__all__ = ["MASTER", "ORIGIN_MASTER", "COORD_PREFIX", "LOCK_REF", "HEARTBEAT_PREFIX", "WAIT_PREFIX",
           "FLEET_REF", "MIRROR_REF", "TRACKING_PREFIX", "FETCH_REFSPECS", "ZERO_SHA",
           "BRANCH_COORD_PREFIX", "NAMESPACES", "RESERVED_NAME", "fetch_refspecs", "on_remote",
           "from_remote",
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
#: Where a remote whose host takes only branches and tags keeps its coordination refs: one
#: branch namespace, that no job branch is ever in (:data:`RESERVED_NAME` is no worker's name).
BRANCH_COORD_PREFIX = "refs/heads/_distribute/"
#: Every namespace a remote may keep its coordination refs in, the default first.
NAMESPACES = (COORD_PREFIX, BRANCH_COORD_PREFIX)
#: The name no worker may have (its job branches would be under :data:`BRANCH_COORD_PREFIX`).
RESERVED_NAME = BRANCH_COORD_PREFIX.split("/")[2]
ZERO_SHA = "0" * 40


def fetch_refspecs(namespace: str = COORD_PREFIX) -> tuple[str, str]:
    """What every fetch of a worker brings: master, and the coordination refs from where the
    remote keeps them (``namespace``) into :data:`TRACKING_PREFIX`."""
    return ("+refs/heads/master:refs/remotes/origin/master", f"+{namespace}*:{TRACKING_PREFIX}*")


#: What every fetch of a worker brings from a remote keeping its coordination refs in the default
#: namespace (:func:`fetch_refspecs`).
FETCH_REFSPECS = fetch_refspecs()


def on_remote(ref: str, namespace: str) -> str:
    """The name of ``ref`` (or of an ls-remote pattern) on a remote keeping its coordination refs
    under ``namespace``: ``refs/distribute/x`` becomes ``<namespace>x``; any other ref stays."""
    if namespace == COORD_PREFIX or not ref.startswith(COORD_PREFIX):
        return ref
    return namespace + ref[len(COORD_PREFIX):]


def from_remote(ref: str, namespace: str) -> Optional[str]:
    """The name the code uses for the remote ref ``ref`` (inverse of :func:`on_remote`);
    ``None`` for a ref under ``refs/distribute/`` on a remote keeping them elsewhere (nobody's
    coordination ref: left out)."""
    if namespace == COORD_PREFIX:
        return ref
    if ref.startswith(namespace):
        return COORD_PREFIX + ref[len(namespace):]
    return None if ref.startswith(COORD_PREFIX) else ref


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
