"""Inference: the predictor (``Segmenter``, PyTorch and ONNX Runtime backends), ``load``, preprocessing,
inference options (resize policies, sliding windows, TTA) and tiling.

Imports go one way: ``training``, ``apps``, ``export``, ``distill`` and the CLI use this package; it uses only the
lower layers (``artifact``, ``models``, ``data``, ``viz``, ``io``, ``errors``, ``checks``), never them.
"""
from __future__ import annotations

from .options import InferenceOptions, add_inference_arguments, options_from_args, parse_tta, resolve_options
from .segmenter import Segmenter, SegmenterBase, find_onnx, load, read_image, to_rgb_array

__all__ = ["load", "find_onnx", "Segmenter", "SegmenterBase", "read_image",
           "to_rgb_array", "InferenceOptions", "parse_tta", "resolve_options", "add_inference_arguments",
           "options_from_args"]
