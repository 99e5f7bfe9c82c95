"""ssh remotes: what a new connection per git command costs the library, and what reuse saves.

    python benchmarks/ssh.py [--jobs 20] [--rounds 20]

An ``sshd`` on 127.0.0.1 (throw-away keys, needs ``/usr/sbin/sshd``: ``apt-get install
openssh-server``) serves one bare repository per mode:

* ``ssh``          a new connection for every git command: the benchmark's own
  ``GIT_SSH_COMMAND`` without connection sharing, and ``DISTRIBUTE_SSH_REUSE=0`` (what the
  library did before it shared connections, and what every plain-git command on GitHub / GitLab
  pays);
* ``ssh-reuse``    the benchmark's ``GIT_SSH_COMMAND`` with OpenSSH ``ControlMaster=auto`` /
  ``ControlPersist``: the first command opens a connection that later ones multiplex over;
* ``ssh-default``  library runs only: no ``GIT_SSH_COMMAND``, so the library sets its own
  ControlMaster command (its default, ``DISTRIBUTE_SSH_REUSE`` unset). The test key reaches
  ssh through a wrapper ``ssh`` first on ``PATH`` that adds ``-F <client config>``; its
  plain-git columns repeat ``ssh-reuse``.

For each mode: plain ``git ls-remote``, no-op ``git fetch`` and commit + ``git push`` (medians of
``--rounds``), then one library worker claiming and finishing ``--jobs`` empty jobs
(``get_next_job`` + ``finish_job``) and the combined ``finish_job(next_job_func)`` per job.
Connection reuse is the library's default: it sets a ControlMaster ``GIT_SSH_COMMAND`` unless
the user set ``GIT_SSH_COMMAND``, ``GIT_SSH`` or ``core.sshCommand``, or set
``DISTRIBUTE_SSH_REUSE=0``.
"""
from __future__ import annotations

import argparse
import os
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


def library_env(mode: str, remote: Remote, servers: Servers, tmp: Path) -> None:
    """Set ``os.environ`` for a library run in ``mode`` (the library reads it per clone)."""
    os.environ.pop("DISTRIBUTE_SSH_REUSE", None)
    if mode == "ssh-default":
        os.environ.pop("GIT_SSH_COMMAND", None)
        os.environ.pop("GIT_SSH", None)
        bindir = tmp / "sshbin"
        bindir.mkdir(exist_ok=True)
        config = servers._ssh.write_client_config(tmp / "ssh_config")  # started by servers.remote
        wrapper = bindir / "ssh"
        wrapper.write_text(f"#!/bin/sh\nexec /usr/bin/ssh -F {config} \"$@\"\n")
        wrapper.chmod(0o755)
        os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
        return
    remote.apply_env()
    if mode == "ssh":
        os.environ["DISTRIBUTE_SSH_REUSE"] = "0"


def library_cycles(remote: Remote, tmp: Path, jobs: int,
                   mode: str) -> tuple[float, float, float, float]:
    """Median s of worker start-up (clone), claim + finish, combined finish-and-claim per job;
    and network git calls per claim + finish."""
    import logging

    from distribute import init_remote, queue_jobs_func, worker_from_url

    logging.getLogger("distribute").setLevel(logging.ERROR)  # empty jobs: "discarded updates/"
    init_remote(remote.url, [f"job{i}" for i in range(2 * jobs)])
    t = time.perf_counter()
    w = worker_from_url(remote.url, tmp / f"w-{mode}", f"bench-{mode}")
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
    modes = [*kinds, "ssh-default"]
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
        floor["ssh-default"] = floor["ssh-reuse"]
        saved_env = dict(os.environ)
        try:
            for k in modes:
                remote = servers.remote("ssh" if k == "ssh" else "ssh-reuse", f"lib-{k}.git")
                library_env(k, remote, servers, tmp)
                lib[k] = library_cycles(remote, tmp, args.jobs, k)
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
    rows = []
    for k in modes:
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
    c = lib["ssh-default"]
    print(f"claim + finish, new connection / library default: {a[1] / c[1]:.2f} "
          f"({ms(a[1] - c[1])} ms saved per job)")
    print(f"worker start, new connection / library default: {a[0] / c[0]:.2f}")
    print(f"connection set-up, ms (ls-remote new - reused): {ms(floor['ssh'][0] - floor['ssh-reuse'][0])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
