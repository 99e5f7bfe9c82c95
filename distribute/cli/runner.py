"""Moved to :mod:`distribute.loop`; kept so that old imports keep working."""
from ..loop import LoopResult, RunFunc, run_worker_loop

__all__ = ["LoopResult", "RunFunc", "run_worker_loop"]
