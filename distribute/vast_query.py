"""Moved to :mod:`distribute.vast.query`; kept so that old imports keep working."""
from .vast.query import *  # noqa: F401,F403
from .vast.query import __all__  # noqa: F401
