"""The quickstart: git-distribute on one machine with nothing but git.

Makes a bare remote in a temporary directory (or ``--dir``), adds 20 jobs, starts 4 worker
processes (``python -m distribute worker REMOTE --run example_job:run --idle-exit``), shows the
progress while they drain the queue, then prints ``distribute status`` and the ``git log`` story.
``distribute demo`` runs the same code with a job function from the package.

    pip install -e . && python examples/quickstart.py
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distribute.cli.demo import run_demo


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", help="keep the remote, the workers' copies and logs in DIR")
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--workers", type=int, default=4)
    args = p.parse_args()
    here = Path(__file__).resolve().parent  # example_job.py lives next to this file
    return run_demo(args.dir, jobs=args.jobs, workers=args.workers, run="example_job:run",
                    pythonpath=str(here))


if __name__ == "__main__":
    sys.exit(main())
