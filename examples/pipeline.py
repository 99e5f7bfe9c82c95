"""A three-stage pipeline — split → process → merge — on a local remote.

Each ``split:<name>`` job cuts its text into parts, writes them, and queues one ``proc:`` job per
part plus a ``merge:`` job after all of them with ``worker.then`` (queued in the same commit as
its finish). ``proc:`` jobs read their part through ``worker.inputs`` and upper-case it; the
``merge:`` job waits until every ``proc:`` job is done, then joins their outputs in order. Two
worker processes take ``--stage split --stage merge``, two take ``--stage proc``; all leave with
``--idle-exit`` once nothing is queued, waiting or running.

    python examples/pipeline.py [--dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TEXTS = {"v1": "the quick brown fox jumps over the lazy dog",
         "v2": "pack my box with five dozen liquor jugs"}
PARTS = 3


def run(job: str, worker) -> None:  # noqa: ANN001 - distribute.Worker
    """The job function of every stage (``distribute worker --run pipeline:run``)."""
    stage, _, name = job.partition(":")
    out = Path(worker.job_dir)
    if stage == "split":
        words = TEXTS[name].split()
        size = -(-len(words) // PARTS)
        procs = []
        for i in range(PARTS):
            (out / f"part-{i}.txt").write_text(" ".join(words[i * size:(i + 1) * size]))
            procs.append(f"proc:{name}-{i}")
            worker.then(procs[-1])
        worker.then(f"merge:{name}", after=procs)
    elif stage == "proc":
        (split, source), = worker.inputs.items()  # the split job that queued this one
        part = Path(source, f"part-{name.rpartition('-')[2]}.txt").read_text()
        (out / "out.txt").write_text(part.upper())
    elif stage == "merge":
        parts = [Path(path, "out.txt").read_text() for parent, path in worker.inputs.items()
                 if parent.startswith("proc:")]  # (the first parent is the split that queued it)
        (out / "merged.txt").write_text(" ".join(parts) + "\n")
    else:
        raise ValueError(f"no such stage: {stage!r}")


def main() -> int:
    """Make a bare remote, queue the splits, run four stage workers, show the results."""
    from distribute import init_remote, worker_from_url
    from distribute.cli.demo import make_bare_remote
    from distribute.protocol import job_path

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", help="keep the remote, the workers' copies and logs in DIR")
    args = p.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="distribute-pipeline-")).resolve()
    url = make_bare_remote(base / "remote.git")
    init_remote(url, [f"split:{name}" for name in TEXTS])
    env = dict(os.environ, DISTRIBUTE_POLL_MAX_S="0.2", DISTRIBUTE_POLL_S="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent),
                                                      env.get("PYTHONPATH")]))
    stages = {"sm-1": ["split", "merge"], "sm-2": ["split", "merge"], "proc-1": ["proc"],
              "proc-2": ["proc"]}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "distribute", "worker", url, "--run", "pipeline:run",
         "--idle-exit", "--name", name, "--path", str(base / "workers" / name),
         *[arg for stage in wanted for arg in ("--stage", stage)]], env=env)
        for name, wanted in stages.items()]
    codes = [proc.wait() for proc in procs]
    status = subprocess.run([sys.executable, "-m", "distribute", "status", url, "--json"],
                            capture_output=True, text=True, check=True, env=env)
    print(json.dumps(json.loads(status.stdout)["stages"], indent=1))
    reader = worker_from_url(url, base / "reader", "reader")
    try:
        paths = [job_path(f"merge:{name}", reader.workspace.layout) for name in TEXTS]
        reader.include_paths(*paths)
        for path in paths:
            print(Path(reader.path, path, "merged.txt").read_text(), end="")
    finally:
        reader.close()
    return 0 if codes == [0] * len(procs) else 1


if __name__ == "__main__":
    sys.exit(main())
