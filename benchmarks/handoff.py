"""Lock hand-off latency: from one worker releasing the lock to the waiting one holding it.

    python benchmarks/handoff.py [--transport http] [--handoffs 20] [--poll 0.05,0.2,1.0]
                                 [--hold 0,0.5]

Two worker processes on one remote, each looping ``job = w.finish_job(f)`` with empty jobs, where
``f`` is a next-job function that sleeps ``--hold`` seconds (a slow next-job function, e.g. an
optimiser's suggestion, keeps the other worker waiting longer) and then takes the first queued job.
To measure hand-offs and nothing else, a worker that released the lock does not ask for it again
until the other worker has taken it (a file outside git tells it); so each lock hold is requested
while the other worker holds the lock, and every acquisition is a hand-off to a waiter.

The library is not changed; the benchmark wraps the worker's ``clone.push``, ``clone.ls_remote``
and ``_lock.acquire`` methods in each process to log timestamps on CLOCK_MONOTONIC, which all
processes of the machine share:

* **release** is A's final atomic push (``master`` + lock deletion); it happened somewhere inside
  that push, so the hand-off is at least ``B holds - A's push returned`` (the figure reported)
  and at most ``B holds - A's push started`` (the "upper" column);
* **B holds** is the moment B's lock push returned accepted (``_lock.acquire`` returns);
* B's time after the release is split into the rest of the back-off sleep it was in, the
  ``ls-remote`` that saw the lock free, and its lock push;
* **to next-job** is when B's next-job function starts (after its fetch + checkout): what a user's
  next-job function experiences.

The floor is one ``git ls-remote 'refs/distribute/*'`` plus one lock-style push (a new marker
commit pushed with ``--force-with-lease=ref:``, then deleted), plain git on the same remote in the
same run. Each ``--poll`` value is run as ``DISTRIBUTE_POLL_MAX_S`` (the longest pause between two
looks at a held lock; the back-off starts at 20 ms and doubles, ×0.5-1 jitter).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Remote,
    Servers,
    git,
    machine_line,
    median,
    ms,
    now,
    parse_transports,
    pct,
    table,
    workdir,
)

LOCK_REF = "refs/distribute/lock"


# ---- child: one worker process -----------------------------------------------------------------
def instrument(w, events: list) -> None:
    """Wrap the worker's network primitives to log when the lock is taken and released."""
    clone, lock = w.clone, w._lock
    orig_push, orig_ls, orig_acq = clone.push, clone.ls_remote, lock.acquire

    def push(updates):
        t0 = now()
        ok = orig_push(updates)
        t1 = now()
        for u in updates:
            if u.ref == LOCK_REF:
                kind = "release" if u.new is None else "take" if u.expect == "" else "renew"
                events.append({"e": "push", "kind": kind, "ok": ok, "t0": t0, "t1": t1,
                               "n": len(updates)})
        return ok

    def ls_remote(*patterns):
        t0 = now()
        refs = orig_ls(*patterns)
        events.append({"e": "ls", "t0": t0, "t1": now(), "free": LOCK_REF not in refs})
        return refs

    def acquire():
        w0, t0 = lock.waits, now()
        orig_acq()
        events.append({"e": "acq", "t0": t0, "t1": now(), "waits": lock.waits - w0})

    clone.push, clone.ls_remote, lock.acquire = push, ls_remote, acquire


def child(args: argparse.Namespace) -> int:
    import logging

    from distribute import queue_jobs_func, worker_from_url

    # warnings (lock broken, a waiter skipped as idle, ...) go to stderr, into the output
    logging.getLogger("distribute").setLevel(logging.WARNING)

    events: list = []
    tmp = Path(args.tmp)
    me, other = tmp / f"acq-{args.name}", tmp / f"acq-{args.other}"

    def write(path: Path, value: str) -> None:
        path.with_suffix(".new").write_text(value)
        path.with_suffix(".new").replace(path)

    def read(path: Path) -> str:
        try:
            return path.read_text()
        except FileNotFoundError:
            return "0"

    state = {"other_seen": "0"}

    def next_job(worker):
        events.append({"e": "func", "t0": now()})
        write(me, str(int(read(me)) + 1))  # tell the other worker we hold the lock
        state["other_seen"] = read(other)
        if args.hold:
            time.sleep(args.hold)
        return queue_jobs_func(worker)

    def other_took_it() -> bool:
        value = read(other)
        return value == "done" or int(value) > int(state["other_seen"])

    w = worker_from_url(args.url, tmp / args.name, args.name)
    instrument(w, events)
    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    job = w.get_next_job(next_job)
    while job is not None:
        # wait (outside git) until the other worker has taken the lock after us, then ask again
        deadline = time.monotonic() + 120
        while not other_took_it() and time.monotonic() < deadline:
            time.sleep(0.002)
        job = w.finish_job(next_job)
    write(me, "done")
    w.close()
    Path(args.out).write_text(json.dumps(events))
    return 0


