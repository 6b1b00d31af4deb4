"""Moved to ``distilseg.inference.preprocess``; this alias keeps the old import path (and monkeypatching it) working."""
import sys

from .inference import preprocess as _moved

sys.modules[__name__] = _moved
