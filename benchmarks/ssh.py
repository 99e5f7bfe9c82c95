"""ssh remotes: what a new connection per git command costs the library, and what reuse saves.

    python benchmarks/ssh.py [--jobs 20] [--rounds 20]

An ``sshd`` on 127.0.0.1 (throw-away keys, needs ``/usr/sbin/sshd``: ``apt-get install
openssh-server``) serves one bare repository per mode:

* ``ssh``        ``GIT_SSH_COMMAND`` opens a new connection for every git command (the default,
  and what GitHub / GitLab users pay on every command);
* ``ssh-reuse``  ``GIT_SSH_COMMAND`` with OpenSSH ``ControlMaster=auto`` / ``ControlPersist``:
  the first command opens a connection that later ones multiplex over.

For each mode: plain ``git ls-remote``, no-op ``git fetch`` and commit + ``git push`` (medians of
``--rounds``), then one library worker claiming and finishing ``--jobs`` empty jobs
(``get_next_job`` + ``finish_job``) and the combined ``finish_job(next_job_func)`` per job.
The library passes ``GIT_SSH_COMMAND`` from the environment through to git, so reuse can be
switched on from outside today; the issue asks for it on by default.
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Remote,
    Servers,
    machine_line,
    median,
    ms,
    ssh_available,
    table,
    workdir,
)
from floor import one_round, setup


def library_cycles(remote: Remote, tmp: Path, jobs: int) -> tuple[float, float, float, float]:
    """Median s of worker start-up (clone), claim + finish, combined finish-and-claim per job;
    and network git calls per claim + finish."""
    import logging

    from distribute import init_remote, queue_jobs_func, worker_from_url

    logging.getLogger("distribute").setLevel(logging.ERROR)  # empty jobs: "discarded updates/"
    remote.apply_env()
    init_remote(remote.url, [f"job{i}" for i in range(2 * jobs)])
    t = time.perf_counter()
    w = worker_from_url(remote.url, tmp / f"w-{remote.kind}", f"bench-{remote.kind}")
    start = time.perf_counter() - t
    cycles, calls0 = [], w.clone.network_calls
    for _ in range(jobs):
        t = time.perf_counter()
        w.get_next_job(queue_jobs_func)
        w.finish_job()
        cycles.append(time.perf_counter() - t)
    calls = (w.clone.network_calls - calls0) / jobs
    combined = []
    job = w.get_next_job(queue_jobs_func)
    while job is not None:
        t = time.perf_counter()
        job = w.finish_job(queue_jobs_func)
        combined.append(time.perf_counter() - t)
    w.close()
    return start, median(cycles), median(combined), calls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20, help="claim + finish cycles per mode (20)")
    p.add_argument("--rounds", type=int, default=20, help="plain-git rounds per mode (20)")
    p.add_argument("--dir", help="keep remotes and copies in DIR")
    args = p.parse_args(argv)
    if not ssh_available():
        print("skipped: no /usr/sbin/sshd (apt-get install openssh-server)")
        return 0
    print(machine_line())
    kinds = ["ssh", "ssh-reuse"]
    floor, lib = {}, {}
    with workdir("bench-ssh-", args.dir) as tmp, ExitStack() as stack:
        servers = Servers(tmp / "srv", stack)
        remotes = [servers.remote(k, f"floor-{k}.git") for k in kinds]
        clones = [setup(r, tmp) for r in remotes]
        samples: dict[str, list] = {k: [] for k in kinds}
        for i in range(args.rounds + 1):
            for r, c in zip(remotes, clones):
                s = one_round(r, c, i)
                if i:
                    samples[r.kind].append(s)
        for k in kinds:
            floor[k] = tuple(median(s[j] for s in samples[k]) for j in range(3))
            lib[k] = library_cycles(servers.remote(k, f"lib-{k}.git"), tmp, args.jobs)
    rows = []
    for k in kinds:
        ls, fe, pu = floor[k]
        start, cyc, comb, calls = lib[k]
        rows.append([k, ms(ls), ms(fe), ms(pu), ms(start), ms(cyc), ms(comb), f"{calls:.0f}",
                     f"{cyc / (2 * (fe + pu)):.2f}"])
    print(f"\nmedians, ms (plain git: {args.rounds} rounds; library: {args.jobs} jobs)")
    print(table(["mode", "ls-remote", "fetch", "commit+push", "worker start", "claim+finish",
                 "finish(next) per job", "git net calls", "cycle / 2(fetch+push)"], rows))
    a, b = lib["ssh"], lib["ssh-reuse"]
    print(f"\nclaim + finish, new connection / reused:        {a[1] / b[1]:.2f} "
          f"({ms(a[1] - b[1])} ms saved per job)")
    print(f"finish(next) per job, new connection / reused:  {a[2] / b[2]:.2f} "
          f"({ms(a[2] - b[2])} ms saved per job)")
    print(f"connection set-up, ms (ls-remote new - reused): {ms(floor['ssh'][0] - floor['ssh-reuse'][0])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
