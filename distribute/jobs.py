"""Moved to :mod:`distribute.next_jobs`; kept so that old imports keep working."""
from .next_jobs import queue_jobs_func, random_jobs_func, whetlab_make_next_jobs_func

__all__ = ["queue_jobs_func", "random_jobs_func", "whetlab_make_next_jobs_func"]
