"""Moved to :mod:`distribute.cli.hub`; kept so that old imports (and ``python -m``) keep working."""
import sys

from .cli.hub import main, register

__all__ = ["main", "register"]

if __name__ == "__main__":
    sys.exit(main())
