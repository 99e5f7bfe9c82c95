"""An Optuna sweep whose study lives in the git remote: ``optuna/<study>.log`` on ``master``.

Two workers share one remote (a throw-away local bare repository unless you pass a URL). Each
asks the study for a trial under the remote lock (the params are committed with the claim), runs
the objective, and tells the value in the commit that finishes the job. At the end the study is
read back from a plain clone with nothing but Optuna::

    pip install 'git-distribute[optuna]'
    python examples/optuna_sweep.py [REMOTE] [--trials N] [--workers N]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

try:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
except ImportError:  # pragma: no cover - the optional dependency is missing
    sys.exit("this example needs Optuna: pip install 'git-distribute[optuna]'")

import distribute
from distribute.cli.demo import make_bare_remote
from distribute.optuna import OptunaSearch

SPACE = {"x": optuna.distributions.FloatDistribution(-2.0, 2.0),
         "y": optuna.distributions.FloatDistribution(-2.0, 2.0)}


def objective(x: float, y: float) -> float:
    """The expensive function being tuned (its minimum is at x=0.3, y=-0.5)."""
    return (x - 0.3) ** 2 + (y + 0.5) ** 2


def work(url: str, path: Path, name: str, trials: int, seed: int) -> None:
    """One worker: the loop of docs/optuna.md, finishing and claiming in one lock hold."""
    worker = distribute.worker_from_url(url, path, name)
    search = OptunaSearch(worker, "sweep", SPACE, direction="minimize",
                          sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
                          n_trials=trials)
    try:
        job = worker.get_next_job(search.next_job)  # asks the study for a trial, under the lock
        while job is not None:  # None: all trials asked and none left to run
            trial = search.trial()  # trial.params was sampled at the ask
            value = objective(trial.params["x"], trial.params["y"])
            Path(worker.job_dir or ".", "log.txt").write_text(f"{job}: {value}\n")
            # tell the study, finish the job and ask for the next trial: one lock hold
            job = search.finish(value, search.next_job)
    finally:
        search.close()
        worker.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("remote", nargs="?", help="a remote URL (default: a temporary bare repo)")
    parser.add_argument("--trials", type=int, default=12, help="trials in the study (12)")
    parser.add_argument("--workers", type=int, default=2, help="workers (threads here; 2)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="distribute-optuna-") as tmp:
        url = args.remote or make_bare_remote(Path(tmp) / "remote.git")
        distribute.init_remote(url)
        # (threads for brevity; in real life one process per machine, e.g. one per GPU)
        threads = [threading.Thread(target=work, args=(url, Path(tmp) / f"w{i}", f"gpu-{i}",
                                                       args.trials, 7 + i))
                   for i in range(1, args.workers + 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # anyone can read the study: a plain clone and plain Optuna
        plain = Path(tmp) / "plain"
        subprocess.run(["git", "clone", "--quiet", url, str(plain)], check=True)
        storage = JournalStorage(JournalFileBackend(str(plain / "optuna" / "sweep.log")))
        study = optuna.load_study(study_name="sweep", storage=storage)
        states = sorted({t.state.name for t in study.trials})
        print(f"{len(study.trials)} trials ({', '.join(states)}) in optuna/sweep.log on master")
        print(f"best: trial {study.best_trial.number}, value {study.best_value:.5f}, params "
              + ", ".join(f"{k}={v:.4f}" for k, v in sorted(study.best_params.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