# ---- parent ------------------------------------------------------------------------------------
def floor(remote: Remote, tmp: Path, n: int) -> tuple[float, float]:
    """Medians of plain ``git ls-remote 'refs/distribute/*'`` and of a lock-style push."""
    clone = tmp / f"floor-{remote.kind}"
    git("clone", "-q", remote.url, str(clone), env=remote.env)
    empty = git("hash-object", "-t", "tree", "-w", os.devnull, cwd=clone).strip()
    ls, pushes = [], []
    for i in range(n + 1):
        t = time.perf_counter()
        git("ls-remote", "origin", "refs/distribute/*", cwd=clone, env=remote.env)
        t_ls = time.perf_counter() - t
        marker = git("commit-tree", empty, "-m", f"floor lock {i} {time.time()}", cwd=clone,
                     env=remote.env).strip()
        t = time.perf_counter()
        git("push", "--porcelain", "--atomic", "--force-with-lease=refs/distribute/floor:",
            "origin", f"{marker}:refs/distribute/floor", cwd=clone, env=remote.env)
        t_push = time.perf_counter() - t
        git("push", "-q", "origin", ":refs/distribute/floor", cwd=clone, env=remote.env)
        if i:
            ls.append(t_ls)
            pushes.append(t_push)
    return median(ls), median(pushes)


def run_setting(remote: Remote, tmp: Path, poll: float, hold: float, handoffs: int) -> list[dict]:
    """Two workers alternate ``handoffs`` + 1 lock holds; return the hand-offs measured."""
    from distribute import init_remote

    remote.apply_env()  # init_remote runs git here (GIT_SSH_COMMAND for ssh)
    init_remote(remote.url, [f"job{i}" for i in range(handoffs + 1)])
    env = dict(os.environ, **{k: v for k, v in remote.env.items() if k == "GIT_SSH_COMMAND"},
               DISTRIBUTE_POLL_MAX_S=str(poll))
    procs, outs = [], []
    for name, other in (("wa", "wb"), ("wb", "wa")):
        out = tmp / f"events-{name}.json"
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--child", "--url", remote.url, "--tmp", str(tmp),
             "--name", name, "--other", other, "--hold", str(hold), "--out", str(out)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env))
    for p in procs:
        if p.stdout is None or p.stdout.readline().strip() != "ready":
            raise SystemExit("a worker did not start")
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        if p.wait(timeout=900) != 0:
            raise SystemExit("a worker failed")
    events = {name: json.loads(out.read_text()) for name, out in zip(("wa", "wb"), outs)}
    return analyse(events)


