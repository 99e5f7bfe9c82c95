"""``distribute doctor REMOTE``: what a host allows, what the project does about the rest, and
the settings it recommends (issue 25)."""
from __future__ import annotations

import argparse
import json
from typing import Any, Optional, Sequence

from ..protocol import BRANCH_COORD_PREFIX
from ..repo.pacer import Budget, budget_for, is_github
from ..repo.probes import HostReport, probe_host
from ..repo.verify import local_remote, verify_mode
from .common import add_command, add_remote_argument, resolve_remote, say

#: The probes whose failure means the project cannot run on the host.
REQUIRED = ("push", "atomic", "all or nothing")
_WHAT_WE_DO = {
    "push": "nothing can work without pushes: check the credentials' write access",
    "custom refs": f"the coordination refs live under {BRANCH_COORD_PREFIX} instead (one branch "
                   "namespace; docs/protocol.md): `distribute init` chooses it on this host and "
                   "records it on master, where every worker reads it; a remote initialised "
                   "before this rule came: run `distribute init` once more",
    "branch refs": f"neither refs/distribute/* nor {BRANCH_COORD_PREFIX}* can be pushed: "
                        "the coordination refs have nowhere to live; allow one of them or use "
                        "another host",
    "atomic": "every command and worker refuses this host at first contact (the lock, master "
              "and a job's refs must move together): use a host that supports git push --atomic",
    "all or nothing": "the lock protocol is not safe here: use another host",
    "truthful": "a push answered ok may not have landed: workers read every push back after "
                "its ok and push again what is not there, so each job stays done exactly once "
                "(DISTRIBUTE_VERIFY_PUSHES: auto, the default, does so on every remote but a "
                "local path or file://; never would trust this host's answers)",
    "protocol v2": "slim copies cannot fetch single files on demand: they clone without a "
                   "filter (bigger copies, slower first start)",
    "file size": "a job with a file over the host's limit fails at once, naming the file, or "
                 "with the Hugging Face mirror (--mirror hf) keeps the file on the Hub and a "
                 "pointer in git; set DISTRIBUTE_MAX_FILE_MB to the limit so this happens "
                 "before pushing",
}


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add the ``doctor`` subcommand to ``subparsers``."""
    text = "probe a git host once: what it allows, what distribute does about the rest"
    p = add_command(
        subparsers, "doctor", text, cmd_doctor, parents, description=text + ". It reads the "
        "refs, pushes a scratch branch and a ref under refs/distribute/ (where refused, one "
        f"under {BRANCH_COORD_PREFIX}) and deletes them, checks "
        "atomic pushes (all or nothing), that a push answered ok is there when read back, "
        "protocol v2 and round-trip times, and with --file-mb whether a file that big is taken; "
        "it says the budget of pushes and reads the fleet will keep on this host. "
        "Exit 1 when distribute cannot run on the host. Nothing is left on the remote.",
        epilog="examples:\n  distribute doctor git@github.com:me/jobs.git\n"
               "  distribute doctor https://dev.azure.com/me/p/_git/jobs --json\n"
               "  distribute doctor git@github.com:me/jobs.git --file-mb 60")
    add_remote_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--file-mb", type=float, metavar="MB",
                   help="also push a file of MB megabytes (deleted again) to learn the host's "
                        "file size limit")


def recommended(report: HostReport) -> dict[str, str]:
    """The settings to use with this host (``{name: value}``)."""
    advice: dict[str, str] = {}
    if report.file_limit_mb is not None:
        advice["DISTRIBUTE_MAX_FILE_MB"] = f"{report.file_limit_mb:g}"
    elif "github.com" in report.url:
        advice["DISTRIBUTE_MAX_FILE_MB"] = "50"
    if report.ok("truthful") is False and verify_mode() == "never":
        advice["DISTRIBUTE_VERIFY_PUSHES"] = "auto"
    elif report.ok("truthful") is False and local_remote(report.url):
        advice["DISTRIBUTE_VERIFY_PUSHES"] = "always"
    trip = report.checks.get("round trip")
    if trip is not None and trip.ms / 4 > 2000:  # (4 look-ups took that long)
        advice["DISTRIBUTE_LOCK_LEASE_S"] = f"{max(60, round(trip.ms / 4 / 1000 * 30))}"
    return advice


def budget_advice(budget: Budget, url: str) -> str:
    """What the fleet's budget on this host is and where it comes from, in one line."""
    line = f"the fleet keeps {budget.describe()}"
    if is_github(url) and budget.source == "GitHub's published limits":
        line += ("; each worker's share shrinks as the fleet grows and jobs are claimed and "
                 "finished in batches to keep moving (docs/hosted-remotes.md has what a fleet "
                 "costs the host)")
    elif not budget.limited:
        line += ("; set DISTRIBUTE_PUSHES_PER_MIN and DISTRIBUTE_READS_PER_S when the host "
                 "publishes limits per repository")
    return line


def will_do(report: HostReport) -> dict[str, str]:
    """What distribute does about each failed probe (``{probe: text}``)."""
    out = {name: _WHAT_WE_DO[name] for name, check in report.checks.items()
           if check.ok is False and name in _WHAT_WE_DO}
    if "branch refs" in out:  # (nowhere to go: that probe says it all)
        out.pop("custom refs", None)
    return out


def verdict(report: HostReport) -> Optional[str]:
    """Why distribute cannot run on this host, or ``None`` when it can."""
    missing = [name for name in REQUIRED if report.ok(name) is False]
    if report.ok("custom refs") is False and report.ok("branch refs") is not True:
        missing.insert(1, "custom refs")  # (nowhere for the coordination refs)
    return f"distribute cannot run on this host: {', '.join(missing)}" if missing else None


def cmd_doctor(args: argparse.Namespace) -> int:
    """Probe the remote's host and print what works, what distribute will do, and settings."""
    url = resolve_remote(args.remote)
    report = probe_host(url, args.file_mb)
    problem = verdict(report)
    budget = budget_for(url)
    if args.json:
        say(json.dumps({**report.as_dict(), "usable": problem is None,
                        "budget": {"pushes_per_min": budget.pushes_per_min,
                                   "reads_per_s": budget.reads_per_s, "source": budget.source},
                        "will_do": will_do(report),
                        "recommended": recommended(report)}, sort_keys=True))
        return 1 if problem else 0
    say(f"host of {report.url}:")
    consequences = will_do(report)
    for name, check in report.checks.items():
        mark = {True: "ok", False: "NO", None: "?"}[check.ok]
        say(f"  {name:<15} {mark:<3} {check.detail} ({check.ms:.0f} ms)")
        if name in consequences:
            say(f"  {'':<15}     -> {consequences[name]}")
    say(f"  {'budget':<15}     {budget_advice(budget, report.url)}")
    settings = recommended(report)
    say("recommended settings: " + (" ".join(f"{k}={v}" for k, v in settings.items())
                                    or "the defaults"))
    say(problem or "distribute can run on this host")
    return 1 if problem else 0
