"""Moved to ``distilseg.artifact``; this alias keeps the old import path (and monkeypatching it) working."""
import sys

from .. import artifact as _moved

sys.modules[__name__] = _moved
