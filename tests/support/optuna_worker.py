"""A sweep worker process for tests/test_optuna.py: ``python optuna_worker.py URL PATH NAME MODE``.

Modes:
  optimize  run the sweep of ``optuna_jobs`` with ``search.optimize`` until the study is settled
            (n_trials asked, nothing queued or running: a dead worker's trial is waited for)
  victim    take one trial, push a partial result, announce ``RUNNING <job> <x>``, sleep forever
            (the test SIGKILLs it)
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from distribute import worker_from_url

import optuna_jobs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("path")
    p.add_argument("name")
    p.add_argument("mode", choices=["optimize", "victim"])
    p.add_argument("--lock-lease", type=float, default=2)
    p.add_argument("--job-lease", type=float, default=3)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {args.name} %(name)s %(levelname)s %(message)s")
    worker = worker_from_url(args.url, args.path, args.name, lock_lease_s=args.lock_lease,
                             job_lease_s=args.job_lease, heartbeat_s=args.job_lease / 4,
                             poll_max_s=0.2)
    search = optuna_jobs.make_search(worker)
    if args.mode == "victim":
        job = worker.get_next_job(search.next_job)
        trial = search.trial()
        Path(worker.job_dir or ".", "partial.txt").write_text("half done\n")
        worker.commit_update("partial result")
        print(f"RUNNING {job} {trial.params['x']!r}", flush=True)
        time.sleep(3600)
        return
    optuna_jobs.search = search  # the objective reads search.worker
    count = search.optimize(optuna_jobs.objective, poll_s=0.2)
    print(f"DONE {count}", flush=True)
    worker.close()


if __name__ == "__main__":
    main()
