"""Reading the local copy: commits, trees and objects, by name (no network, nothing written).

:class:`ObjectReader` is a base of :class:`~distribute.repo.clone.Clone`; the layers above call
these methods instead of spelling git command lines. A rev that does not exist raises
:class:`~distribute.exceptions.RemoteError` unless the method says otherwise.
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple, Optional, Sequence

from ..exceptions import RemoteError
from .process import GitProcess
from .trees import TREE_MODE, parse_tree


class TreeEntry(NamedTuple):
    """One line of ``git ls-tree``: ``mode`` (``100644``…), ``kind`` (``blob``, ``tree``,
    ``commit``), the object's ``sha`` and its ``path``."""

    mode: str
    kind: str
    sha: str
    path: str


def _tree_entry(record: str) -> Optional[TreeEntry]:
    """The entry of one ``ls-tree`` record, or ``None`` if it is not one."""
    meta, _, path = record.partition("\t")
    parts = meta.split()
    return TreeEntry(parts[0], parts[1], parts[2], path) if len(parts) == 3 else None


_SHA = re.compile(r"^[0-9a-f]{40}$")
_KINDS = {"40000": "tree", "160000": "commit"}


def _tree_listing(data: bytes) -> Optional[list[TreeEntry]]:
    """The entries of a tree object's content as ``ls-tree`` lists them; ``None`` when a name
    would be quoted there (not plain printable ASCII): ``ls-tree`` is asked instead."""
    entries, i = [], 0
    while i < len(data):
        space = data.index(b" ", i)
        nul = data.index(b"\0", space)
        mode, name = data[i:space].decode("ascii"), data[space + 1:nul]
        if any(c < 0x20 or c > 0x7e or c in b'"\\' for c in name):
            return None
        entries.append(TreeEntry(mode.zfill(6), _KINDS.get(mode, "blob"),
                                 data[nul + 1:nul + 21].hex(), name.decode("ascii")))
        i = nul + 21
    return entries


