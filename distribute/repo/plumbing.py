"""Changing the local copy: objects, refs, the index and the work tree, by name (no network).

:class:`Plumbing` is a base of :class:`~distribute.repo.clone.Clone`; the layers above call these
methods instead of spelling git command lines. A failure raises
:class:`~distribute.exceptions.RemoteError` unless the method says otherwise.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator, NamedTuple, Optional, Sequence

from ..exceptions import DistributeError, RemoteError
from ..redact import redact
from .loose import commit_content, plain_identity
from .process import GitProcess
from .reading import ObjectReader

#: The tree without entries (the same in every SHA-1 repository; written by ``make_marker``).
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
#: One commit of the copy in this many lets git's automatic maintenance run (``gc --auto``).
MAINTAIN_EVERY = 50


class IndexEntry(NamedTuple):
    """One entry of an index: ``mode``, blob ``sha`` and ``path``."""

    mode: str
    sha: str
    path: str


class ScratchIndex:
    """An index file of its own (``GIT_INDEX_FILE``) for building a tree from another one: the
    copy's index and work tree are left alone. Made by :meth:`Plumbing.scratch_index`."""

    def __init__(self, git: GitProcess, path: str) -> None:
        self._git = git
        self.path = path

    def read_tree(self, rev: str) -> None:
        """Fill the index with the tree of ``rev``."""
        status, _, err = self._git.run("read-tree", rev, index=self.path)
        if status != 0:
            raise RemoteError(f"git read-tree failed: {err.strip()}")

    def entries(self, directory: str) -> list[IndexEntry]:
        """The entries under ``directory`` (ending with ``/``)."""
        out = self._git.run("ls-files", "-s", "-z", "--", directory, index=self.path)[1]
        found = []
        for record in filter(None, out.split("\0")):
            meta, _, path = record.partition("\t")
            mode, sha, _ = meta.split()
            found.append(IndexEntry(mode, sha, path))
        return found

    def update(self, entries: Sequence[IndexEntry]) -> None:
        """Set ``entries``; an entry of mode ``0`` removes its path."""
        lines = "".join(f"{e.mode} {e.sha}\t{e.path}\n" for e in entries)
        status, _, err = self._git.run("update-index", "--index-info", index=self.path,
                                       stdin=lines)
        if status != 0:
            raise RemoteError(f"git update-index failed: {err.strip()}")

    def write_tree(self) -> str:
        """Write the index's tree; its sha."""
        return self._git.run("write-tree", index=self.path)[1].strip()


