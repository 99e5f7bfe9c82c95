"""Scale: a job on a remote with a big history costs what it costs on an empty one.

    python benchmarks/scale.py [--transport file,http] [--done 100000,1000000] [--cycles 12]

Remotes on 127.0.0.1 built in seconds with ``tests/support/bigremote.py`` (``git fast-import``),
laid out exactly as the library writes them: ``done.txt`` with the most recent 1 000 records and
older ones in ``done/<seq>.txt`` segments, each done job's result under
``updates/<ab>/<cd>/<slug>/``, the layout file; ``--flat`` adds two remotes in the first layout
(flat ``updates/<slug>/``, one big ``done.txt``) of the first size: one measured after
``distribute upgrade``, one that also keeps a branch per job measured after ``upgrade`` and
``prune`` (both timed).

Measured side by side in one run, each big remote against an *empty* one (a fresh ledger with
queued jobs), cycles interleaved so that the machine's load hits both alike:

* ready: ``worker_from_url`` with a new path (clone + first sync), median of 3; disk of that copy;
* cycle: claim + ``commit_update`` + finish of a job with one small file, median of ``--cycles``;
* bytes: what one cycle adds to the server's object store (``git count-objects``), median;
* ``distribute status`` and ``distribute log -n 20`` on the big remote (second run: cached clone).

Targets (issue "Scale"): 100 000 done — cycle <= 1.3 x empty, ready <= 2 x, disk <= 2 x, bytes
independent of N; 1 000 000 — cycle <= 1.5 x; status and log -n 20 under a few seconds.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from support import bigremote  # noqa: E402
from common import Servers, du, machine_line, mb, ms, table  # noqa: E402

from distribute import Worker, queue_jobs_func, worker_from_url  # noqa: E402


def cycle(worker: Worker) -> float:
    started = time.perf_counter()
    job = worker.get_next_job(queue_jobs_func)
    assert job is not None, "the queue ran dry: raise --queued"
    Path(worker.job_dir or "", "result.txt").write_text(f"result of {job}\n")
    worker.commit_update()
    worker.finish_job()
    return time.perf_counter() - started


def store_bytes(bare: Path) -> int:
    out = subprocess.run(["git", "--git-dir", str(bare), "count-objects", "-v"],
                         capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(": ") for line in out.splitlines())
    return 1024 * (int(fields["size"]) + int(fields["size-pack"]))


def ready(url: str, base: Path) -> tuple[float, int, Worker]:
    times, disk, worker = [], 0, None
    for i in range(3):
        if worker is not None:
            worker.close()
        started = time.perf_counter()
        worker = worker_from_url(url, base / f"copy{i}", f"b{i}-{uuid.uuid4().hex[:4]}")
        times.append(time.perf_counter() - started)
        disk = du(Path(worker.path))
    assert worker is not None
    return statistics.median(times), disk, worker


def cli_time(args: list[str], env: dict[str, str]) -> float:
    subprocess.run([sys.executable, "-m", "distribute", *args], env=env, check=True,
                   capture_output=True)  # first run fills the cached clone
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "distribute", *args], env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def measure(servers: Servers, kind: str, sizes: list[int], cycles: int, flat: bool,
            tmp: Path) -> list[list[object]]:
    queued = cycles * 4 + 20
    remotes: dict[str, Path] = {}
    for done in [0, *sizes]:
        name = f"done{kind}{done}.git"
        started = time.perf_counter()
        bigremote.build(servers.root / name, done, queued=queued)
        print(f"built {name} ({done} done jobs) in {time.perf_counter() - started:.1f}s",
              flush=True)
        remotes[str(done)] = servers.root / name
    for branches in (False, True) if flat else ():
        name = f"flat{kind}{sizes[0]}{'b' if branches else ''}.git"
        bigremote.build(servers.root / name, sizes[0], queued=queued, layout=1,
                        segmented=False, branches=branches)
        label = f"{sizes[0]} flat{' + branches' if branches else ''}, upgraded"
        remotes[label + (", pruned" if branches else "")] = servers.root / name
    rows = []
    urls = {label: servers.remote(kind, path.name, create=False).url for label, path in remotes.items()}
    env = dict(os.environ, DISTRIBUTE_CACHE_DIR=str(tmp / f"cache-{kind}"))
    for label, url in urls.items():
        if "flat" in label:
            for command in ("upgrade", "prune") if "pruned" in label else ("upgrade",):
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "distribute", command, url], env=env,
                               check=True, capture_output=True)
                print(f"{command} of {label} took {time.perf_counter() - started:.1f}s",
                      flush=True)
    workers, readies = {}, {}
    for label, url in urls.items():
        readies[label] = ready(url, tmp / f"{kind}-{label.replace(' ', '_').replace(',', '')}")
        workers[label] = readies[label][2]
    times: dict[str, list[float]] = {label: [] for label in urls}
    grows: dict[str, list[int]] = {label: [] for label in urls}
    for _ in range(cycles):  # interleaved: the machine's load hits every remote alike
        for label in urls:
            before = store_bytes(remotes[label])
            times[label].append(cycle(workers[label]))
            grows[label].append(store_bytes(remotes[label]) - before)
    base_cycle, base_ready, base_disk = statistics.median(times["0"]), readies["0"][0], readies["0"][1]
    for label, url in urls.items():
        cyc = statistics.median(times[label])
        status = log = ""
        if label != "0":
            status = ms(cli_time(["status", url], env))
            log = ms(cli_time(["log", url, "-n", "20"], env))
        rows.append([kind, label, ms(readies[label][0]), f"{readies[label][0] / base_ready:.2f}",
                     mb(readies[label][1]), f"{readies[label][1] / base_disk:.2f}", ms(cyc),
                     f"{cyc / base_cycle:.2f}", f"{statistics.median(grows[label]) / 1024:.1f} KiB",
                     status, log])
        workers[label].close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transport", default="file,http", help="file, daemon, http (file,http)")
    p.add_argument("--done", default="100000,1000000", help="sizes of the big remotes")
    p.add_argument("--cycles", type=int, default=12, help="cycles per remote (12)")
    p.add_argument("--flat", action="store_true",
                   help="also remotes in the first layout (with and without a branch per job), "
                        "measured after upgrade (and prune)")
    p.add_argument("--dir", help="keep remotes and copies in DIR")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.done.split(",") if x]
    print(machine_line())
    rows = []
    with ExitStack() as stack:
        tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="distribute-scale-"))
        if not args.dir:  # (a copy's background gc may still be writing: never fail on it)
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        servers = Servers(tmp / "srv", stack)
        for kind in args.transport.split(","):
            rows += measure(servers, kind, sizes, args.cycles, args.flat, tmp)
            print(table(["transport", "done jobs", "ready", "x", "disk", "x", "cycle", "x",
                         "bytes/cycle", "status", "log -n 20"], rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