class ObjectReader(GitProcess):
    """Named read-only operations on the objects of the local copy."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: ``{(base, tip): paths}`` of the last :meth:`changed_paths` between shas.
        self._changed: dict[tuple[str, str], list[str]] = {}

    # ---- commits ------------------------------------------------------------------------------
    def commit_time(self, rev: str) -> Optional[float]:
        """The committer time of ``rev`` (seconds since the epoch); ``None`` if git printed none."""
        out = self.git("log", "-1", "--format=%ct", rev)
        return float(out) if out else None

    def commit_subject(self, rev: str) -> str:
        """The subject line of ``rev``'s message."""
        return self.git("log", "-1", "--format=%s", rev).strip()

    def commit_message(self, rev: str) -> str:
        """The whole message of ``rev`` (``%B``), as git prints it."""
        return self.git("log", "-1", "--format=%B", rev)

    def subject_and_time(self, rev: str) -> tuple[str, float]:
        """The subject line of ``rev`` and its committer time, from one git process."""
        subject, _, when = self.git("log", "-1", "--format=%s%x00%ct", rev).partition("\0")
        return subject, float(when)

    def times_and_subjects(self, revs: Sequence[str]) -> dict[str, tuple[float, str]]:
        """``{sha: (committer time, subject)}`` of the commits ``revs``, from one git process
        (those it cannot read are left out)."""
        if not revs:
            return {}
        status, out, _ = self.run("log", "--no-walk=unsorted", "--format=%H%x1f%ct%x1f%s",
                                  *revs)
        found = {}
        for line in out.splitlines() if status == 0 else []:
            sha, _, rest = line.partition("\x1f")
            when, _, subject = rest.partition("\x1f")
            found[sha] = (float(when), subject)
        return found

    def first_parent_log(self, rev: str, fmt: str, *, limit: Optional[int] = None,
                         reverse: bool = False, nul: bool = False) -> str:
        """The raw output of ``git log --first-parent --format=<fmt> rev``: newest first unless
        ``reverse``, at most ``limit`` commits, records ended by NUL, not newline, if ``nul``."""
        args = ["log", "--first-parent", *(["--reverse"] if reverse else []),
                *([f"-n{limit}"] if limit is not None else []), *(["-z"] if nul else []),
                f"--format={fmt}", rev]
        return self.git(*args)

    def parents_of(self, rev: str) -> list[str]:
        """The parents of the commit ``rev``, in order."""
        return self.git("rev-list", "--parents", "-n", "1", rev).split()[1:]

    def count_merges(self, base: str, head: str) -> int:
        """How many merge commits ``base..head`` holds."""
        return int(self.git("rev-list", "--min-parents=2", "--count", f"{base}..{head}").strip())

    def has_commit(self, sha: str) -> bool:
        """Whether the commit ``sha`` is in this copy."""
        return self.run("cat-file", "-e", f"{sha}^{{commit}}")[0] == 0

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether ``ancestor`` is in the history of ``descendant`` (or is it)."""
        return self.run("merge-base", "--is-ancestor", ancestor, descendant)[0] == 0

    def changed_paths(self, base: str, tip: str) -> list[str]:
        """The files that differ between the commits ``base`` and ``tip`` (no rename detection).

        Read tree by tree through the long-lived reader (:meth:`_tree_diff`), else by
        ``diff-tree``, run without an index (it would expand a sparse one to every path). Between
        two commits named by sha the answer never changes: the last few are remembered."""
        key = (base, tip)
        if key in self._changed:
            return list(self._changed[key])
        found = self._tree_diff(f"{base}^{{tree}}", f"{tip}^{{tree}}", "", [64])
        if found is None:
            status, out, err = self.run("diff-tree", "-r", "--name-only", "--no-renames", base,
                                        tip, index=str(self.path / ".git" / "distribute-no-index"))
            if status != 0:
                raise RemoteError(f"git diff-tree failed: {err.strip()}")
            found = out.splitlines()
        if _SHA.match(base) and _SHA.match(tip):
            if len(self._changed) >= 16:
                self._changed.pop(next(iter(self._changed)))
            self._changed[key] = found
        return list(found)

    def _tree_diff(self, old: Optional[str], new: Optional[str], prefix: str,
                   budget: list[int]) -> Optional[list[str]]:
        """:meth:`changed_paths` between the trees ``old`` and ``new`` (``None``: none), read
        through the long-lived reader, descending only into subtrees that differ; ``None`` when
        a tree could not be read that way or more than ``budget`` trees would be read (then
        ``diff-tree`` is asked)."""
        trees: list[dict[bytes, tuple[bytes, bytes]]] = []
        for tree in (old, new):
            if tree is None:
                trees.append({})
                continue
            budget[0] -= 1
            answer = self.cat(tree, contents=True)
            if budget[0] < 0 or answer is None or answer[0] is None or answer[0][1] != "tree":
                return None
            trees.append(parse_tree(answer[1]))
        changed: list[str] = []
        for entry in sorted(set(trees[0]) | set(trees[1])):
            a, b = trees[0].get(entry), trees[1].get(entry)
            if a == b:
                continue
            path = prefix + entry.decode("utf-8", "surrogateescape")
            subtrees = [e[1].hex() if e is not None and e[0] == TREE_MODE else None for e in (a, b)]
            if subtrees != [None, None]:
                below = self._tree_diff(subtrees[0], subtrees[1], path + "/", budget)
                if below is None:
                    return None
                changed += below
            if any(e is not None and e[0] != TREE_MODE for e in (a, b)):
                changed.append(path)
        return changed

    # ---- trees --------------------------------------------------------------------------------
    def tree_names(self, rev: str) -> list[str]:
        """The names of the top-level entries of ``rev``'s tree."""
        return self.git("ls-tree", "--name-only", rev).splitlines()

    def tree_entries(self, treeish: str) -> Optional[list[TreeEntry]]:
        """The entries of the tree ``treeish`` (e.g. ``HEAD:done``; paths relative to it, not
        recursive); ``None`` if there is no such tree."""
        answer = self.cat(treeish, contents=True)
        if answer is not None and (answer[0] is None or answer[0][1] == "tree"):
            entries = _tree_listing(answer[1]) if answer[0] is not None else None
            if answer[0] is None or entries is not None:
                return entries
        status, out, _ = self.run("ls-tree", "--full-tree", treeish)
        if status != 0:
            return None
        return [e for e in map(_tree_entry, out.splitlines()) if e is not None]

    def files_under(self, rev: str, paths: Sequence[str]) -> list[TreeEntry]:
        """Every file (recursively) of ``rev`` under ``paths`` (directories end with ``/``), with
        its path from the top of the tree. Reads trees only: never fetches a file."""
        out = self.git("ls-tree", "-r", "-z", rev, "--", *paths)
        return [e for e in map(_tree_entry, out.split("\0")) if e is not None]

    # ---- objects ------------------------------------------------------------------------------
    def object_sizes(self, shas: Sequence[str]) -> dict[str, int]:
        """``{sha: size in bytes}`` of the objects ``shas`` (missing ones are left out)."""
        out = self.run("cat-file", "--batch-check=%(objectname) %(objectsize)",
                       stdin="".join(s + "\n" for s in shas))[1]
        return {sha: int(n) for sha, _, n in (line.partition(" ") for line in out.splitlines())
                if n.isdigit()}

    def read_objects(self, shas: Sequence[str]) -> dict[str, bytes]:
        """``{sha: content}`` of the objects ``shas`` from one git process (those git cannot
        read are left out). In a partial copy git fetches missing ones one by one: fetch them
        first (:meth:`~distribute.repo.transport.Transport.fetch_objects`)."""
        _, out, _ = self.run_bytes("cat-file", "--batch",
                                   stdin="".join(s + "\n" for s in shas).encode())
        found: dict[str, bytes] = {}
        pos = 0
        for sha in shas:
            end = out.find(b"\n", pos)
            if end < 0:
                break
            header = out[pos:end].split()
            pos = end + 1
            if len(header) < 3:
                continue
            size = int(header[2])
            found[sha] = out[pos:pos + size]
            pos += size + 1
        return found

    def missing_objects(self, rev: str, paths: Sequence[str], *, trees_only: bool = False
                        ) -> list[str]:
        """The objects of ``rev`` under ``paths`` that a partial copy lacks (only trees if
        ``trees_only``). Never fetches."""
        kinds = ["--filter=blob:none"] if trees_only else []  # (then only missing trees show)
        out = self.run("rev-list", "--objects", "--missing=print", *kinds, "--no-walk", rev,
                       "--", *paths)[1]
        return [line[1:41] for line in out.splitlines() if line.startswith("?")]

    def is_shallow(self) -> bool:
        """Whether the copy's history is cut short (a slim clone's: ``master``'s last commits)."""
        return (self.path / ".git" / "shallow").exists()

    def is_partial(self) -> bool:
        """Whether the copy is a partial clone (git fetches missing files from ``origin``)."""
        return self.run("config", "--get", "remote.origin.promisor")[1].strip() == "true"
