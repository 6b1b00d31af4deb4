"""Deployment: ONNX export (fp32 / fp16 / INT8 QDQ), ONNX Runtime inference and latency benchmarks.

Heavy imports (onnx, onnxruntime) live inside the submodules so that ``import distilseg.export`` and the
CLI stay fast; import ``distilseg.export.onnx_export`` etc. directly.
"""
from __future__ import annotations

__all__ = ["export_onnx", "quantize_int8", "OnnxSegmenter", "benchmark"]


def __getattr__(name: str):  # lazy re-exports
    if name == "export_onnx":
        from .onnx_export import export_onnx

        return export_onnx
    if name == "quantize_int8":
        from .quantize import quantize_int8

        return quantize_int8
    if name == "OnnxSegmenter":
        from ..inference.onnx_backend import OnnxSegmenter

        return OnnxSegmenter
    if name == "benchmark":
        from .bench import benchmark

        return benchmark
    raise AttributeError(name)
