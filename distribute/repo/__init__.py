"""The git layer: the only code that runs git.

* :mod:`.process` starts git processes with a safe environment (no prompts, no command-running
  transports, ssh connection reuse);
* :mod:`.transport` talks to the remote: fetch, ls-remote and compare-and-swap ``--atomic`` pushes,
  retrying transport failures and classifying errors;
* :mod:`.clone` is a local copy of the remote (:class:`Clone`): creating it (slim: shallow,
  partial, sparse) and the local plumbing the layers above use;
* :mod:`.localcopy` owns a worker's copy on disk: its exclusive file lock, cloning or reusing it.
"""
from .clone import Clone
from .transport import PushResult, RefUpdate

__all__ = ["Clone", "PushResult", "RefUpdate"]
