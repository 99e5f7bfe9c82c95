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
from ..connect import create_from_config
from ..exceptions import DistributeError
from ..loop import LoopResult, run_worker_loop
from ..redact import redact
from ..version import __version__
from .common import UsageError, drop_stdout, load_function, resolve_remote, say, say_anyway

__all__ = ["main", "build_parser", "run_worker_loop", "LoopResult", "load_function"]

#: Modules whose ``register(subparsers, parents)`` adds more commands (e.g. "distribute.cli.hub").
EXTRA_COMMANDS: tuple[str, ...] = ("distribute.cli.vast", "distribute.cli.hub",
                                   "distribute.cli.maintenance", "distribute.cli.report")
R = argparse.RawDescriptionHelpFormatter
URL = "file:///srv/jobs.git"
EXAMPLES = {
    "init": f"example:\n  distribute init {URL} --jobs jobs.txt",
    "add": f"examples:\n  distribute add {URL} job-1 job-2\n"
           f"  seq 100 | distribute add {URL} --file -\n"
           "  DISTRIBUTE_REMOTE=... distribute add job-3   # jobs only, the remote from the setting",
    "status": f"examples:\n  distribute status {URL}\n  distribute status {URL} --json\n"
              f"  distribute status {URL} --watch 5      # refresh every 5s, Ctrl-C to stop",
    "worker": f"examples:\n  distribute worker {URL} --run myjobs:run --idle-exit\n"
              "  DISTRIBUTE_REMOTE=... DISTRIBUTE_RUN=myjobs:run distribute worker\n\n"
              "myjobs.py:\n  def run(job, worker):\n"
              "      Path(worker.job_dir, 'result.txt').write_text(compute(job))",
    "requeue": f"examples:\n  distribute requeue {URL} job-7 job-9   # running or failed jobs\n"
               f"  distribute requeue {URL} --stale         # jobs of silent workers",
    "unlock": f"examples:\n  distribute unlock {URL}            # who holds the lock?\n"
              f"  distribute unlock {URL} --force    # break it (its holder is dead)",
    "log": f"example:\n  distribute log {URL} -n 50",
    "config": "example:\n  distribute config --env-file prod.env",
    "demo": "examples:\n  distribute demo\n  distribute demo --dir /tmp/demo --jobs 40 --workers 6",
}


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


def _default(name: str) -> str:
    """Setting ``name``'s default as :data:`~distribute.settings.SETTINGS` shows it, for help."""
    return settings.setting_row(name).shown_default or "none"


