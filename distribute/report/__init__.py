"""The progress report of a remote's jobs (``distribute report``; ``docs/report.md``).

* :mod:`.history` — ``master``'s first-parent history as ``(commit time, subject)``, read once per
  copy and then only the new commits (:func:`read_history`);
* :mod:`.model` — the report's data, one JSON-ready dict from one read of the remote
  (:func:`collect`, :func:`build_model`, :func:`status_subset`);
* :mod:`.page` — that data as one self-contained HTML page (:func:`render`);
* :mod:`.publish` — the page committed to a branch of the remote other than ``master``, with a
  compare-and-swap push (:func:`publish_page`).

Everything public is re-exported here (``from distribute import report; report.collect(worker)``).
"""
from .history import History, read_history
from .model import build_model, collect, status_subset
from .page import render
from .publish import COMMIT_PREFIX, DEFAULT_BRANCH, PAGE_FILE, is_page_branch, publish_page

__all__ = ["History", "read_history", "build_model", "collect", "status_subset", "render",
           "publish_page", "is_page_branch", "DEFAULT_BRANCH", "PAGE_FILE", "COMMIT_PREFIX"]
