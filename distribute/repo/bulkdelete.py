"""Deleting many refs of the remote in few pushes, each deletion a compare-and-swap.

A push that names its refs one by one (``:refs/heads/a``, ``--force-with-lease=refs/heads/a:<sha>``)
makes the git client match every name against every ref the remote advertises: on a remote with
100 000 branches a push of 4 000 deletions spent minutes there, before the server did anything.
:func:`delete_refs` names prefixes instead:

* the refs to delete are grouped under prefix patterns (``refs/heads/w0/job01*``), split until a
  pattern covers at most ``limit`` listed refs (:func:`plan`); a push ``--prune``\\ s each pattern
  from an empty local namespace, so git deletes every remote ref the pattern covers;
* the listed refs a pattern covers that must stay are named with their listed value (``<sha>:ref``,
  "up to date": the push leaves them alone) and a lease on it (so that one deleted meanwhile is
  not made again);
* every deletion is a lease (``--force-with-lease`` without a value) against the value listed,
  which git reads from a tracking ref written for the push (``refs/distribute-prune/seen/``); a
  ref that moved since it was listed, or a ref that appeared under a pattern (no tracking ref:
  "must not exist"), is refused, and ``--atomic`` refuses the whole push: nothing of that batch
  is deleted. The batch is then listed again and pushed again without the refs that changed.

The client's work per push is then one pass over the advertisement, and the server's one ref
transaction per push. Over smart HTTP, where ``git push`` cannot avoid comparing each ref it
deletes with every ref advertised, the batches are posted by :mod:`.smarthttp` instead (each
deletion a compare-and-swap on the server against the listed value).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..exceptions import RemoteError
from ..redact import redact
from .smarthttp import RefDeleter
from .transport import Transport

log = logging.getLogger(__name__)

#: The local namespace of the values a push's leases expect (its "tracking refs").
SEEN = "refs/distribute-prune/seen/"
#: A local namespace that stays empty: the source side of the pattern deletions.
NOTHING = "refs/distribute-prune/none/"
_REMOTE = "distribute-prune"
#: ``origin``'s settings the pushing remote keeps (how to reach the host).
_CARRIED = ("pushurl", "proxy", "proxyauthmethod", "vcs", "uploadpack", "receivepack")


@dataclass
class Batch:
    """One push: the ``patterns`` (ref prefixes; a ``*`` follows each) and ``exact`` refs it
    deletes, the listed values of the refs it deletes (``delete``) and of those its patterns
    cover that stay (``keep``)."""

    patterns: list[str] = field(default_factory=list)
    exact: list[str] = field(default_factory=list)
    delete: dict[str, str] = field(default_factory=dict)
    keep: dict[str, str] = field(default_factory=dict)

    def size(self) -> int:
        """The refs this push names or covers."""
        return len(self.delete) + len(self.keep)


def plan(listed: dict[str, str], doomed: set[str], limit: int = 5000, keep_limit: int = 20,
         max_patterns: int = 100, max_keep: int = 200) -> list[Batch]:
    """Batches deleting the ``doomed`` refs of ``listed`` (``{ref: sha}``, every remote ref the
    patterns may cover as listed), each covering at most ``limit`` listed refs, naming at most
    ``keep_limit`` refs to keep per pattern, ``max_keep`` per batch and ``max_patterns``
    patterns (each ref a push names costs the client a pass over the advertisement)."""
    pieces: list[tuple[str, list[str]]] = []  # (prefix, covered refs) or ("", [exact ref])
    roots: dict[str, list[str]] = {}
    for ref in sorted(listed):
        parts = ref.split("/", 3)
        if len(parts) == 4 and parts[3]:
            roots.setdefault("/".join(parts[:3]) + "/", []).append(ref)
        elif ref in doomed:
            pieces.append(("", [ref]))
    for root, names in roots.items():
        _split(names, 0, len(names), root, doomed, limit, keep_limit, pieces)
    batches: list[Batch] = []
    batch = Batch()
    for prefix, names in pieces:
        keep = sum(1 for ref in names if ref not in doomed)
        if (batch.size() + len(names) > limit or len(batch.patterns) >= max_patterns
                or len(batch.keep) + keep > max_keep):
            batches.append(batch)
            batch = Batch()
        (batch.patterns if prefix else batch.exact).append(prefix or names[0])
        for ref in names:
            (batch.delete if ref in doomed else batch.keep)[ref] = listed[ref]
    if batch.size():
        batches.append(batch)
    return [b for b in batches if b.delete]


def _split(names: list[str], start: int, end: int, prefix: str, doomed: set[str], limit: int,
           keep_limit: int, pieces: list[tuple[str, list[str]]]) -> None:
    """Cover the doomed refs among ``names[start:end]`` (sorted, all starting with ``prefix``)
    with patterns: ``prefix*`` when it covers few enough refs, else one character longer."""
    covered = names[start:end]
    count = sum(1 for ref in covered if ref in doomed)
    if not count:
        return
    if len(covered) <= limit and len(covered) - count <= keep_limit:
        pieces.append((prefix, covered))
        return
    index, depth = start, len(prefix)
    if names[index] == prefix:  # a ref no longer pattern covers without the others: by name
        if prefix in doomed:
            pieces.append(("", [prefix]))
        index += 1
    while index < end:
        char, stop = names[index][depth], index
        while stop < end and names[stop][depth] == char:
            stop += 1
        _split(names, index, stop, prefix + char, doomed, limit, keep_limit, pieces)
        index = stop


def delete_refs(transport: Transport, listed: dict[str, str], doomed: set[str],
                limit: int = 5000, attempts: int = 3,
                progress: Optional[Callable[[int, int], None]] = None) -> list[str]:
    """Delete the ``doomed`` refs of the remote, each only if it still has its ``listed`` value
    (``listed``: the remote refs as read, ``{ref: sha}``), in atomic pushes covering at most
    ``limit`` refs (see the module's docstring). A batch refused because refs changed is listed
    again and pushed once more without them, up to ``attempts`` times. Returns the refs deleted
    (or found gone when a batch was listed again); ``progress(done, total)`` after each push."""
    url = transport.remote_url()
    if url is None:
        raise RemoteError("the copy has no origin")
    deleter = RefDeleter.open(transport, url)
    config: list[str] = []
    if deleter is None:
        config = _push_config(transport, url)
        _clear_seen(transport)
    deleted: list[str] = []
    total = len(doomed)
    for batch in plan(listed, doomed, limit) if deleter is None else _chunks(doomed, listed, limit):
        for attempt in range(attempts):
            gone = _push(transport, config, batch) if deleter is None else _post(deleter, batch)
            if gone is not None:
                deleted += gone
                break
            now = _relist(transport, batch)
            vanished = [ref for ref in batch.delete if ref not in now]
            deleted += vanished
            batch = Batch(batch.patterns, [r for r in batch.exact if now.get(r) == batch.delete[r]],
                          {r: s for r, s in batch.delete.items() if now.get(r) == s},
                          {r: s for r, s in now.items() if batch.delete.get(r) != s})
            if not batch.delete:
                break
            log.info("some refs changed while pruning (attempt %d); pushing the rest again",
                     attempt + 1)
        else:
            log.warning("%d refs were left: they kept changing while pruning; run prune again",
                        len(batch.delete))
        log.info("deleted %d of %d refs", len(deleted), total)
        if progress is not None:
            progress(len(deleted), total)
    if deleter is None:
        _clear_seen(transport)
    return deleted


def _chunks(doomed: set[str], listed: dict[str, str], limit: int) -> list[Batch]:
    """Batches of at most ``limit`` refs named one by one (smart HTTP: no patterns needed);
    ``patterns`` name the prefixes to list again when a batch is refused."""
    names = sorted(doomed)
    batches = []
    for start in range(0, len(names), limit):
        chunk = names[start:start + limit]
        roots = sorted({"/".join(ref.split("/", 3)[:3]) + "/" for ref in chunk
                        if len(ref.split("/", 3)) == 4})
        batches.append(Batch(roots, [r for r in chunk if not any(r.startswith(p) for p in roots)],
                             {ref: listed[ref] for ref in chunk}))
    return batches


def _post(deleter: RefDeleter, batch: Batch) -> Optional[list[str]]:
    """Delete ``batch`` in one request; the refs deleted, or ``None`` if it was refused (or its
    answer lost: the caller lists the refs again)."""
    try:
        verdicts = deleter.delete(batch.delete)
    except RemoteError as exc:
        log.warning("deleting %d refs: %s; listing them again", len(batch.delete), exc)
        return None
    if all(verdict == "ok" for verdict in verdicts.values()):
        return list(batch.delete)
    log.debug("deletions refused: %s", {r: v for r, v in verdicts.items() if v != "ok"})
    return None


def merged_into(transport: Transport, rev: str, shas: set[str]) -> set[str]:
    """The commits of ``shas`` reachable from ``rev`` (the copy's history of master is completed
    first when it is shallow: commits only, once per copy)."""
    if not shas:
        return set()
    if (transport.path / ".git" / "shallow").exists():
        why = transport.unshallow_master()
        if why is not None:
            raise RemoteError(f"cannot read the history of master: {why}")
    status, out, err = transport.run("rev-list", "--end-of-options", rev)
    if status != 0:
        raise RemoteError(f"cannot read the history of master: {err.strip()}")
    return shas.intersection(out.split())


def _push_config(transport: Transport, url: str) -> list[str]:
    """``-c`` options defining the pushing remote: ``origin``'s URL and how to reach the host, and
    tracking refs under :data:`SEEN` (where the leases read what they expect)."""
    options = [f"remote.{_REMOTE}.url={url}", f"remote.{_REMOTE}.fetch=+refs/*:{SEEN}*"]
    _, out, _ = transport.run("config", "--get-regexp", r"^remote\.origin\.")
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key.rsplit(".", 1)[-1].lower() in _CARRIED:
            options.append(f"remote.{_REMOTE}.{key.rsplit('.', 1)[-1]}={value}")
    return [arg for option in options for arg in ("-c", option)]


def _push(transport: Transport, config: list[str], batch: Batch) -> Optional[list[str]]:
    """Push ``batch``; the refs deleted, or ``None`` if the push was refused (a ref changed)."""
    seen = "".join(f"update {SEEN}{ref[5:]} {sha}\n" for ref, sha in batch.delete.items())
    status, _, err = transport.run("update-ref", "--stdin", stdin=seen)
    if status != 0:
        raise RemoteError(f"cannot write the values to expect: {err.strip()}")
    args = [*config, "push", "--porcelain", "--atomic", "--prune", "--force-with-lease",
            "--no-verify", "--no-thin", _REMOTE,
            *(f"--force-with-lease={ref}:{sha}" for ref, sha in batch.keep.items()),
            *(f"{NOTHING}*:{prefix}*" for prefix in batch.patterns),
            *(f":{ref}" for ref in batch.exact),
            *(f"{sha}:{ref}" for ref, sha in batch.keep.items())]
    try:
        out = _answer(transport, args)
    finally:
        _clear_seen(transport)
    removed = [line.split("\t")[1].lstrip(":") for line in out.splitlines()
               if line.startswith("-\t")]
    refused = [line for line in out.splitlines() if line.startswith("!")]
    if removed and not refused:
        return removed
    log.debug("prune push refused: %s", redact(out.strip()[-2000:]))
    return None


def _answer(transport: Transport, args: list[str]) -> str:
    """The porcelain answer to the push ``git *args``, retrying while the remote cannot be
    reached (an atomic refusal ends with "the remote end hung up": an answer all the same)."""
    delay = transport.backoff_s
    for attempt in range(transport.retries + 1):
        transport.network_calls += 1
        status, out, err = transport.run(*args)
        if status == 0 or any(line[:2] in ("!\t", "-\t", "=\t") for line in out.splitlines()):
            transport.reached = True
            return out
        if attempt == transport.retries or not transport._worth_retrying(err):  # noqa: SLF001
            break
        log.warning("prune push failed (%s); retrying in %.1fs", redact(err.strip()[-300:]), delay)
        time.sleep(delay)
        delay = min(delay * 2, transport.backoff_max_s)
    raise RemoteError(redact(f"push failed: {err.strip()[-500:]}"))


def _relist(transport: Transport, batch: Batch) -> dict[str, str]:
    """The remote's refs under ``batch``'s patterns and its exact refs, now."""
    now = transport.ls_remote(*(prefix + "*" for prefix in batch.patterns), *batch.exact)
    return {ref: sha for ref, sha in now.items()
            if ref in batch.exact or any(ref.startswith(p) for p in batch.patterns)}


def _clear_seen(transport: Transport) -> None:
    """Delete the local tracking refs of the pushes (a push leaves those of the refs it kept)."""
    _, out, _ = transport.run("for-each-ref", "--format=%(refname)", "refs/distribute-prune/")
    if out.strip():
        transport.run("update-ref", "--stdin",
                      stdin="".join(f"delete {ref}\n" for ref in out.split()))
