"""Helpers shared by the commands: registering a command, errors, the remote argument, the cache
clone, function specs."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import logging
import os
import re
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from .. import settings
from ..connect import normalize_url, worker_from_url
from ..exceptions import DistributeError, LocalCopyError
from ..protocol import short_host
from ..redact import redact
from ..worker import Worker

log = logging.getLogger(__name__)
_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")


class UsageError(Exception):
    """Bad command-line usage (exit code 2); the message is shown with the command's usage."""


#: A command's handler: called with the parsed arguments, returns the exit code.
Handler = Callable[[argparse.Namespace], int]


def add_command(subparsers: Any, name: str, help_: str, func: Handler,
                parents: Sequence[argparse.ArgumentParser] = (), *, epilog: Optional[str] = None,
                description: Optional[str] = None, usage: Optional[str] = None
                ) -> argparse.ArgumentParser:
    """Add the command ``name`` to ``subparsers`` and return its parser: how every command module
    registers its commands (each module has ``register(subparsers, parents)``).

    ``help_`` is its line in ``distribute --help`` and, with a full stop, its description unless
    ``description`` is given; ``epilog`` (examples) is shown as written; ``parents`` give the
    common options. ``func`` and ``_parser`` (which reports a :class:`UsageError`) are set as the
    parser's defaults: :func:`distribute.cli.main` calls ``args.func(args)``.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_, description=description or help_ + ".", epilog=epilog, usage=usage,
        parents=list(parents), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func, _parser=p)
    return p


def add_remote_argument(p: argparse.ArgumentParser) -> None:
    """The optional ``REMOTE`` argument of most commands (default: ``DISTRIBUTE_REMOTE``)."""
    p.add_argument("remote", nargs="?", metavar="REMOTE",
                   help="git URL of the shared remote (default: DISTRIBUTE_REMOTE)")


def say(*parts: object) -> None:
    """Print one line to stdout, redacted and flushed (other processes wait for these lines)."""
    print(redact(" ".join(str(p) for p in parts)), flush=True)


def say_anyway(*parts: object) -> None:
    """:func:`say` for a long-running worker: when nobody reads its standard output any more
    (``distribute worker … | head``), the lines are dropped from then on and the worker goes on
    with its jobs, instead of stopping in the middle of one."""
    try:
        say(*parts)
    except BrokenPipeError:
        drop_stdout()
        log.warning("standard output was closed: progress lines are dropped from now on")


def drop_stdout() -> None:
    """Point standard output at ``/dev/null``: after a broken pipe, so that later prints and the
    interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def resolve_remote(given: Optional[str]) -> str:
    """The REMOTE argument, else ``DISTRIBUTE_REMOTE``; a usage error when neither is set.

    A path on this machine (``jobs.git``, ``./jobs.git``, ``~/jobs.git``) comes back absolute
    (:func:`distribute.connect.normalize_url`), so it names the same repository from anywhere.
    """
    url = given or settings.get_env("DISTRIBUTE_REMOTE")
    if not url:
        raise UsageError("no remote given: pass REMOTE or set DISTRIBUTE_REMOTE "
                         "(in the environment or a .env file)")
    return normalize_url(url)


def looks_like_remote(text: str) -> bool:
    """True for ``scheme://...``, ``user@host:path`` and existing directories (bare repos)."""
    return ("://" in text or bool(_SCP_LIKE.match(text))
            or Path(text).expanduser().is_dir())


def split_remote_and_jobs(words: list[str]) -> tuple[str, list[str]]:
    """``[REMOTE] [JOB ...]``: the first word is the remote unless DISTRIBUTE_REMOTE is set and the
    first word does not look like a remote (then every word is a job)."""
    default = settings.get_env("DISTRIBUTE_REMOTE")
    if words and (not default or looks_like_remote(words[0])):
        return resolve_remote(words[0]), words[1:]
    return resolve_remote(None), list(words)


def cache_dir() -> Path:
    """``DISTRIBUTE_CACHE_DIR`` (default: :data:`~distribute.settings.SETTINGS`), expanded."""
    return Path(settings.text_setting("DISTRIBUTE_CACHE_DIR") or ".").expanduser()


@contextlib.contextmanager
def cache_worker(url: str) -> Iterator[Worker]:
    """A :class:`Worker` named ``cli-<host>-<random>`` on the cached clone of ``url``.

    The clone lives in ``<cache dir>/<sha256(url)[:16]>`` and is reused by later commands, with
    the lease clocks its commands observed (``requeue --stale`` relies on them). When it is in
    use by another command right now (or unusable), a throw-away clone in a temporary directory
    is used instead.
    """
    url = normalize_url(url)
    name = f"cli-{short_host()}-{uuid.uuid4().hex[:6]}"
    path = cache_dir() / hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    try:
        worker = worker_from_url(url, path, name)
    except LocalCopyError:
        with tempfile.TemporaryDirectory(prefix="distribute-cli-") as tmp:
            worker = worker_from_url(url, Path(tmp) / "clone", name)
            try:
                yield worker
            finally:
                worker.close()
        return
    observations = path / ".git" / "distribute-observed.json"
    worker.observer.load(observations)
    try:
        yield worker
    finally:
        worker.observer.save(observations)
        worker.close()


def load_function(spec: str, option: str) -> Callable[..., Any]:
    """Import ``MODULE:FUNCTION`` (the current directory is on ``sys.path``).

    A malformed spec is a :class:`UsageError`; a module that cannot be imported or a missing or
    non-callable attribute is a :class:`DistributeError`.
    """
    if not _SPEC.match(spec or ""):
        raise UsageError(f"{option} wants MODULE:FUNCTION (like mypkg.jobs:run), not {spec!r}")
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import-time failure is the user's module
        raise DistributeError(f"{option} {spec}: cannot import module {module_name!r} "
                              f"({type(exc).__name__}: {exc})") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DistributeError(f"{option} {spec}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise DistributeError(f"{option} {spec}: {attr!r} is not callable")
    return obj  # type: ignore[no-any-return]


def read_job_file(path: str) -> list[str]:
    """Non-blank lines of ``path`` (``-`` reads standard input), surrounding blanks removed."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DistributeError(f"cannot read jobs from {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DistributeError(f"cannot read jobs from {path}: it is not UTF-8 text") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def plural(n: int, word: str) -> str:
    """``1 job``, ``3 jobs``, ``2 branches``, ``2 directories``."""
    if n == 1:
        return f"{n} {word}"
    if word.endswith(("s", "sh", "ch", "x")):
        return f"{n} {word}es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return f"{n} {word[:-1]}ies"
    return f"{n} {word}s"
