"""The git layer: the only code that runs git.

* :mod:`.process` starts git processes with a safe environment (no prompts, no command-running
  transports, ssh connection reuse);
* :mod:`.transport` talks to the remote: fetch, ls-remote and compare-and-swap ``--atomic`` pushes,
  retrying transport failures and classifying errors; :mod:`.verify` decides where a push answered
  "ok" is read back before it counts as applied (a host may misreport);
* :mod:`.reading` reads the copy's commits, trees and objects by name (``commit_time``,
  ``first_parent_log``, ``changed_paths``…), :mod:`.plumbing` writes objects and refs and changes
  the index and the work tree (``commit_tree``, ``write_tree``, ``checkout_detached``,
  ``rebase_onto``…), :mod:`.trees` edits trees without an index;
* :mod:`.clone` is a local copy of the remote (:class:`Clone`, which has all of the above):
  creating it (slim: shallow, partial, sparse) and a few local helpers;
* :mod:`.localcopy` owns a worker's copy on disk: its exclusive file lock, cloning or reusing it.
* :mod:`.refusals`
  reads a host's refusals (a file too large, only branches and tags), :mod:`.probes` is
  ``distribute doctor``'s probing of a host.
* :mod:`.bulkdelete` deletes many refs of the remote in few pushes, each deletion a
  compare-and-swap (``distribute prune``); over smart HTTP :mod:`.smarthttp` posts its batches.
"""
from .clone import Clone
from .transport import PushResult, RefUpdate

__all__ = ["Clone", "PushResult", "RefUpdate"]
