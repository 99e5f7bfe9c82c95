"""The original design's entry module: its scripts import ``distribute.dist`` and keep working.

Everything here lives in :mod:`distribute.connect`; the package itself never imports this module.
"""
from .connect import Worker, create_from_config, init_remote, worker_from_url

__all__ = ["Worker", "worker_from_url", "init_remote", "create_from_config"]
