"""The floor: what plain git costs per round trip on each transport, side by side in one run.

    python benchmarks/floor.py [-n 30] [--transports file,daemon,daemon-v0,http,ssh,ssh-reuse]

For each transport a bare repository on 127.0.0.1 and a plain clone of it; then ``-n`` rounds,
each running on every transport in turn (so load changes hit all transports alike):

* ``git ls-remote origin``             one round trip, no objects;
* ``git fetch origin`` (nothing new)   the ref advertisement and an empty negotiation;
* commit + ``git push``                a one-file commit pushed to a branch.

The first round is a warm-up and is dropped. ``daemon`` is git's default protocol (v2) over
git://, ``daemon-v0`` the same with ``-c protocol.version=0``; ``ssh`` opens a new connection per
command, ``ssh-reuse`` goes through one OpenSSH ControlMaster connection. ssh rows are left out
when no sshd is installed (``apt-get install openssh-server``).

Figures are medians in milliseconds and depend on the machine; the ratios are what count.
"""
from __future__ import annotations

import argparse
import sys
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
    parse_transports,
    pct,
    ssh_available,
    table,
    timed,
    workdir,
)


def setup(remote: Remote, tmp: Path) -> Path:
    """Seed the remote with one commit on master and return a clone on branch ``floor``."""
    clone = tmp / f"clone-{remote.kind}"
    git(*remote.git_args, "clone", "-q", remote.url, str(clone), env=remote.env)
    (clone / "f.txt").write_text("seed\n")
    git("add", "f.txt", cwd=clone, env=remote.env)
    git("commit", "-qm", "seed", cwd=clone, env=remote.env)
    git(*remote.git_args, "push", "-q", "origin", "HEAD:refs/heads/master", cwd=clone,
        env=remote.env)
    git("checkout", "-q", "-b", "floor", cwd=clone, env=remote.env)
    return clone


def one_round(remote: Remote, clone: Path, i: int) -> tuple[float, float, float]:
    a, env, cwd = remote.git_args, remote.env, clone
    t_ls = timed(git, *a, "ls-remote", "origin", cwd=cwd, env=env)
    t_fetch = timed(git, *a, "fetch", "-q", "origin", cwd=cwd, env=env)
    (clone / "f.txt").write_text(f"{i}\n")

    def commit_push() -> None:
        git("commit", "-qam", f"c{i}", cwd=cwd, env=env)
        git(*a, "push", "-q", "origin", "HEAD:refs/heads/floor", cwd=cwd, env=env)
    return t_ls, t_fetch, timed(commit_push)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--rounds", type=int, default=30, help="measured rounds (30)")
    p.add_argument("--transports", default="file,daemon,daemon-v0,http,ssh,ssh-reuse",
                   help="comma-separated (default: all; ssh ones skipped without sshd)")
    p.add_argument("--dir", help="keep the remotes and clones in DIR")
    args = p.parse_args(argv)
    kinds = parse_transports(args.transports)
    if not ssh_available() and any(k.startswith("ssh") for k in kinds):
        print("note: no /usr/sbin/sshd, ssh rows skipped (apt-get install openssh-server)")
        kinds = [k for k in kinds if not k.startswith("ssh")]
    print(machine_line())
    with workdir("bench-floor-", args.dir) as tmp, ExitStack() as stack:
        servers = Servers(tmp / "srv", stack)
        remotes = [servers.remote(k, f"floor-{k}.git") for k in kinds]
        clones = [setup(r, tmp) for r in remotes]
        samples: dict[str, list[tuple[float, float, float]]] = {k: [] for k in kinds}
        for i in range(args.rounds + 1):
            for r, c in zip(remotes, clones):
                s = one_round(r, c, i)
                if i:  # round 0 is the warm-up
                    samples[r.kind].append(s)
    med = {k: tuple(median(s[j] for s in v) for j in range(3)) for k, v in samples.items()}
    p90 = {k: tuple(pct((s[j] for s in v), 90) for j in range(3)) for k, v in samples.items()}
    print(f"\nmedians of {args.rounds} rounds, ms (p90 in brackets)")
    rows = []
    for k in kinds:
        ls, fe, pu = med[k]
        rows.append([k, f"{ms(ls)} [{ms(p90[k][0])}]", f"{ms(fe)} [{ms(p90[k][1])}]",
                     f"{ms(pu)} [{ms(p90[k][2])}]", ms(ls + pu), ms(fe + pu)])
    print(table(["transport", "ls-remote", "fetch (no-op)", "commit + push",
                 "ls-remote + push", "fetch + push"], rows))
    print("\nls-remote + push: the hand-off floor; fetch + push: the floor of one locked write")
    ratios = []
    if "daemon" in med and "daemon-v0" in med:
        for j, what in enumerate(("ls-remote", "fetch", "commit + push")):
            ratios.append((f"git:// {what}: protocol v2 (default) / v0",
                           med["daemon"][j] / med["daemon-v0"][j]))
    if "ssh" in med and "ssh-reuse" in med:
        for j, what in enumerate(("ls-remote", "fetch", "commit + push")):
            ratios.append((f"ssh {what}: new connection / reused", med["ssh"][j] / med["ssh-reuse"][j]))
        ratios.append(("ssh: connection set-up per command, ms (new - reused ls-remote)",
                       (med["ssh"][0] - med["ssh-reuse"][0]) * 1000))
    if "http" in med and "file" in med:
        ratios.append(("http / file, fetch + push", sum(med["http"][1:]) / sum(med["file"][1:])))
    for label, value in ratios:
        print(f"{label:66} {value:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
