"""Coordination through refs under ``refs/distribute/``: lease clocks (:mod:`.observer`), the lock
(:mod:`.lock`) and its wait queue (:mod:`.waitqueue`), heartbeats (:mod:`.heartbeat`), and
read-only looks (:mod:`.inspect`). Built on the git layer's compare-and-swap pushes only."""
from .heartbeat import Heartbeat
from .inspect import break_lock, describe_coordination
from .lock import RemoteLock, RequestAnswered
from .observer import Observer

__all__ = ["Heartbeat", "Observer", "RemoteLock", "RequestAnswered", "break_lock",
           "describe_coordination"]
