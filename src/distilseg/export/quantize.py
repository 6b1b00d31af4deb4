"""Static INT8 quantization of an exported ONNX model (QDQ format, per-channel weights).

Why these settings: on x86 CPUs ONNX Runtime's fastest INT8 kernels take uint8 activations and int8
weights (U8S8); per-channel weight scales keep conv layers with very different filter ranges accurate, and
the QDQ format lets the runtime fuse DequantizeLinear -> Conv -> QuantizeLinear into integer kernels while
the file stays a standard ONNX graph. ``quant_pre_process`` (shape inference + graph optimization, which
folds BatchNorm into convs) runs first so that the quantizer sees the graph the runtime will execute.
``reduce_range=True`` (7-bit weights) avoids the int16 overflow of the U8S8 kernels on x86 CPUs without
VNNI (AVX2 / AVX-512 ``vpmaddubsw`` saturates): measured on an AVX2 machine with a U-Net on CamVid,
agreement with fp32 went from 82% to 97% by this flag alone. On VNNI (and ARM) CPUs the kernels do not
saturate and the eighth bit is worth keeping: 7-bit weights cost the CamVid stride-8 students 0.1-0.8 mIoU
points, 8-bit at most 0.2 (benchmarks/results/camvid_student_fpn8_*). So the default (``reduce_range=None``)
is chosen for the CPU that exports, which is usually the one that deploys (ONNX Runtime's own default is
8-bit): 8-bit on ARM and on x86 with VNNI, 7-bit on other x86 CPUs; ``--weight-bits 7|8`` overrides it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import UsageError
from ..inference.int8_cpu import default_reduce_range
from ..io import atomic_write

__all__ = ["ArrayCalibrationReader", "quantize_int8", "default_reduce_range"]

_METHODS = ("minmax", "entropy", "percentile")


def _reader_base():
    from onnxruntime.quantization import CalibrationDataReader

    return CalibrationDataReader


class ArrayCalibrationReader(_reader_base()):  # type: ignore[misc]
    """Feeds preprocessed ``3 x H x W`` float32 arrays one at a time as ``{"input": 1x3xHxW}``.

    Arrays are padded bottom/right to a multiple of ``stride`` (dynamic graphs, see ``run_logits``).
    """

    def __init__(self, arrays: Sequence[np.ndarray], input_name: str = "input", stride: int = 1) -> None:
        self.arrays = list(arrays)
        self.input_name = input_name
        self.stride = max(int(stride), 1)
        self._it = iter(self.arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        if x is None:
            return None
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        pad_h, pad_w = (-x.shape[-2]) % self.stride, (-x.shape[-1]) % self.stride
        if pad_h or pad_w:
            x = np.pad(x, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)))
        return {self.input_name: np.ascontiguousarray(x)}

    def rewind(self) -> None:
        self._it = iter(self.arrays)


#: onnxruntime's symbolic shape inference, when it gives up, dumps its partial model (weights as a uuid-named
#: external data file) into the current directory before raising (onnxruntime 1.2x, symbolic_shape_infer.py).
_SYMBOLIC_DUMP = "sym_shape_infer_temp.onnx"


def _static_input(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return all(d.HasField("dim_value") and d.dim_value > 0
               for i in graph.input for d in i.type.tensor_type.shape.dim)


def _remove_dump(folder: Path, before: set[str]) -> None:
    """Delete onnxruntime's debugging dump and the external data files it names, if this call created them
    (names not in ``before``); nothing else is touched."""
    import onnx

    dump = folder / _SYMBOLIC_DUMP
    if _SYMBOLIC_DUMP in before or not dump.is_file():
        return
    try:
        model = onnx.load(str(dump), load_external_data=False)
    except Exception:  # noqa: BLE001 - a half-written dump: remove just the file
        model = None
    if model is not None:
        for init in model.graph.initializer:
            for entry in init.external_data:
                name = entry.value
                if entry.key == "location" and Path(name).name == name and name not in before:
                    (folder / name).unlink(missing_ok=True)
    dump.unlink(missing_ok=True)


def _pre_process(fp32_path: Path, prepped: Path) -> None:
    """Shape inference + optimization before quantization, leaving nothing in the user's directory.

    A fixed-size graph gets ONNX's own shape inference, which is exact there (the QDQ graph comes out the same
    as with symbolic inference). A graph with dynamic axes tries onnxruntime's symbolic inference first; it
    gives up on some graphs (e.g. TF "SAME" padding computed from shapes) or cannot write its dump (read-only
    current directory), and then ONNX's inference is enough for static QDQ quantization; the dump it left in
    the current directory is removed.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if _static_input(fp32_path):
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
        return
    cwd = Path.cwd()
    before = {p.name for p in cwd.iterdir()}
    try:
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=False)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises a bare Exception for this
        if "symbolic shape inference" not in str(exc).lower() and not isinstance(exc, OSError):
            raise
        _remove_dump(cwd, before)
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)


