"""Reading ``git push --porcelain``: which refs a push applied, which it refused and why."""
from __future__ import annotations

import re

#: The flags of a ref a push applied (or found already there): fast-forward, forced, deleted,
#: new, up to date.
APPLIED_FLAGS = " +-*="
_SHA = re.compile(r"^[0-9a-f]{40}$")


def applied_refs(porcelain: str) -> dict[str, str]:
    """``{ref: sha}`` of the refs the push applied, as the push named them (``src:dst``): a
    deletion's sha is ``""``; a ref pushed by another name than its id is left out."""
    applied = {}
    for line in porcelain.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not line or line[0] not in APPLIED_FLAGS:
            continue
        source, _, ref = parts[1].partition(":")
        if line[0] == "-":
            applied[ref] = ""
        elif _SHA.match(source):
            applied[ref] = source
    return applied


#: How a ref refused only because the atomic push as a whole failed is reported: by this client,
#: or by the server (whose ref transaction may also fail on its own, e.g. while another push
#: locks one of the refs: a busy ref, as hosts report it, nothing changed).
WHOLE_PUSH_FAILED = ("atomic push failed", "atomic push failure", "atomic transaction failed",
                     "(failed)", "failed to lock", "cannot lock ref", "unable to lock")


def busy_reason(porcelain: str) -> str:
    """The first refusal reason of a push refused as a whole (for the log)."""
    reasons = [line.split("\t")[2] for line in porcelain.splitlines()
               if line.startswith("!") and line.count("\t") >= 2]
    return f"refused as a whole: {reasons[0].strip() if reasons else 'no reason given'}"


def refused_refs(porcelain: str) -> dict[str, str]:
    """``{ref: reason}`` from ``git push --porcelain`` output, leaving out the refs refused only
    because the atomic push as a whole failed."""
    refused = {}
    for line in porcelain.splitlines():
        if not line.startswith("!"):
            continue
        parts = line.split("\t")
        if len(parts) >= 3 and not any(whole in parts[2] for whole in WHOLE_PUSH_FAILED):
            refused[parts[1].rpartition(":")[2]] = parts[2].strip()
    return refused
