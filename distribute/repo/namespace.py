"""Where the remote keeps its coordination refs, and the mapping of their names (issue 25).

The code names every coordination ref ``refs/distribute/…`` (:mod:`distribute.protocol.refs`).
A remote keeps them there, or, when its host takes only branches and tags, under
``refs/heads/_distribute/``: ``distribute init`` chose that once and recorded it on master
(``.distribute``: :func:`~distribute.protocol.parse_namespace`). A :class:`Namespaced` process
(the base of :class:`~.transport.Transport`) maps the names on the way to and from the remote —
push refspecs and leases, ls-remote patterns and answers, fetch refspecs — so that nothing above
this package sees where they live.

A process knows the namespace from its local copy's config (``distribute.coordinationRefs``,
written when a fetch read master's record and found another namespace than the copy used), and
reads master's record again after its own first fetch: a new copy fetches once more, right away,
when the record names another namespace than the one it fetched from.
"""
from __future__ import annotations

from typing import Optional

from ..protocol import (
    COORD_PREFIX,
    LAYOUT_FILE,
    NAMESPACES,
    ORIGIN_MASTER,
    RESERVED_NAME,
    from_remote,
    on_remote,
    parse_namespace,
)
from .pacing import PacedProcess

#: The local copy's setting naming where the remote keeps its coordination refs (absent: the
#: default, ``refs/distribute/``).
CONFIG_KEY = "distribute.coordinationRefs"
#: Where a copy made by ``git clone`` finds the remote's coordination refs kept in a branch
#: namespace (``refs/heads/*`` fetched to ``refs/remotes/origin/*``): copies nothing reads.
_CLONED_COPIES = f"refs/remotes/origin/{RESERVED_NAME}/"


def branches_of(listed: dict[str, str]) -> dict[str, str]:
    """The branches of a listing of the remote's ``refs/heads/*`` (``{ref: sha}``): not the
    coordination refs a remote keeps in a branch namespace (listed as ``refs/distribute/…``)."""
    return {ref: sha for ref, sha in listed.items() if ref.startswith("refs/heads/")}


class Namespaced(PacedProcess):
    """A :class:`PacedProcess` that knows where the remote keeps its coordination refs."""

    def __init__(self, path: object, name: str = "distribute") -> None:
        self._namespace: Optional[str] = None
        #: Whether master's record was read since this object was made (after its first fetch).
        self._recorded = False
        super().__init__(path, name)

    @property
    def namespace(self) -> str:
        """Where the remote keeps its coordination refs (:data:`~distribute.protocol.NAMESPACES`):
        as this process last read it from master, else as the copy's config says."""
        if self._namespace is None:
            status, out, _ = self._run(["config", "--get", CONFIG_KEY])
            value = out.strip()
            self._namespace = value if status == 0 and value in NAMESPACES else COORD_PREFIX
        return self._namespace

    @namespace.setter
    def namespace(self, value: str) -> None:
        """Use ``value`` in this process object (not recorded anywhere: see :meth:`read_record`)."""
        self._namespace = value

    def on_remote(self, ref: str) -> str:
        """The name of ``ref`` (or an ls-remote pattern) on the remote."""
        return on_remote(ref, self.namespace)

    def from_remote(self, ref: str) -> Optional[str]:
        """The name the code uses for the remote's ``ref`` (``None``: none of ours)."""
        return from_remote(ref, self.namespace)

    def read_record(self) -> bool:
        """After a fetch: read, once per object, where master's record keeps the coordination
        refs, and remember it in the copy's config; ``True`` when that is not where this fetch
        took them from (the caller fetches again)."""
        if self._recorded:
            return False
        status, out, err = self._run(["cat-file", "-p", f"{ORIGIN_MASTER}:{LAYOUT_FILE}"])
        if status != 0 and "does not exist" not in err:
            return False  # (the file could not be read now: the next fetch tries again)
        self._recorded = True
        recorded = parse_namespace(out if status == 0 else None)
        if recorded == self.namespace:
            return False
        self._namespace = recorded
        self._run(["config", CONFIG_KEY, recorded])
        return True

    def drop_cloned_copies(self) -> None:
        """Delete the copies ``git clone`` made of coordination refs kept in a branch namespace
        (the worker's fetches bring them to ``refs/remotes/origin/distribute/``)."""
        _, out, _ = self._run(["for-each-ref", "--format=%(refname)", _CLONED_COPIES])
        if out.strip():
            self._run(["update-ref", "--stdin"],
                      stdin="".join(f"delete {ref}\n" for ref in out.split()))
