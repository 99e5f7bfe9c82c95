"""Worker processes' identities: which earlier process used a local copy, and whether another
live process already works under a worker's name."""
from __future__ import annotations

import time
from pathlib import Path

from .exceptions import WorkerNameError
from .protocol import heartbeat_ref, tracking_ref
from .workspace import Workspace

SESSION_FILE = "distribute-session"


def take_over_copy(path: str, session: str) -> set[str]:
    """Record ``session`` in the local copy at ``path``; return the session that used it before
    (the caller holds the copy's file lock, so that process has ended)."""
    record = Path(path, ".git", SESSION_FILE)
    before = record.read_text(encoding="utf-8").strip() if record.exists() else ""
    record.write_text(session + "\n", encoding="utf-8")
    return {before} if before else set()


def check_name_free(workspace: Workspace, name: str, ours: set[str], heartbeat_s: float) -> None:
    """Refuse to start if a live process named ``name`` holds running jobs: a running record of
    a session not in ``ours`` whose heartbeat moved within three heartbeat intervals (by its
    commit time)."""
    clone = workspace.clone
    for entry in workspace.ledger().running:
        if entry.worker != name or entry.session in ("", *ours):
            continue
        tracking = tracking_ref(heartbeat_ref(name, entry.session))
        if clone.resolve(tracking) is None:
            continue
        age = time.time() - (clone.commit_time(tracking) or 0)
        if age < 3 * heartbeat_s:
            raise WorkerNameError(
                f"another worker process named {name!r} is alive (heartbeat {age:.0f}s "
                f"ago) and runs job {entry.job!r}; choose another name, or wait "
                f"{3 * heartbeat_s - age:.0f}s if that worker is dead")
