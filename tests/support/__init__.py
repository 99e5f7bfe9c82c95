"""What the tests share: fake servers, worker scripts, job modules and helpers.

``gitservers``, ``hubserver`` and ``vastserver`` serve git, the Hub and Vast.ai on 127.0.0.1;
``bigremote`` builds large remotes; ``proc_worker``, ``optuna_worker`` and ``hub_worker`` are
worker scripts run by path; ``cli_jobs`` and ``optuna_jobs`` are job modules that
``distribute worker --run MODULE:FUNCTION`` imports (:data:`SUPPORT_DIR` goes on the
``PYTHONPATH`` of those processes); ``remotes``, ``processes`` and ``hubdata`` hold the helpers.
No test module imports another one: what two of them need lives here.
"""
from pathlib import Path

#: This folder: put it on a process's ``PYTHONPATH`` to import the job modules by bare name.
SUPPORT_DIR = Path(__file__).resolve().parent
