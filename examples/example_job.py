"""An example job module for ``distribute worker --run example_job:run``.

A job function receives the job string and the :class:`distribute.Worker`. It writes its results
under ``worker.job_dir`` (``updates/<job>/`` in the repository); they reach ``master`` when the job
is finished. ``worker.commit_update()`` pushes intermediate results to the job's branch, so the
work survives if this machine dies. Raising an exception fails the job: the message goes to
``failed.txt`` and the traceback to ``traceback.txt`` on the job branch.

Try it (from this directory)::

    distribute init file:///tmp/jobs.git
    distribute add file:///tmp/jobs.git task-1 task-2 task-3
    distribute worker file:///tmp/jobs.git --run example_job:run --idle-exit
"""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from distribute import Worker


def run(job: str, worker: Worker) -> None:
    """Square the number at the end of ``job`` (``task-7`` → 49) and save it as ``result.json``."""
    out = Path(worker.job_dir or ".")
    started = time.time()
    (out / "log.txt").write_text(f"{worker.name} started {job}\n", encoding="utf-8")
    worker.commit_update(f"{worker.name} started {job}")  # a checkpoint on the job branch

    number = int(job.rsplit("-", 1)[-1])  # a ValueError here fails the job, with its traceback
    time.sleep(0.2)  # the actual work
    result = {"job": job, "square": number * number, "worker": worker.name,
              "host": socket.gethostname(), "seconds": round(time.time() - started, 3)}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":  # it is a module for --run; say so instead of doing nothing
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                            epilog="use it as: distribute worker REMOTE --run example_job:run "
                                   "(from this directory)").parse_args()
    print("example_job.py is a job module: distribute worker REMOTE --run example_job:run")