def quantize_int8(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: Iterable[np.ndarray],
    *,
    stride: int = 1,
    per_channel: bool = True,
    reduce_range: bool | None = None,
    method: str = "minmax",
    exclude: Sequence[str] | None = None,
    keep_head_float: bool = True,
) -> Path:
    """Quantize ``fp32_path`` to ``out_path`` with static QDQ INT8 calibrated on ``calibration`` arrays.

    ``calibration``: preprocessed ``3 x H x W`` (or ``1 x 3 x H x W``) float32 arrays, normalized exactly as
    at inference time. ``reduce_range``: 7-bit weights; ``None`` (default) asks ``default_reduce_range``. ``exclude``: node
    names kept in float. ``keep_head_float`` (default on) also keeps the last Conv (the classifier) in float:
    it is a tiny share of the compute, but quantizing its output puts the quantization step straight onto
    the logits, where near-tied classes flip (measured: 97.0% -> 98.7% agreement). Writes ``out_path``
    atomically and returns it.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    if reduce_range is None:
        reduce_range = default_reduce_range()[0]
    arrays = list(calibration)
    if not arrays:
        raise UsageError("INT8 quantization needs at least one calibration image")
    if method not in _METHODS:
        raise UsageError(f"unknown calibration method {method!r}; choose one of {', '.join(_METHODS)}")
    fp32_path, out_path = Path(fp32_path).resolve(), Path(out_path).resolve()
    calib_method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    with tempfile.TemporaryDirectory(prefix="distilseg-quant-") as td:
        prepped = Path(td) / "prepped.onnx"
        _pre_process(fp32_path, prepped)
        reader = ArrayCalibrationReader(arrays, stride=stride)
        excluded = list(exclude or [])
        if keep_head_float:
            excluded += output_conv_names(prepped)

        def _write(tmp: str) -> None:
            # Absolute paths only, and no os.chdir (process-global: it would move every other thread's
            # relative paths): onnxruntime >= 1.18 writes its augmented calibration model into a
            # tempfile.TemporaryDirectory of its own.
            quantize_static(
                str(prepped),
                str(Path(tmp).resolve()),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calib_method,
                nodes_to_exclude=excluded,
                # a LayerNormalization's scale is 1-D: its channels are axis 0 (the default axis 1 does not
                # exist there, so onnxruntime would warn once per layer and fall back to one scale for all)
                extra_options={"QDQOpTypePerChannelSupportToAxis": {"LayerNormalization": 0}},
            )

        out_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out_path, _write)
    return out_path


#: Weightless ops between a classifier conv and the graph output, and which of their inputs carry the data:
#: walking back from the output passes through these and stops at the first Conv on each path. Only the
#: data input of a Resize / Slice / Pad ... is followed, never its sizes / starts (a Shape subgraph of an
#: earlier feature map would lead to a body conv).
_DATA_INPUT_OPS = frozenset({
    "Resize", "Upsample", "Slice", "Pad", "Transpose", "Reshape", "Identity", "Cast", "Squeeze", "Unsqueeze",
    "Flatten", "Softmax", "LogSoftmax", "Clip", "BatchNormalization", "Expand", "Tile", "Dropout",
})
_ALL_INPUT_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Concat", "Max", "Min", "Mean", "Sum"})


def output_conv_names(path: str | os.PathLike) -> list[str]:
    """Names of the Conv nodes that produce the graph's outputs (the classifier), found by walking back
    from each output through weightless ops (``Resize``, ``Add``, ``Slice``, ...).

    Why not "the last Conv in node order": node order is a topological order, not "closest to the
    output"; a branch computed late (an auxiliary head, a side path) can come after the classifier.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output if out}
    initializers = {t.name for t in graph.initializer}
    found: list[str] = []
    seen: set[str] = set()
    stack = [o.name for o in graph.output]
    while stack:
        name = stack.pop()
        if name in seen or name in initializers:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is None:
            continue
        if node.op_type == "Conv":
            if node.name and node.name not in found:
                found.append(node.name)
            continue
        if node.op_type in _DATA_INPUT_OPS:
            stack.extend(node.input[:1])
        elif node.op_type in _ALL_INPUT_OPS:
            stack.extend(i for i in node.input if i)
        elif node.op_type == "Where":
            stack.extend(i for i in node.input[1:] if i)
    return found


def last_conv_names(path: str | os.PathLike) -> list[str]:
    """Backward-compatible name of ``output_conv_names``."""
    return output_conv_names(path)
