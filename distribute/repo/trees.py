"""Editing trees without an index: replacing one directory deep in a tree costs O(depth).

A commit on a big remote should not rewrite an index of every path it holds. With results sharded
(``updates/<ab>/<cd>/<slug>/``), putting a job's directory into a tree rewrites four small trees;
:func:`splice` does that with two git processes whatever the size of the repository.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Optional, Sequence

from ..exceptions import RemoteError
from .process import GitProcess

TREE_MODE = b"40000"


def parse_tree(data: bytes) -> dict[bytes, tuple[bytes, bytes]]:
    """``{name: (mode, binary sha)}`` of a tree object's content."""
    entries: dict[bytes, tuple[bytes, bytes]] = {}
    i = 0
    while i < len(data):
        space = data.index(b" ", i)
        nul = data.index(b"\0", space)
        entries[data[space + 1:nul]] = (data[i:space], data[nul + 1:nul + 21])
        i = nul + 21
    return entries


def _serialise(entries: dict[bytes, tuple[bytes, bytes]]) -> bytes:
    """A tree object's content, entries in git's order (directories sort as ``name/``)."""
    order = sorted(entries, key=lambda n: n + (b"/" if entries[n][0] == TREE_MODE else b""))
    return b"".join(entries[n][0] + b" " + n + b"\0" + entries[n][1] for n in order)


def _tree_sha(content: bytes) -> bytes:
    return hashlib.sha1(b"tree %d\0" % len(content) + content).digest()


def read_levels(git: GitProcess, rev: str, path: str) -> list[Optional[bytes]]:
    """The contents of the trees on the way to ``path`` in ``rev``: the root tree, then each
    directory above ``path`` (``None`` where it does not exist)."""
    parts = path.split("/")
    specs = [f"{rev}^{{tree}}"] + [f"{rev}:{'/'.join(parts[:i])}" for i in range(1, len(parts))]
    answers = [git.cat(spec, contents=True) for spec in specs]
    if all(answer is not None for answer in answers):
        return [content if header is not None and header[1] == "tree" else None
                for header, content in filter(None, answers)]
    status, out, err = git.run_bytes("cat-file", "--batch",
                                     stdin="".join(s + "\n" for s in specs).encode("utf-8"))
    if status != 0:
        raise RemoteError(f"git cat-file failed: {err.strip()}")
    levels: list[Optional[bytes]] = []
    pos = 0
    for _ in specs:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if len(header) == 2 and header[1] == b"missing" or len(header) < 3:
            levels.append(None)
            continue
        size = int(header[2])
        levels.append(out[pos:pos + size] if header[1] == b"tree" else None)
        pos += size + 1
    return levels


def splice(git: GitProcess, rev: str, path: str, subtree: Optional[str], blob: bool = False) -> str:
    """The root tree of ``rev`` with the directory ``path`` replaced by the tree ``subtree`` (hex;
    ``None`` removes it, and directories left empty go too), or with the file ``path`` replaced
    by the blob ``subtree`` when ``blob``. The new trees are written."""
    parts = path.encode("utf-8").split(b"/")
    levels = read_levels(git, rev, path)
    child: Optional[bytes] = bytes.fromhex(subtree) if subtree else None
    mode = b"100644" if blob else TREE_MODE
    written: list[bytes] = []
    for depth in range(len(parts) - 1, -1, -1):
        level = levels[depth]
        entries = parse_tree(level) if level is not None else {}
        if child is None:
            entries.pop(parts[depth], None)
        else:
            entries[parts[depth]] = (mode, child)
        mode = TREE_MODE
        if not entries and depth > 0:
            child = None
            continue
        content = _serialise(entries)
        written.append(content)
        child = _tree_sha(content)
    _write_trees(git, written)
    assert child is not None
    return child.hex()


def _write_trees(git: GitProcess, contents: list[bytes]) -> None:
    """Write tree objects (directly, else one git process for all of them)."""
    if all(git.store("tree", content) is not None for content in contents):
        return
    with tempfile.TemporaryDirectory(prefix="distribute-trees-") as tmp:
        paths = []
        for i, content in enumerate(contents):
            paths.append(os.path.join(tmp, str(i)))
            with open(paths[-1], "wb") as f:
                f.write(content)
        status, _, err = git.run("hash-object", "-w", "-t", "tree", "--stdin-paths",
                                 stdin="".join(p + "\n" for p in paths))
        if status != 0:
            raise RemoteError(f"git hash-object failed: {err.strip()}")


def tree_of_directory(git: GitProcess, directory: str,
                      leave_out: Sequence[str] = ()) -> Optional[str]:
    """The tree of the directory ``directory`` as it is on disk (``None`` if it holds no file;
    ``.gitignore`` rules inside it apply), built in a temporary index so that the copy's own index
    is left alone. ``directory`` may lie anywhere. The files ``leave_out`` (paths relative to
    ``directory``) are not in the tree."""
    if not _holds_files(directory):
        return None  # (what git would find: no process needed)
    parent, name = os.path.split(os.path.abspath(directory))
    excluded = [f":(exclude,literal){name}/{rel}" for rel in leave_out]
    with tempfile.TemporaryDirectory(prefix="distribute-index-") as tmp:
        index = os.path.join(tmp, "index")
        status, _, err = git.run(f"--work-tree={parent}", "-c", "core.sparseCheckout=false", "add",
                                 "--all", "--", name, *excluded, index=index)
        if status != 0 and "did not match any files" not in err:
            raise RemoteError(f"git add failed: {err.strip()}")
        status, out, _ = git.run("write-tree", f"--prefix={name}/", index=index)
        return out.strip() if status == 0 and out.strip() else None


def _holds_files(directory: str) -> bool:
    """Whether ``directory`` holds anything but directories (a file, a link…), at any depth."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True  # (git says what is wrong)
    return any(not entry.is_dir(follow_symlinks=False) or _holds_files(entry.path)
               for entry in entries)


def add_files(git: GitProcess, rev: str, directory: str, files: dict[str, str]) -> str:
    """The root tree of ``rev`` (a commit or a tree) with the blobs ``files`` (``{name: hex}``)
    put into ``directory`` (created if absent) beside what it holds. The new trees are written."""
    level = read_levels(git, rev, f"{directory}/-")[-1]
    entries = parse_tree(level) if level is not None else {}
    for name, blob in files.items():
        entries[name.encode("utf-8")] = (b"100644", bytes.fromhex(blob))
    content = _serialise(entries)
    _write_trees(git, [content])
    return splice(git, rev, directory, _tree_sha(content).hex())
