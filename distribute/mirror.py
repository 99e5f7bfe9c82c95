"""Moved to :mod:`distribute.hub.mirror`; kept so that old imports keep working."""
from .hub.mirror import *  # noqa: F401,F403
from .hub.mirror import __all__  # noqa: F401
