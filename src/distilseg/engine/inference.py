"""Moved to ``distilseg.inference.options``; this alias keeps the old import path (and monkeypatching it) working."""
import sys

from ..inference import options as _moved

sys.modules[__name__] = _moved
