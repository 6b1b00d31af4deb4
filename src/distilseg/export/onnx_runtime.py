"""Moved to ``distilseg.inference.onnx_backend``; this alias keeps the old import path (and monkeypatching it) working."""
import sys

from ..inference import onnx_backend as _moved

sys.modules[__name__] = _moved
