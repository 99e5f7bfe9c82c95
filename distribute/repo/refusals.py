"""Reading a host's refusals from what git prints: a file too large for the host, pushes to
the coordination refs forbidden by a push rule (issue 25). Pure text: no git runs here."""
from __future__ import annotations

import re
from typing import Optional

from ..exceptions import FileTooLargeError, HostUnsupportedError
from ..protocol import BRANCH_COORD_PREFIX, COORD_PREFIX
from ..redact import redact

_TOO_LARGE = re.compile(r"GH001|exceeds .{0,40}file size limit|file too large|"
                        r"exceeds the (?:maximum )?(?:file|blob|object) size", re.IGNORECASE)
_HOOK_DECLINED = ("pre-receive hook declined", "hook declined", "prohibited", "not allowed",
                  "only branches and tags", "refusing")
#: How a refusal of :func:`too_large` begins (:func:`host_limit_mb` reads the limit it names).
HOST_REFUSED_SIZE = "the host refused a file too large"
_LIMIT = re.compile(r"limit of ([0-9.]+) ?MB", re.IGNORECASE)


def too_large(err: str) -> Optional[str]:
    """The host's own refusal of a file too big (GitHub's ``GH001``, "exceeds … file size
    limit"), as one line naming the file and the limit when the host did; ``None`` otherwise."""
    if not _TOO_LARGE.search(err):
        return None
    lines = [line.removeprefix("remote:").strip().removeprefix("error:").strip()
             for line in err.splitlines()]
    named = [next((line for line in lines if word in line.lower()), "")
             for word in ("exceeds", "gh001", "too large")]
    said = list(dict.fromkeys(line[:200] for line in named if line))[:2] or lines[:1]
    return redact(HOST_REFUSED_SIZE + ": " + " / ".join(said))


def custom_refs_refused(refused: dict[str, str], err: str) -> Optional[str]:
    """One line saying that the host refuses the coordination refs (``refs/distribute/*``, where
    a remote keeps them unless master records a branch namespace) and what to run, when a push of
    only such refs was refused by the host's rule (not by a lost compare-and-swap); ``None``
    otherwise."""
    ours = [ref for ref in refused if ref.startswith(COORD_PREFIX)]
    if not ours or len(ours) != len(refused):
        return None
    reasons = " ".join(refused.values()).lower() + " " + err.lower()
    if "stale info" in reasons or "fetch first" in reasons or "already exists" in reasons:
        return None
    if not any(phrase in reasons for phrase in _HOOK_DECLINED):
        return None
    return (f"the host refuses pushes to {COORD_PREFIX}* ({ours[0]}: "
            f"{redact(refused[ours[0]])}), which the lock protocol keeps its lock and wait "
            "queue in (a push rule allowing only branches and tags forbids them), and the "
            "remote's master records no other place for them: run `distribute init` with this "
            f"remote once more, which records {BRANCH_COORD_PREFIX} on master for every worker "
            "(docs/protocol.md)")


def host_limit_mb(refusal: str) -> Optional[float]:
    """The size limit in MB a host's refusal names ("… file size limit of 1.00 MB"), if any."""
    found = _LIMIT.search(refusal)
    return float(found.group(1)) if found else None


def raise_host_rule(refused: dict[str, str], err: str) -> None:
    """Raise what retrying a refused push cannot fix: the host's refusal of a file too large
    (:class:`FileTooLargeError`), or of the coordination refs (:class:`HostUnsupportedError`)."""
    big = too_large(err)
    if big is not None:
        raise FileTooLargeError(big)
    rule = custom_refs_refused(refused, err)
    if rule is not None:
        raise HostUnsupportedError(rule)
