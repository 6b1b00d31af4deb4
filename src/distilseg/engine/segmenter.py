"""Moved to ``distilseg.inference.segmenter``; this alias keeps the old import path (and monkeypatching it) working."""
import sys

from ..inference import segmenter as _moved

sys.modules[__name__] = _moved
