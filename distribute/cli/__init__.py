"""The ``distribute`` command line (also ``python -m distribute``).

Exit codes: 0 success, 1 a failure the message explains, 2 bad usage. Errors are one or two plain
sentences on stderr (the traceback only with ``--debug``); secrets in URLs are always masked.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from typing import Optional, Sequence

from .. import settings
from ..exceptions import DistributeError
from ..redact import redact
from ..version import __version__
from .common import UsageError, drop_stdout

__all__ = ["main", "build_parser"]

#: The command modules, in the order ``distribute --help`` lists their commands. Each registers
#: its commands the same way: ``register(subparsers, parents)`` adds them with
#: :func:`.common.add_command`, which sets the handler ``func`` and ``_parser`` on each. (Imported
#: when the parser is built: ``python -m distribute.cli.vast`` must not find itself imported.)
COMMAND_MODULES: tuple[str, ...] = (
    "distribute.cli.commands", "distribute.cli.worker", "distribute.cli.vast", "distribute.cli.hub",
    "distribute.cli.maintenance", "distribute.cli.report", "distribute.cli.demo",
    "distribute.cli.fleet", "distribute.cli.doctor")


def _common(top: bool = False) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name.

    The main parser and the commands' parsers each get their own copy: the commands' options
    default to "not given" (``SUPPRESS``), so that ``distribute --debug status`` keeps the
    ``--debug`` the main parser saw instead of resetting it, and ``distribute status --debug``
    still sets it.
    """
    unset: dict[str, object] = {"env_file": None, "verbose": False, "debug": False}
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options (before or after the command)")
    g.add_argument("--env-file", metavar="FILE",
                   default=unset["env_file"] if top else argparse.SUPPRESS,
                   help="read settings from FILE instead of the .env found from here upward")
    g.add_argument("-v", "--verbose", action="store_true",
                   default=unset["verbose"] if top else argparse.SUPPRESS,
                   help="log what the worker does")
    g.add_argument("--debug", action="store_true",
                   default=unset["debug"] if top else argparse.SUPPRESS,
                   help="debug logging, and tracebacks on errors")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog="distribute", formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(top=True)],
        description="Run jobs on many machines with nothing shared but a git remote.",
        epilog="example:\n  git init --bare jobs.git && distribute init jobs.git && "
               "distribute add jobs.git a b c\n\nrun `distribute COMMAND --help` for each command")
    parser.add_argument("--version", action="version", version=f"git-distribute {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub, parents=[common])
    return parser


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _setup_logging(verbose: bool, debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(levelname)s: %(message)s" if not debug else
                                             "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)
    logging.getLogger("git").setLevel(logging.WARNING)  # GitPython's own chatter
    if not debug:  # the Hub client logs every HTTP request at INFO
        for name in ("httpx", "httpx2", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``distribute`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    _setup_logging(args.verbose, args.debug)
    try:
        settings.use_env_file(args.env_file)
        return int(args.func(args))
    except UsageError as exc:
        args._parser.error(redact(exc))  # exits 2
    except DistributeError as exc:
        _error(str(exc), args.debug)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `distribute status | head -3`: the reader has all it wanted
        drop_stdout()
        return 128 + 13  # what a shell shows for a process that SIGPIPE ended
    except Exception as exc:  # noqa: BLE001 - a bug or an environment problem: still one sentence
        _error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
               args.debug)
    return 1


def _error(message: str, debug: bool) -> None:
    if debug:
        print(redact(traceback.format_exc()), file=sys.stderr)
    print(redact(f"error: {message}"), file=sys.stderr, flush=True)
