"""Pushing from a slim copy over smart HTTP without fetching the remote's trees one by one.

A slim copy is shallow, and partial when the server allows it. Over smart HTTP every push sends
a thin pack (``git-remote-http`` always asks ``send-pack`` for one; ``--no-thin`` is not passed
on), and a thin pack from a shallow repository makes ``pack-objects`` walk the whole tree of
each remote tip it has (``--objects-edge-aggressive``). In a partial copy each tree it lacks is
then fetched on its own: one request per directory of job results, hours at 100 000 jobs.

So a slim copy over smart HTTP pushes from a sibling git directory, ``.git/distribute-push``,
that borrows the copy's objects (``objects/info/alternates``) and is neither shallow nor
partial: ``pack-objects`` then takes the cheap walk, and a tree it lacks is skipped, never
fetched. The sibling keeps only how to reach the host (``origin``'s URL, ``http.*``,
``credential.*``, ``url.*``... copied from the copy's config whenever that changes) and no
refs; after a push, the copy's tracking refs are moved as ``git push`` would have moved them.
A push the sibling cannot pack (an object it would have to send is missing: only a fetch could
bring it) runs in the copy itself, as before.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Callable, Optional

from ..redact import redact
from .porcelain import applied_refs

log = logging.getLogger(__name__)

#: The sibling git directory's name, inside the copy's ``.git``.
SIBLING = "distribute-push"
#: The copy's settings the sibling keeps: how to reach and authenticate to the host.
_CARRIED = re.compile(r"^(remote\.origin\.(url|pushurl|proxy\w*|http\w*|receivepack)"
                      r"|http\..*|credential\..*|url\..*|core\.(askpass|sshcommand)"
                      r"|protocol\..*|user\..*)$", re.IGNORECASE)
#: What ``git push`` says when ``pack-objects`` lacked an object the pack needs.
_PACK_FAILED = re.compile(r"pack-objects died|unable to read|bad object|missing (tree|blob|"
                          r"commit)|could not (read|parse)|did not send all necessary objects")

#: Runs ``git *args`` in the copy (``stdin`` its input): ``(status, stdout, stderr)``.
Runner = Callable[..., "tuple[int, str, str]"]


class PushDir:
    """The sibling git directory of one copy (see the module's docstring)."""

    def __init__(self, git_dir: Path) -> None:
        self.copy_git = git_dir
        self.path = git_dir / SIBLING
        self._lock = threading.Lock()
        #: The copy config's (mtime, size) the sibling was last set up from.
        self._seen: Optional[tuple[int, int]] = None
        #: The copy's fetch refspecs of ``origin`` (``(source pattern, tracking pattern)``).
        self._refspecs: list[tuple[str, str]] = []

    @staticmethod
    def wanted(git_dir: Path, url: Optional[str]) -> bool:
        """Whether pushes of the copy at ``git_dir`` to ``url`` should run in the sibling: the
        copy is shallow and the remote speaks smart HTTP (where every push pack is thin)."""
        return bool(url) and str(url).lower().startswith(("http://", "https://")) and \
            (git_dir / "shallow").exists()

    def options(self, run: Runner) -> Optional[list[str]]:
        """The git options that make a push run in the sibling (``--git-dir=...``), setting it
        up first if the copy's config changed; ``None`` when it could not be set up (the push
        then runs in the copy)."""
        with self._lock:
            try:
                stat = (self.copy_git / "config").stat()
                seen = (stat.st_mtime_ns, stat.st_size)
                if seen != self._seen or not (self.path / "config").exists():
                    self._set_up(run)
                    self._seen = seen
            except OSError as exc:
                log.info("pushing from the copy itself (%s)", exc)
                return None
        return [f"--git-dir={self.path}"]

    def _set_up(self, run: Runner) -> None:
        status, out, err = run("config", "--local", "--null", "--list")
        if status != 0:
            raise OSError(f"could not read the copy's config: {err.strip()[-200:]}")
        entries = [item.partition("\n") for item in out.split("\0") if item]
        lines = ["[core]\n\trepositoryformatversion = 0\n\tbare = true\n"]
        lines += [_entry(key, value) for key, _, value in entries if _CARRIED.match(key)]
        self._refspecs = [_refspec(value) for key, _, value in entries
                          if key.lower() == "remote.origin.fetch" and ":" in value]
        for part in ("objects/info", "refs/heads"):
            (self.path / part).mkdir(parents=True, exist_ok=True)
        _write(self.path / "HEAD", "ref: refs/heads/master\n")
        _write(self.path / "objects/info/alternates", f"{(self.copy_git / 'objects').resolve()}\n")
        _write(self.path / "config", "".join(lines))  # (a push may be reading the old one)

    def push(self, args: list[str], run: Runner) -> tuple[int, str, str]:
        """Run ``git *args`` (a push of ids, not names: the sibling has no refs) from the sibling,
        then move the copy's tracking refs; from the copy itself when the sibling could not be
        set up or could not pack it (then nothing was applied: the server refuses a cut pack)."""
        options = self.options(run)
        if options is None:
            return run(*args)
        status, out, err = run(*options, *args)
        if status != 0 and not any(line.startswith("!") for line in out.splitlines()) and \
                _PACK_FAILED.search(err):
            log.info("pushing from the copy itself: %s", redact(err.strip()[-300:]))
            return run(*args)
        self.track(out, run)
        return status, out, err

    def track(self, porcelain: str, run: Runner) -> None:
        """Move the copy's tracking refs of the refs the push applied, as ``git push`` moves
        them in the copy it runs in (through ``origin``'s fetch refspecs)."""
        commands = []
        for ref, sha in applied_refs(porcelain).items():
            tracking = self._tracking_ref(ref)
            if tracking is not None:
                commands.append(f"update {tracking} {sha}\n" if sha else f"delete {tracking}\n")
        if commands:
            status, _, err = run("update-ref", "--stdin", stdin="".join(commands))
            if status != 0:
                log.debug("could not move tracking refs after a push: %s", err.strip()[-200:])

    def _tracking_ref(self, ref: str) -> Optional[str]:
        for source, tracking in self._refspecs:
            if "*" not in source:
                if ref == source:
                    return tracking
            else:
                head, _, tail = source.partition("*")
                if ref.startswith(head) and ref.endswith(tail) and len(ref) > len(head + tail):
                    return tracking.replace("*", ref[len(head):len(ref) - len(tail)], 1)
        return None


def _refspec(value: str) -> tuple[str, str]:
    source, _, tracking = value.lstrip("+").partition(":")
    return source, tracking


def _entry(key: str, value: str) -> str:
    """One config entry in git's file format (``key`` as ``git config --list`` names it)."""
    section, _, rest = key.partition(".")
    subsection, _, name = rest.rpartition(".")
    head = f'[{section} "{_quoted(subsection)}"]' if subsection else f"[{section}]"
    return f'{head}\n\t{name} = "{_quoted(value)}"\n'


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")


def _write(path: Path, text: str) -> None:
    """Replace ``path`` by a file holding ``text``, readable by its owner only (the config may
    hold the URL's credentials), in one rename: a reader sees the old or the new file."""
    staging = path.with_name(path.name + ".new")
    staging.write_text(text)
    os.chmod(staging, 0o600)
    os.replace(staging, path)
