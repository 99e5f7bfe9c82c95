"""``distribute worker``: take jobs and run a function on each until told to stop."""
from __future__ import annotations

import argparse
from typing import Any, Sequence

from .. import settings
from ..connect import create_from_config
from ..loop import run_worker_loop
from ..next_jobs import stage_jobs_func
from .common import (
    UsageError,
    add_command,
    add_remote_argument,
    load_function,
    resolve_remote,
    say,
    say_anyway,
)

HELP = "take jobs and run a function on each until told to stop"
EPILOG = ("examples:\n  distribute worker file:///srv/jobs.git --run myjobs:run --idle-exit\n"
          "  DISTRIBUTE_REMOTE=... DISTRIBUTE_RUN=myjobs:run distribute worker\n"
          "  distribute worker URL --run pipe:run --stage embed   # only jobs 'embed:...'\n\n"
          "myjobs.py:\n  def run(job, worker):\n"
          "      Path(worker.job_dir, 'result.txt').write_text(compute(job))")


def _default(name: str) -> str:
    """Setting ``name``'s default as :data:`~distribute.settings.SETTINGS` shows it, for help."""
    return settings.setting_row(name).shown_default or "none"


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add the ``worker`` command (``func`` = :func:`cmd_worker`) to ``subparsers``."""
    p = add_command(subparsers, "worker", HELP, cmd_worker, parents, epilog=EPILOG)
    add_remote_argument(p)
    p.add_argument("--run", metavar="MODULE:FUNCTION",
                   help="called as FUNCTION(job, worker) for each job (default: DISTRIBUTE_RUN)")
    p.add_argument("--next-job", metavar="MODULE:FUNCTION",
                   help="chooses the next job under the lock (default: DISTRIBUTE_NEXT_JOB, else "
                        f"{_default('DISTRIBUTE_NEXT_JOB')})")
    p.add_argument("--stage", action="append", metavar="STAGE",
                   help="take only queued jobs of this stage (the text before a job's first ':'; "
                        "repeat for more stages; '' = jobs without ':'); with --idle-exit the "
                        "worker still waits while jobs of any stage are queued, waiting or running")
    p.add_argument("--path", metavar="DIR", help="local copy (default: .distribute/NAME)")
    p.add_argument("--name", help="worker name (default: DISTRIBUTE_NAME, else host-random)")
    p.add_argument("--max-jobs", type=int, metavar="N", help="stop after taking N jobs")
    p.add_argument("--batch", type=int, metavar="N",
                   help="claim up to N jobs at once, finishing them in one push (default: "
                        "DISTRIBUTE_MAX_BATCH, 4; 1: one at a time)")
    p.add_argument("--idle-exit", action="store_true",
                   help="exit 0 once nothing is queued and nothing is running anywhere")
    p.add_argument("--exit-when-queue-empty", action="store_true",
                   help="exit 0 as soon as the queue is empty")
    p.add_argument("--poll", type=float, metavar="SECONDS",
                   help="longest wait between two looks for new jobs when idle; waits double "
                        f"from 1 s up to it (DISTRIBUTE_POLL_S, {_default('DISTRIBUTE_POLL_S')})")
    p.add_argument("--mirror", choices=["hf"],
                   help="upload each job's results to the Hugging Face repository right after "
                        "its finish, and its files over DISTRIBUTE_MAX_FILE_MB at once, a "
                        "pointer in git in their place (DISTRIBUTE_MIRROR)")
    p.add_argument("--self-destruct", action="store_true",
                   help="on a Vast.ai node: when leaving under --idle-exit, destroy this instance "
                        "(CONTAINER_ID, CONTAINER_API_KEY; also DISTRIBUTE_SELF_DESTRUCT=1)")
    p.add_argument("--grace", type=float, metavar="SECONDS",
                   help="on SIGTERM/SIGINT, let the job finish this long before giving it back "
                        f"(DISTRIBUTE_GRACE_S, {_default('DISTRIBUTE_GRACE_S')})")


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the worker loop (see :func:`run_worker_loop`)."""
    url = resolve_remote(args.remote)
    spec = args.run or settings.get_env("DISTRIBUTE_RUN")
    if not spec:
        raise UsageError("no job function: pass --run MODULE:FUNCTION or set DISTRIBUTE_RUN")
    if args.max_jobs is not None and args.max_jobs < 1:
        raise UsageError("--max-jobs wants a positive number")
    run_func = load_function(spec, "--run")
    if args.stage and args.next_job:
        raise UsageError("--stage chooses the next job itself: drop --next-job or --stage")
    if args.stage:
        try:
            next_func = stage_jobs_func(*args.stage)
        except ValueError as exc:
            raise UsageError(f"--stage: {exc}") from None
    else:
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
    if mirror == "hf":  # files over the size limit go to the Hub, a pointer in git
        from .. import hub

        hub.keep_large_files(worker)
    try:  # progress lines: a worker whose reader went away goes on without them
        say_anyway(f"{worker.name} started on {url} (local copy {worker.path})")
        say_anyway(f"{worker.name} paces itself to a budget of "
                   f"{worker.clone.pacer().budget.describe()}")
        result = run_worker_loop(worker, run_func, next_func, max_jobs=args.max_jobs,
                                 idle_exit=args.idle_exit,
                                 exit_when_queue_empty=args.exit_when_queue_empty,
                                 poll_s=poll, grace_s=grace, report=say_anyway,
                                 after_finish=after_finish,
                                 on_idle=hub_idle, batch=args.batch)
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
