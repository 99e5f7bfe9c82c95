"""Read-only looks at the coordination refs, and breaking the lock by hand."""
from __future__ import annotations

import json
import time
from typing import Any, Optional

from ..exceptions import LockLostError
from ..protocol import (
    FLEET_REF,
    HEARTBEAT_PREFIX,
    LOCK_REF,
    TRACKING_PREFIX,
    WAIT_PREFIX,
    heartbeat_owner,
    marker_holder,
    remote_ref,
    tracking_ref,
)
from ..repo import Clone, RefUpdate


def describe_coordination(clone: Clone) -> dict[str, Any]:
    """``{"lock": None or {"holder", "held_s"}, "heartbeats": {worker: age_s}, "fleet": None or
    the spend ``distribute fleet`` recorded}`` from the fetched tracking refs. Ages compare the
    values' commit times with this machine's clock: good for display, never used for
    decisions."""
    now = time.time()
    lock = None
    fleet = None
    beats: dict[str, float] = {}
    for tracking, sha in clone.local_refs(TRACKING_PREFIX).items():
        ref = remote_ref(tracking)
        if ref.startswith(WAIT_PREFIX):
            continue
        if ref == FLEET_REF:
            fleet = _fleet_record(clone.commit_message(sha))
            continue
        subject, when = clone.subject_and_time(sha)
        age = round(max(0.0, now - when), 1)
        if ref == LOCK_REF:
            lock = {"holder": marker_holder(subject), "held_s": age}
        elif ref.startswith(HEARTBEAT_PREFIX):
            worker = heartbeat_owner(ref)[0]
            beats[worker] = min(age, beats.get(worker, age))
    return {"lock": lock, "heartbeats": beats, "fleet": fleet}


def _fleet_record(message: str) -> Optional[dict[str, Any]]:
    """The JSON object of a ``fleet`` record's message, ``None`` if it is not one."""
    head, _, body = message.partition("\n")
    try:
        record = json.loads(body) if head.strip() == "fleet" else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def break_lock(clone: Clone) -> Optional[str]:
    """Delete the lock whatever its value; return the holder's description, or ``None`` if free."""
    clone.fetch()
    value = clone.resolve(tracking_ref(LOCK_REF))
    if value is None:
        return None
    message = clone.commit_subject(value)
    if not clone.push([RefUpdate(LOCK_REF, None, expect=value)]):
        raise LockLostError("the lock changed while breaking it; run the command again")
    return message.removeprefix("lock ")
