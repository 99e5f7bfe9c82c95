"""The sweep of tests/test_optuna.py, shared by ``optuna_worker.py`` and ``distribute worker``.

``distribute worker URL --run optuna_jobs:run --next-job optuna_jobs:search.next_job`` binds
``search`` to the CLI's worker on its first claim. ``SWEEP_TRIALS`` and ``SWEEP_SEED`` (environment)
set ``n_trials`` and the sampler's seed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna

from distribute.optuna import OptunaSearch

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {"x": optuna.distributions.FloatDistribution(0.0, 1.0),
         "n": optuna.distributions.IntDistribution(1, 4)}


def value_at(params: dict[str, Any]) -> float:
    """The objective as a function of the parameters (the tests check the journal against it)."""
    return (params["x"] - 0.3) ** 2 + params["n"]


def make_search(worker: Any = None) -> OptunaSearch:
    seed = int(os.environ.get("SWEEP_SEED", "7"))
    return OptunaSearch(worker, "sweep", SPACE, direction="minimize",
                        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
                        n_trials=int(os.environ.get("SWEEP_TRIALS", "10")))


def objective(trial: optuna.Trial) -> float:
    """Reads the trial's params, writes ``result.txt`` into the job directory."""
    value = value_at(trial.params)
    worker = search.worker
    assert worker is not None and worker.job_dir is not None
    Path(worker.job_dir, "result.txt").write_text(f"{trial.number} {value!r} {worker.name}\n")
    return value


search = make_search()
run = search.runner(objective)