def analyse(events: dict[str, list[dict]]) -> list[dict]:
    """Pair each acquisition with the other worker's preceding release."""
    found = []
    for me, other in (("wa", "wb"), ("wb", "wa")):
        releases = [e for e in events[other] if e["e"] == "push" and e["kind"] == "release"
                    and e["ok"]]
        mine = events[me]
        for i, acq in enumerate(e for e in mine if e["e"] == "acq"):
            before = [r for r in releases if r["t1"] <= acq["t1"] + 0.05]
            if not before:
                continue  # the first acquisition of the run: nobody released before it
            rel = max(before, key=lambda r: r["t1"])
            if acq["t0"] >= rel["t1"]:
                continue  # not waiting when released (should not happen here)
            inside = [e for e in mine if acq["t0"] <= e["t0"] <= acq["t1"]]
            take = [e for e in inside if e["e"] == "push" and e["kind"] == "take" and e["ok"]][-1]
            looks = [e for e in inside if e["e"] == "ls" and e["free"]]
            func = next((e for e in mine if e["e"] == "func" and e["t0"] >= acq["t1"]), None)
            h = {"gap": acq["t1"] - rel["t1"], "upper": acq["t1"] - rel["t0"],
                 "push": take["t1"] - take["t0"], "waits": acq["waits"],
                 "release_push": rel["t1"] - rel["t0"],
                 "to_func": func["t0"] - rel["t1"] if func else float("nan")}
            if looks:
                h["ls"] = looks[-1]["t1"] - looks[-1]["t0"]
                h["sleep"] = looks[-1]["t0"] - rel["t1"]
            else:  # the optimistic first push got it (lock freed before it was sent)
                h["ls"], h["sleep"] = 0.0, take["t0"] - rel["t1"]
            found.append(h)
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transport", default="http",
                   help="comma-separated: file, daemon, http, ssh, ssh-reuse (http)")
    p.add_argument("--handoffs", type=int, default=20, help="hand-offs per setting (20)")
    p.add_argument("--poll", default="0.05,0.2,1.0",
                   help="DISTRIBUTE_POLL_MAX_S values, comma-separated (0.05,0.2,1.0)")
    p.add_argument("--hold", default="0,0.5",
                   help="seconds each next-job function sleeps under the lock (0,0.5)")
    p.add_argument("--floor-rounds", type=int, default=20)
    p.add_argument("--dir", help="keep remotes, copies and event logs in DIR")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--url", "--tmp", "--name", "--other", "--out"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.hold = float(args.hold)
        return child(args)
    polls = [float(x) for x in args.poll.split(",")]
    holds = [float(x) for x in args.hold.split(",")]
    print(machine_line())
    rows, summary = [], []
    with workdir("bench-handoff-", args.dir) as tmp, ExitStack() as stack:
        servers = Servers(tmp / "srv", stack)
        for kind in parse_transports(args.transport):
            r0 = servers.remote(kind, f"floor-{kind}.git")
            ls, push = floor(r0, tmp, args.floor_rounds)
            fl = ls + push
            print(f"\n{kind}: floor ls-remote {ms(ls)} ms + lock push {ms(push)} ms = {ms(fl)} ms "
                  f"(medians of {args.floor_rounds})")
            for hold in holds:
                for poll in polls:
                    name = f"h-{kind}-{hold}-{poll}"
                    remote = servers.remote(kind, name + ".git")
                    run_dir = tmp / name
                    run_dir.mkdir()
                    hs = run_setting(remote, run_dir, poll, hold, args.handoffs)
                    gap = [h["gap"] for h in hs]
                    rows.append([kind, f"{hold:g}", f"{poll:g}", len(hs), ms(median(gap)),
                                 ms(pct(gap, 90)), ms(median(h["upper"] for h in hs)),
                                 ms(median(h["sleep"] for h in hs)),
                                 ms(median(h["ls"] for h in hs)),
                                 ms(median(h["push"] for h in hs)),
                                 f"{median(h['waits'] for h in hs):.0f}",
                                 ms(median(h["to_func"] for h in hs)),
                                 f"{median(gap) / fl:.2f}",
                                 f"{median(h['upper'] for h in hs) / fl:.2f}"])
                    summary.append((kind, hold, poll, median(gap) / fl))
                    print(table(["transport", "hold s", "poll max s", "n", "median", "p90", "upper",
                                 "sleep", "ls", "push", "polls", "to next-job", "median/floor", "upper/floor"],
                                rows[-1:]).splitlines()[-1], flush=True)
    print("\nhand-off = waiter holds the lock - releaser's push returned (ms); upper: from the start "
          "of that push;\nsleep / ls / push: the waiter's rest of back-off after the release, the "
          "ls-remote that saw it free,\nits lock push; polls: ls-remotes that saw it held during the "
          "wait; to next-job: release -> waiter's next-job function starts")
    print(table(["transport", "hold s", "poll max s", "n", "median", "p90", "upper", "sleep", "ls",
                 "push", "polls", "to next-job", "median/floor", "upper/floor"], rows))
    print("\ntarget: median hand-off <= 1.5 x floor (ls-remote + push)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