def _remote(p: argparse.ArgumentParser) -> None:
    p.add_argument("remote", nargs="?", metavar="REMOTE",
                   help="git URL of the shared remote (default: DISTRIBUTE_REMOTE)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog="distribute", formatter_class=R, parents=[_common(top=True)],
        description="Run jobs on many machines with nothing shared but a git remote.",
        epilog="example:\n  git init --bare jobs.git && distribute init jobs.git && "
               "distribute add jobs.git a b c\n\nrun `distribute COMMAND --help` for each command")
    parser.add_argument("--version", action="version", version=f"git-distribute {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def cmd(name: str, help_: str, usage: Optional[str] = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_ + ".", epilog=EXAMPLES[name],
                           formatter_class=R, parents=[common], usage=usage)
        p.set_defaults(_parser=p)
        return p

    p = cmd("init", "create the job ledger on the remote's master (an empty bare repo is fine)")
    _remote(p)
    p.add_argument("--jobs", metavar="FILE", help="seed jobs.txt with the lines of FILE (- = stdin)")
    p = cmd("add", "append jobs to the queue (duplicates are reported and skipped)",
            usage="distribute add [REMOTE] [JOB ...] [--file FILE|-] [--allow-duplicates]")
    p.add_argument("words", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--file", metavar="FILE", help="add the lines of FILE (- = stdin)")
    p.add_argument("--allow-duplicates", action="store_true",
                   help="also add jobs that are queued, running or done")
    p = cmd("status", "show queued / running / done / failed jobs, the workers and the lock")
    _remote(p)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (schema in docs/cli.md)")
    p.add_argument("--watch", type=float, metavar="SECONDS",
                   help="refresh every SECONDS, with rate and ETA, until Ctrl-C")
    p = cmd("worker", "take jobs and run a function on each until told to stop")
    _remote(p)
    p.add_argument("--run", metavar="MODULE:FUNCTION",
                   help="called as FUNCTION(job, worker) for each job (default: DISTRIBUTE_RUN)")
    p.add_argument("--next-job", metavar="MODULE:FUNCTION",
                   help="chooses the next job under the lock (default: DISTRIBUTE_NEXT_JOB, else "
                        f"{_default('DISTRIBUTE_NEXT_JOB')})")
    p.add_argument("--path", metavar="DIR", help="local copy (default: .distribute/NAME)")
    p.add_argument("--name", help="worker name (default: DISTRIBUTE_NAME, else host-random)")
    p.add_argument("--max-jobs", type=int, metavar="N", help="stop after taking N jobs")
    p.add_argument("--idle-exit", action="store_true",
                   help="exit 0 once nothing is queued and nothing is running anywhere")
    p.add_argument("--exit-when-queue-empty", action="store_true",
                   help="exit 0 as soon as the queue is empty")
    p.add_argument("--poll", type=float, metavar="SECONDS",
                   help="longest wait between two looks for new jobs when idle; waits double "
                        f"from 1 s up to it (DISTRIBUTE_POLL_S, {_default('DISTRIBUTE_POLL_S')})")
    p.add_argument("--mirror", choices=["hf"],
                   help="upload each job's results to the Hugging Face repository right after "
                        "its finish (DISTRIBUTE_MIRROR)")
    p.add_argument("--self-destruct", action="store_true",
                   help="on a Vast.ai node: when leaving under --idle-exit, destroy this instance "
                        "(CONTAINER_ID, CONTAINER_API_KEY; also DISTRIBUTE_SELF_DESTRUCT=1)")
    p.add_argument("--grace", type=float, metavar="SECONDS",
                   help="on SIGTERM/SIGINT, let the job finish this long before giving it back "
                        f"(DISTRIBUTE_GRACE_S, {_default('DISTRIBUTE_GRACE_S')})")
    p = cmd("requeue", "put running or failed jobs back at the head of the queue",
            usage="distribute requeue [REMOTE] (--stale | JOB ...)")
    p.add_argument("words", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--stale", action="store_true",
                   help="requeue running jobs whose worker's heartbeat this machine has seen "
                        "unchanged for a job lease (earlier status/requeue runs count)")
    p.add_argument("--wait", action="store_true",
                   help="with --stale: watch until each running job is stale or alive")
    p = cmd("unlock", "show who holds the remote lock; --force breaks it")
    _remote(p)
    p.add_argument("--force", action="store_true", help="break the lock whoever holds it")
    p = cmd("log", "the story of the jobs: master's history, oldest first")
    _remote(p)
    p.add_argument("-n", type=int, default=30, metavar="N", help="show the last N events (30)")
    p = cmd("config", "show every setting, its value (secrets masked) and its source")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    for module in EXTRA_COMMANDS:  # each sets ``func`` (and ``_parser``) on its parsers
        importlib.import_module(module).register(sub, parents=[common])
    p = cmd("demo", "the quickstart: a local remote, 20 jobs, 4 worker processes")
    p.add_argument("--dir", metavar="DIR", help="keep everything in DIR (default: a temp dir)")
    p.add_argument("--jobs", type=int, default=20, metavar="N", help="number of jobs (20)")
    p.add_argument("--workers", type=int, default=4, metavar="N", help="worker processes (4)")
    return parser


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the worker loop (see :func:`run_worker_loop`)."""
    url = resolve_remote(args.remote)
    spec = args.run or settings.get_env("DISTRIBUTE_RUN")
    if not spec:
        raise UsageError("no job function: pass --run MODULE:FUNCTION or set DISTRIBUTE_RUN")
    if args.max_jobs is not None and args.max_jobs < 1:
        raise UsageError("--max-jobs wants a positive number")
    run_func = load_function(spec, "--run")
    next_spec = settings.text_setting("DISTRIBUTE_NEXT_JOB", args.next_job)
    next_func = load_function(next_spec or "", "--next-job")
    # (read here too so that a malformed value stops the worker before it clones the remote)
    poll = settings.seconds_setting("DISTRIBUTE_POLL_S", args.poll)
    grace = settings.seconds_setting("DISTRIBUTE_GRACE_S", args.grace)
    mirror = settings.text_setting("DISTRIBUTE_MIRROR", args.mirror)
    if mirror not in (None, "hf"):
        raise UsageError(f"DISTRIBUTE_MIRROR must be 'hf', not {mirror!r}")
    after_finish = hub_idle = None
    if mirror == "hf":
        from .. import hub

        hub.check_settings()
        after_finish, hub_idle = hub.mirror_after_finish, hub.mirror_when_idle
    self_destruct = settings.flag_setting("DISTRIBUTE_SELF_DESTRUCT", args.self_destruct or None)
    if self_destruct:  # the worker keeps the Vast keys; its jobs and git do not inherit them
        from .. import vast

        vast.hold_keys()
    worker = create_from_config(url, args.path, args.name)
    try:  # progress lines: a worker whose reader went away goes on without them
        say_anyway(f"{worker.name} started on {url} (local copy {worker.path})")
        result = run_worker_loop(worker, run_func, next_func, max_jobs=args.max_jobs,
                                 idle_exit=args.idle_exit,
                                 exit_when_queue_empty=args.exit_when_queue_empty,
                                 poll_s=poll, grace_s=grace, report=say_anyway,
                                 after_finish=after_finish,
                                 on_idle=hub_idle)
        if after_finish is not None:  # what this worker mirrored goes to the Hub before it leaves
            from .. import hub

            hub.flush_mirror(worker)
    finally:
        worker.close()
    say_anyway(f"{worker.name} stopped ({result.ended_by}): {result.done} done, "
               f"{result.failed} failed"
               + (f", {result.given_back} given back" if result.given_back else ""))
    if self_destruct and result.ended_by == "idle":
        from .. import vast

        say("destroying this instance" if vast.self_destruct()
            else "could not destroy this instance (see the log)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the quickstart."""
    from .demo import run_demo

    if args.jobs < 1 or args.workers < 1:
        raise UsageError("--jobs and --workers want positive numbers")
    return run_demo(args.dir, jobs=args.jobs, workers=args.workers)


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
    from . import commands

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    _setup_logging(args.verbose, args.debug)
    handlers = {"init": commands.cmd_init, "add": commands.cmd_add, "status": commands.cmd_status,
                "worker": cmd_worker, "requeue": commands.cmd_requeue,
                "unlock": commands.cmd_unlock, "log": commands.cmd_log,
                "config": commands.cmd_config, "demo": cmd_demo}
    try:
        settings.use_env_file(args.env_file)
        handler = getattr(args, "func", None) or handlers[args.command]
        return int(handler(args))
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
