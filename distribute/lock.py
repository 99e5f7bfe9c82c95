"""Moved to :mod:`distribute.coordination`; kept so that old imports keep working."""
from .coordination import Heartbeat, Observer, RemoteLock, break_lock, describe_coordination
from .coordination.waitqueue import POLL_BY_POSITION_S, STALE_WAITER_S, WaitQueue
from .protocol import (
                       COORD_PREFIX,
                       HEARTBEAT_PREFIX,
                       LOCK_REF,
                       TRACKING_PREFIX,
                       WAIT_PREFIX,
                       heartbeat_ref,
)

__all__ = ["Heartbeat", "Observer", "RemoteLock", "WaitQueue", "break_lock",
           "describe_coordination", "heartbeat_ref", "COORD_PREFIX", "LOCK_REF", "HEARTBEAT_PREFIX",
           "WAIT_PREFIX", "TRACKING_PREFIX", "POLL_BY_POSITION_S", "STALE_WAITER_S"]
