"""A worker process for the multi-process tests: ``python proc_worker.py URL PATH NAME MODE [opts]``.

Modes:
  drain       take jobs with queue_jobs_func, write updates/<slug>/result.txt, finish (claiming the
              next job in the same lock hold); leave when nothing is queued and nothing is running
              (waiting for dead workers' jobs to come back). Transient errors are logged and retried.
  take-lock   take the remote lock, announce LOCKED on stdout, sleep forever (killed in the test)
  hold-lock   inside the next-job function: write HALF-MADE into the checkout, announce, sleep
  hold-claim  inside the next-job function: take the queue's first job, announce HOLDING, wait for
              the --until file, then claim it; print TOOK <job> and leave
  block-job   take one job, write and push a partial result, announce RUNNING, sleep forever
  one-job     take one job, finish it, leave
"""
from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path

from distribute import DistributeError, JobStateError, MergeConflictError, queue_jobs_func, worker_from_url
from distribute.ledger import Ledger


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("path")
    p.add_argument("name")
    p.add_argument("mode", choices=["drain", "take-lock", "hold-lock", "hold-claim", "block-job", "one-job"])
    p.add_argument("--lock-lease", type=float, default=3)
    p.add_argument("--job-lease", type=float, default=4)
    p.add_argument("--max-attempts", type=int, default=3)
    p.add_argument("--sleep-ms", type=int, nargs=2, default=(0, 0))
    p.add_argument("--poll-max", type=float, default=0.2)
    p.add_argument("--until", help="hold-lock: release the lock once this file exists")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {args.name} %(name)s %(levelname)s %(message)s")
    worker = worker_from_url(args.url, args.path, args.name, lock_lease_s=args.lock_lease,
                             job_lease_s=args.job_lease, max_attempts=args.max_attempts,
                             heartbeat_s=args.job_lease / 4, poll_max_s=args.poll_max)

    if args.mode == "take-lock":
        worker._lock.acquire()  # dies right after taking the lock, before anything else
        print("LOCKED", flush=True)
        time.sleep(3600)

    if args.mode == "hold-lock":
        def hold(w):
            Path(w.path, "HALF-MADE").write_text("must never reach master\n")
            print("HOLDING", flush=True)
            while not (args.until and Path(args.until).exists()):
                time.sleep(0.05)
            Path(w.path, "HALF-MADE").unlink()
        worker.get_next_job(hold)
        return

    if args.mode == "hold-claim":
        def pick_then_wait(w):
            job = queue_jobs_func(w)
            print("HOLDING", flush=True)
            while not Path(args.until).exists():
                time.sleep(0.05)
            return job
        print(f"TOOK {worker.get_next_job(pick_then_wait)}", flush=True)
        return

    if args.mode == "one-job":
        job = worker.get_next_job(queue_jobs_func)
        print(f"TOOK {job}", flush=True)
        worker.finish_job()
        return

    job = None
    while True:
        try:
            if job is None:
                job = worker.get_next_job(queue_jobs_func)
                if job is None:
                    if not Ledger.read(Path(worker.path)).running:
                        return
                    time.sleep(0.3)
                    continue
            print(f"TOOK {job}", flush=True)
            time.sleep(random.randint(*args.sleep_ms) / 1000)
            Path(worker.job_dir, "result.txt").write_text(f"{job} by {args.name}\n")
            if args.mode == "block-job":
                worker.commit_update("partial result")
                print(f"RUNNING {job}", flush=True)
                time.sleep(3600)
            job = worker.finish_job(queue_jobs_func)  # finish and claim the next in one lock hold
        except MergeConflictError as exc:
            job = worker.fail_job(str(exc), queue_jobs_func)
        except JobStateError as exc:
            logging.warning("dropping job: %s", exc)
            job = worker.running_job
        except DistributeError as exc:
            logging.warning("retrying after: %s", exc)
            job = worker.running_job
            time.sleep(0.5)


if __name__ == "__main__":
    main()
