"""Moved to :mod:`distribute.connect`; kept so that old imports keep working."""
from .connect import Worker, create_from_config, init_remote, worker_from_url

__all__ = ["Worker", "worker_from_url", "init_remote", "create_from_config"]
