"""Moved to :mod:`distribute.repo` (the git layer); kept so that old imports keep working."""
from .protocol import ORIGIN_MASTER, ZERO_SHA
from .repo.clone import Clone
from .repo.process import ALLOWED_PROTOCOLS, git_env
from .repo.transport import PushResult, RefUpdate

__all__ = ["Clone", "RefUpdate", "PushResult", "git_env", "ALLOWED_PROTOCOLS", "ZERO_SHA",
           "ORIGIN_MASTER"]