class Plumbing(ObjectReader):
    """Named operations that write objects and refs, or change the index and the work tree."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._commits = 0  # (commits made: see MAINTAIN_EVERY)
        self._sign: Optional[bool] = None  # (commit.gpgSign, once read)

    # ---- objects and refs ---------------------------------------------------------------------
    def write_blob(self, text: str) -> str:
        """Store ``text`` as a blob; its sha."""
        return self.run("hash-object", "-w", "--stdin", stdin=text)[1].strip()

    def hash_object(self, path: str, kind: str = "blob") -> str:
        """Store the file ``path`` as an object of ``kind`` exactly as it is (no filters, e.g. a
        tree in its binary form); its sha."""
        return self.git("hash-object", "-t", kind, "-w", "--no-filters", "--", path).strip()

    def write_tree(self) -> str:
        """Write the tree of the copy's index; its sha.

        A sparse copy's tree is written by ``git commit`` (HEAD put back after): git 2.39's
        ``write-tree`` first expands a sparse index to every path of the tree, and a partial copy
        then fetches each directory it lacks on its own (one request per results directory)."""
        if not (self.path / ".git" / "info" / "sparse-checkout").exists():
            return self.git("write-tree").strip()
        head = self.git("rev-parse", "--verify", "HEAD").strip()
        branch = self.run("symbolic-ref", "--quiet", "HEAD")[1].strip()
        self.git("-c", "core.hooksPath=/dev/null", "-c", "commit.gpgSign=false", "commit",
                 "--quiet", "--no-verify", "--allow-empty", "--no-edit", "-m", "index")
        commit = self.git("rev-parse", "HEAD").strip()
        self.git("update-ref", "-m", "distribute: index tree", *([branch] if branch else [
            "--no-deref", "HEAD"]), head, commit)
        return self.git("rev-parse", f"{commit}^{{tree}}").strip()

    def commit_tree(self, tree: str, message: str, parents: Sequence[str] = ()) -> str:
        """Make a commit of ``tree`` with ``message`` and ``parents`` (none: a root commit),
        without touching the index, the work tree or any ref; its sha."""
        written = self._write_commit(tree, message, parents)
        if written is not None:
            return written
        args = ["commit-tree", tree]
        for parent in parents:
            args += ["-p", parent]
        return self.git(*args, "-m", message).strip()

    def _write_commit(self, tree: str, message: str, parents: Sequence[str]) -> Optional[str]:
        """:meth:`commit_tree` without a git process (:mod:`.loose`), when it writes what git
        would: ``tree`` and ``parents`` exist here, the identity is plain, commits are not signed
        (``commit.gpgSign``, read once); else ``None``."""
        identity = plain_identity(self._env)
        if identity is None or not message or self._signs():
            return None
        # (a marker's empty tree is not asked about: the lock's renewal, in a thread of its own,
        # never waits for the reader, which a read of a missing object may keep busy)
        named = [(tree, "tree")] if tree != EMPTY_TREE else []
        named += [(parent, "commit") for parent in parents]
        answers = [self.cat(name) for name, _ in named]
        if any(answer is None or answer[0] is None or answer[0][1] != kind
               for answer, (_, kind) in zip(answers, named)):
            return None  # (git says why)
        shas = [answer[0][0] for answer in answers if answer is not None and answer[0]]
        if tree == EMPTY_TREE:
            shas.insert(0, self.store("tree", b"") or EMPTY_TREE)  # (there, written if not)
        return self.store("commit", commit_content(shas[0], shas[1:], message, identity))

    def _signs(self) -> bool:
        if self._sign is None:
            self._sign = self.run("config", "--bool", "--get", "commit.gpgSign")[1].strip() \
                == "true"
        return self._sign

    def update_ref(self, ref: str, new: str, old: Optional[str] = None) -> None:
        """Point the local ``ref`` at ``new``; if ``old`` is given, only if it points there now."""
        self.git("update-ref", ref, new, *([old] if old is not None else []))

    # ---- the work tree ------------------------------------------------------------------------
    def checkout_detached(self, rev: str, *, force: bool = False) -> None:
        """Check out ``rev`` with a detached ``HEAD`` (``force``: dropping local changes)."""
        self.git("checkout", "--quiet", *(["--force"] if force else []), "--detach", rev)

    def checkout_orphan(self, branch: str) -> None:
        """Start the new branch ``branch`` without history (the index keeps what it holds)."""
        self.git("checkout", "--quiet", "--orphan", branch)

    def checkout_branch_at(self, branch: str, start: str) -> None:
        """Check out the local ``branch``, created at (or moved to) ``start``."""
        self.git("checkout", "--quiet", "-B", branch, start)

    def force_checkout(self, rev: str) -> bool:
        """Check out ``rev`` (a branch stays attached) dropping local changes; ``False`` if git
        refused (nothing is raised)."""
        return self.run("checkout", "--quiet", "--force", rev)[0] == 0

    def rename_branch(self, new: str) -> None:
        """Rename the checked-out branch to ``new`` (replacing a local branch of that name)."""
        self.git("branch", "--quiet", "-M", new)

    def reset_hard(self, rev: str) -> None:
        """Move the checked-out ``HEAD`` to ``rev``, index and work tree too."""
        self.git("reset", "--quiet", "--hard", rev)

    def clean_untracked(self) -> list[str]:
        """Delete untracked files and directories (not ignored ones); git's lines saying which
        (``Removing <path>``)."""
        return self.git("clean", "-fd").splitlines()

    def uncommitted_paths(self) -> list[str]:
        """The paths whose work-tree or index state differs from ``HEAD``, untracked files
        included (no rename detection)."""
        out = self.git("status", "--porcelain", "--untracked-files=all", "--no-renames", "-z")
        return [entry[3:] for entry in out.split("\0") if entry]

    def clean_at(self, sha: str) -> bool:
        """Whether ``HEAD`` is detached at the commit ``sha`` with nothing changed and no
        untracked file (ignored ones aside): checking ``sha`` out and cleaning would change
        nothing. One ``git status``."""
        try:
            head = (self.path / ".git" / "HEAD").read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return False
        return head == sha and not self.uncommitted_paths()

    def add_paths(self, *paths: str) -> None:
        """Stage ``paths``."""
        self.git("add", "--", *paths)

    def commit_index(self, message: str, *, amend: bool = False) -> bool:
        """Commit the index with ``message``; ``False`` if there was nothing to commit. ``amend``
        replaces the last commit (keeping its parents) instead. A failure raises
        :class:`~distribute.exceptions.DistributeError` (not a remote's: retrying cannot help)."""
        # git runs `maintenance run --auto` after every commit (a process of its own, ~2 ms):
        # let one commit in MAINTAIN_EVERY do it (it acts only past thousands of loose objects)
        self._commits += 1
        quiet = [] if self._commits % MAINTAIN_EVERY == 1 else ["-c", "maintenance.auto=false"]
        status, out, err = self.run(*quiet, "commit", "--quiet", *(["--amend"] if amend else []),
                                    "-m", message)
        if status != 0 and "nothing" in out + err:
            return False
        if status != 0:
            raise DistributeError(redact(f"git commit failed: {err.strip() or out.strip()}"))
        return True

    @contextmanager
    def scratch_index(self) -> Iterator[ScratchIndex]:
        """An empty index of its own, removed afterwards (see :class:`ScratchIndex`)."""
        with tempfile.TemporaryDirectory(prefix="distribute-index-") as tmp:
            yield ScratchIndex(self, os.path.join(tmp, "index"))

    # ---- merging and replaying ----------------------------------------------------------------
    def merge_no_commit(self, rev: str) -> Optional[str]:
        """Merge ``rev`` into ``HEAD`` (``--no-ff``) and leave the merge to be committed; ``None``
        on success, else git's error (the merge is left in progress: see
        :meth:`conflicted_paths`, :meth:`abort_merge`)."""
        status, _, err = self.run("merge", "--no-ff", "--no-commit", "--quiet", rev)
        return None if status == 0 else err

    def conflicted_paths(self) -> list[str]:
        """The paths a merge in progress could not merge."""
        return self.git("diff", "--name-only", "--diff-filter=U").splitlines()

    def abort_merge(self) -> None:
        """Abort a merge in progress (nothing is raised if there is none)."""
        self.run("merge", "--abort")

    def rebase_onto(self, new_base: str, upstream: str) -> Optional[str]:
        """Replay the commits ``upstream..HEAD`` on ``new_base``; ``None`` on success, else git's
        error (the rebase was aborted: ``HEAD`` is where it was)."""
        status, _, err = self.run("rebase", "--quiet", "--onto", new_base, upstream)
        if status == 0:
            return None
        self.run("rebase", "--abort")
        return err

    # ---- exporting ----------------------------------------------------------------------------
    def archive_tar(self, rev: str, paths: Sequence[str], output: str) -> None:
        """Write the files of ``rev`` under ``paths`` to the tar file ``output``
        (``.gitattributes`` export rules apply)."""
        self.git("archive", "--format=tar", f"--output={output}", rev, "--", *paths)
