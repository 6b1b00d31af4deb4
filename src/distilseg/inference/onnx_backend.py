"""ONNX Runtime inference with the same ``predict`` semantics as the PyTorch ``Segmenter``.

Why a class of its own: ``distilseg.load("model.onnx")`` must behave like loading an artifact folder
(classes, palette, normalization from the sidecar JSON; class maps at each input's own size), so that a
deployed INT8 model can be evaluated and demoed by the same code paths as the torch model.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..checks import size_pair
from ..errors import CheckpointError, UsageError
from ..io import read_json_object
from .preprocess import normalization_tensors
from .base import SegmenterBase

__all__ = ["OnnxSegmenter", "make_session", "run_logits", "sidecar_path", "read_sidecar"]


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.json`` (classes, palette, mean/std, input size, precision, check)."""
    return Path(onnx_path).with_suffix(".json")


def read_sidecar(onnx_path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar JSON next to an ONNX file ({} when there is none: defaults then apply)."""
    path = sidecar_path(onnx_path)
    if not path.is_file():
        return {}
    return read_json_object(path, "sidecar settings")


def _warn_if_int8_saturates(path: Path, config: dict[str, Any]) -> None:
    """An INT8 file with 8-bit weights (exported on a VNNI or ARM CPU) loses accuracy on an x86 CPU without VNNI,
    whose int8 kernels saturate; the export's own check ran on the exporting CPU and cannot see that."""
    quant = config.get("quantization")
    if not isinstance(quant, dict) or quant.get("reduce_range") is not False:
        return
    from .int8_cpu import default_reduce_range

    reduce, why = default_reduce_range()
    if reduce:
        warnings.warn(f"{path}: INT8 file with 8-bit weights, but {why}; "
                      f"re-export with --weight-bits 7 to run it on this CPU", UserWarning, stacklevel=3)


def check_graph_and_sidecar(session: Any, config: dict[str, Any], path: Path) -> None:
    """Refuse, in one line, a graph that is not a segmentation model (an N x 3 x H x W image in, N x C x H x W
    class scores out) and a sidecar whose values are malformed or whose class count is not the graph's."""
    from ..artifact import check_config

    inp, out = session.get_inputs()[0].shape, session.get_outputs()[0].shape
    if len(inp) != 4 or (isinstance(inp[1], int) and inp[1] != 3):
        raise CheckpointError(f"{path}: the graph's input has shape {list(inp)}, but a segmentation model takes "
                              f"N x 3 x H x W images")
    if len(out) != 4:
        raise CheckpointError(f"{path}: the graph's output has shape {list(out)} (a classifier?), but a "
                              f"segmentation model gives N x C x H x W class scores")
    if not config:
        return
    side = sidecar_path(path)
    graph_classes = out[1] if isinstance(out[1], int) else None
    if "num_classes" not in config and graph_classes is None:
        return  # the constructor's own message
    config = {**config, "architecture": str(config.get("architecture") or "onnx"),
              "num_classes": config.get("num_classes", graph_classes)}
    check_config(config, side)
    if graph_classes is not None and config["num_classes"] != graph_classes:
        raise CheckpointError(f"{side}: num_classes is {config['num_classes']} but {path.name} outputs "
                              f"{graph_classes} classes; the sidecar belongs to another model")


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def make_session(
    path: str | os.PathLike,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    spinning: bool | None = None,
):
    """An ``InferenceSession`` with all graph optimizations; ``threads`` sets ``intra_op_num_threads``.

    ``spinning=False`` stops idle worker threads from busy-waiting (better on a shared, loaded machine).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such ONNX file")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads is not None:
        if int(threads) < 1:
            raise UsageError(f"threads must be a positive integer, got {threads}")
        opts.intra_op_num_threads = int(threads)
    if spinning is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers or default_providers()))
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        if "InvalidProtobuf" in type(exc).__name__ or "INVALID_PROTOBUF" in str(exc) or "protobuf" in str(exc):
            raise CheckpointError(f"{path}: not a valid ONNX model ({str(exc).splitlines()[0]})") from exc
        raise


def _static_hw(session) -> tuple[int, int] | None:
    shape = session.get_inputs()[0].shape
    h, w = shape[2], shape[3]
    return (h, w) if isinstance(h, int) and isinstance(w, int) else None


def run_logits(session, batch: np.ndarray, stride: int = 1) -> np.ndarray:
    """Run ``session`` on an N x 3 x H x W float32 batch and return N x C x H x W logits.

    A dynamic graph is exported without the model's own padding (it was traced at a multiple of the
    network's stride), so the input is padded here, bottom/right with zeros (= the normalized mean) like
    ``SegmentationModel.forward``, and the logits are cropped back.
    """
    inp = session.get_inputs()[0]
    x = np.ascontiguousarray(batch, dtype=np.float32)
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % max(stride, 1), (-w) % max(stride, 1)
    if _static_hw(session) is None and (pad_h or pad_w):
        x = np.pad(x, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)))
    if inp.type == "tensor(float16)":
        x = x.astype(np.float16)
    out = session.run(None, {inp.name: x})[0]
    return np.asarray(out[..., :h, :w], dtype=np.float32)


class OnnxSegmenter(SegmenterBase):
    """Segment images with an exported ``.onnx`` model (fp32, fp16 or INT8).

    Same interface and semantics as the torch ``Segmenter`` (both are a ``SegmenterBase``; only the network
    pass differs): ``predict(images) -> list[HxW uint8]`` at each image's own size, ``predict_logits``
    (``C x H x W`` float32 arrays), ``class_names``, ``palette``, ``num_classes``, ``config``, ``input_size``
    (settable). Images are resized to ``input_size``: the graph's own size for a fixed-size export, else the
    sidecar's ``input_size`` (``None`` = each image's own size); the logits are resized back bilinearly
    before the argmax. Resize policies, sliding windows and TTA (``flip``, ``scales=``) come from
    ``SegmenterBase``, so they behave exactly as for the torch model.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.source = self.path
        self.session = make_session(self.path, providers=providers, threads=threads)
        self._config: dict[str, Any] = read_sidecar(self.path)
        check_graph_and_sidecar(self.session, self._config, self.path)
        _warn_if_int8_saturates(self.path, self._config)
        out_shape = self.session.get_outputs()[0].shape
        num_classes = self._config.get("num_classes")
        if num_classes is None:
            if not isinstance(out_shape[1], int):
                raise CheckpointError(
                    f"{self.path}: no sidecar {sidecar_path(self.path).name} and the output has no static "
                    f"class dimension"
                )
            num_classes = out_shape[1]
        self._config["num_classes"] = int(num_classes)
        self._mean, self._std = normalization_tensors(self._config.get("mean"), self._config.get("std"))
        self.static_size = _static_hw(self.session)
        self.input_size = self.static_size or self._config.get("input_size")
        self.stride = int(self._config.get("output_stride") or 1)
        self._stride = self.stride
        self.static_batch = self.session.get_inputs()[0].shape[0]

    def __repr__(self) -> str:
        return (f"OnnxSegmenter({str(self.path)!r}, num_classes={self.num_classes}, "
                f"input_size={self.input_size}, precision={self._config.get('precision')!r})")

    # ---- the SegmenterBase hooks -------------------------------------------------------------------
    def _parse_size(self, size: Sequence[int] | None) -> tuple[int, int] | None:
        size = size_pair(size, "input size", allow_none=True)
        if self.static_size is not None and size is not None and size != self.static_size:
            raise UsageError(
                f"{self.path}: this ONNX model has a fixed input size {list(self.static_size)}; "
                f"re-export with --dynamic to run at {list(size)}"
            )
        return size

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        """Run in chunks that fit a fixed batch dimension (padding the last chunk by repetition)."""
        x = batch.numpy()
        if self.static_size is not None and tuple(x.shape[-2:]) != tuple(self.static_size):
            raise UsageError(
                f"{self.path}: this ONNX model has a fixed input size {list(self.static_size)} but got "
                f"{list(x.shape[-2:])}; use --resize fixed (or --slide with that window), or export with a dynamic size"
            )
        if not isinstance(self.static_batch, int):
            return torch.from_numpy(run_logits(self.session, x, self.stride))
        b, n, parts = self.static_batch, x.shape[0], []
        for start in range(0, n, b):
            chunk = x[start : start + b]
            k = chunk.shape[0]
            if k < b:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - k, axis=0)])
            parts.append(run_logits(self.session, chunk, self.stride)[:k])
        return torch.from_numpy(np.concatenate(parts))
