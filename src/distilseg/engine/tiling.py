"""Moved to ``distilseg.inference.tiling``; this alias keeps the old import path (and monkeypatching it) working."""
import sys

from ..inference import tiling as _moved

sys.modules[__name__] = _moved
