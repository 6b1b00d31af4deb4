"""Export a segmentation model to ONNX (fp32 or fp16) with a sidecar JSON, and check it against PyTorch.

Why the TorchScript exporter (``dynamo=False``): for these plain CNNs it gives compact graphs with constant
folding and no extra runtime dependency, and it has been the reliable path for years; the dynamo exporter is
the fallback when the TorchScript one is missing or fails.

Why a sidecar: an ONNX graph carries no class names, palette or normalization; ``OnnxSegmenter`` reads them
from ``model.json`` next to ``model.onnx`` so a deployed model needs nothing else.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._version import __version__
from ..errors import CheckpointError, UsageError
from ..io import atomic_write, atomic_write_json
from ..inference.onnx_backend import make_session, run_logits, sidecar_path
from ..data.base import IMAGENET_MEAN, IMAGENET_STD
from ..checks import size_pair
from .sources import preprocess

__all__ = ["LogitsOnly", "export_onnx", "check_onnx", "synthetic_images", "build_sidecar", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17
DEFAULT_SIZE = (512, 512)


class LogitsOnly(nn.Module):
    """Wrap a model so the traced graph has one output, the ``N x C x H x W`` logits.

    With ``dynamic=True`` a ``SegmentationModel`` runs its ``_forward`` directly: the base class's padding
    amounts are Python ints that tracing would freeze at the export size, so the graph leaves padding to
    the caller (``run_logits`` pads to ``output_stride``) and upsamples low-resolution logits to the input's
    traced size, which stays symbolic in the graph.
    """

    def __init__(self, model: nn.Module, dynamic: bool = False) -> None:
        super().__init__()
        self.model = model
        self.dynamic = dynamic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..models.base import SegmentationModel

        if self.dynamic and isinstance(self.model, SegmentationModel):
            out: Any = self.model._forward(x)[0]
            if out.shape[-2:] != x.shape[-2:]:
                out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
            return out
        out = self.model(x)
        if isinstance(out, dict):
            out = out.get("logits", out.get("out"))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out


def build_sidecar(
    config: dict[str, Any],
    *,
    img_size: tuple[int, int],
    dynamic: bool,
    opset: int,
    precision: str,
    output_stride: int = 1,
    source: str | None = None,
) -> dict[str, Any]:
    """Everything ``OnnxSegmenter`` needs that the graph does not carry."""
    num_classes = int(config["num_classes"])
    names = config.get("class_names") or [f"class_{i}" for i in range(num_classes)]
    palette = config.get("palette")
    if palette is None:
        from ..viz.palette import default_palette

        palette = default_palette(num_classes)
    return {
        "format": "distilseg-onnx",
        "architecture": config.get("architecture"),
        "model_args": config.get("model_args", {}),
        "num_classes": num_classes,
        "class_names": list(names),
        "palette": np.asarray(palette, dtype=np.uint8).reshape(-1, 3).tolist(),
        "mean": list(config.get("mean") or IMAGENET_MEAN),
        "std": list(config.get("std") or IMAGENET_STD),
        "input_size": [int(img_size[0]), int(img_size[1])],
        "dynamic": bool(dynamic),
        "output_stride": int(output_stride),
        "ignore_index": int(config.get("ignore_index", 255)),
        "dataset": config.get("dataset"),
        "opset": int(opset),
        "precision": precision,
        "input_name": "input",
        "output_name": "logits",
        "source": source,
        "distilseg_version": __version__,
    }


def _trace_export(wrapper: nn.Module, dummy: torch.Tensor, path: str, opset: int, dynamic: bool) -> None:
    axes = {0: "batch", 2: "height", 3: "width"}
    dynamic_axes = {"input": axes, "logits": axes} if dynamic else None
    common = dict(input_names=["input"], output_names=["logits"], opset_version=opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python branches
        try:
            torch.onnx.export(
                wrapper, (dummy,), path, dynamo=False, do_constant_folding=True, dynamic_axes=dynamic_axes,
                **common,
            )
            return
        except (TypeError, RuntimeError, NotImplementedError) as exc:  # TorchScript exporter gone or failing
            first_error = exc
        try:
            shapes = None
            if dynamic:
                dim = torch.export.Dim
                shapes = {"x": {0: dim("batch", min=1), 2: dim("height", min=8), 3: dim("width", min=8)}}
            program = torch.onnx.export(wrapper, (dummy,), dynamo=True, dynamic_shapes=shapes, **common)
            program.save(path)
        except Exception as exc:
            raise CheckpointError(
                f"ONNX export failed with both exporters: TorchScript: {first_error}; dynamo: {exc}"
            ) from exc


def export_onnx(
    model: nn.Module,
    config: dict[str, Any],
    out: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = False,
    img_size: Sequence[int] | None = None,
    fp16: bool = False,
    source: str | None = None,
    batch: int = 1,
) -> Path:
    """Write ``out`` (ONNX, input ``input``, output ``logits``) and its sidecar ``out.json``; return ``out``.

    ``img_size`` defaults to the artifact's ``input_size`` (else 512x512). ``fp16`` converts weights and
    compute to float16 but keeps the graph's input and output float32. ``batch`` is the traced (and, without
    ``dynamic``, fixed) batch size.
    """
    out = Path(out)
    if out.suffix != ".onnx":
        raise UsageError(f"{out}: the output file must end in .onnx")
    if not 7 <= int(opset) <= 21:
        raise UsageError(f"--opset must be between 7 and 21, got {opset}")
    size = size_pair(img_size, allow_none=True) or size_pair(config.get("input_size"), allow_none=True) or DEFAULT_SIZE
    stride = int(getattr(model, "output_stride", 1) or 1)
    model = model.eval().float().cpu()
    wrapper = LogitsOnly(model, dynamic=dynamic).eval()
    trace_size = size
    if dynamic:  # trace at a multiple of the stride so that no padding is frozen into the graph
        trace_size = (-(-size[0] // stride) * stride, -(-size[1] // stride) * stride)
    dummy = torch.randn(int(batch), 3, *trace_size)
    with torch.no_grad():
        atomic_write(out, lambda tmp: _trace_export(wrapper, dummy, tmp, int(opset), dynamic))
    if fp16:
        _convert_fp16(out)
    config = dict(config)
    config.setdefault("architecture", getattr(model, "distilseg_arch", None))
    config.setdefault("model_args", getattr(model, "distilseg_args", {}))
    sidecar = build_sidecar(
        config, img_size=size, dynamic=dynamic, opset=int(opset), precision="fp16" if fp16 else "fp32",
        output_stride=stride if dynamic else 1, source=source,
    )
    atomic_write_json(sidecar_path(out), sidecar)
    return out


def _convert_fp16(path: Path) -> None:
    """float16 weights and compute, float32 graph inputs/outputs (onnxruntime's own converter)."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        try:
            from onnxconverter_common.float16 import convert_float_to_float16  # type: ignore
        except ImportError as exc:
            raise UsageError("--fp16 needs onnxruntime.transformers or onnxconverter-common") from exc
    model = onnx.load(str(path))
    converted = convert_float_to_float16(model, keep_io_types=True)
    atomic_write(path, lambda tmp: onnx.save(converted, tmp))


def synthetic_images(count: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Smooth random RGB images (upsampled coarse noise): unlike white noise, they have regions and edges,
    so class maps are not dominated by near-tied logits."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        coarse = torch.rand(1, 3, max(size[0] // 8, 2), max(size[1] // 8, 2), generator=gen) * 255
        img = F.interpolate(coarse, size=tuple(size), mode="bilinear", align_corners=False)
        out.append(img[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy())
    return out


def check_onnx(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    images: Sequence[np.ndarray],
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    size: tuple[int, int] | None = None,
    source: str = "synthetic",
) -> dict[str, Any]:
    """Compare ONNX Runtime with the PyTorch fp32 model on ``images`` (HxWx3 uint8) at ``size``.

    Returns ``max_abs_logit_diff`` (over all logits), ``pixel_agreement`` (fraction of pixels whose argmax
    class is the same), ``num_images`` and ``source``.
    """
    from ..inference.onnx_backend import read_sidecar

    side = read_sidecar(onnx_path)
    session = make_session(onnx_path, providers=["CPUExecutionProvider"])
    stride = int(side.get("output_stride") or 1)
    model = model.eval().float().cpu()
    max_diff, max_ref, agree, total = 0.0, 0.0, 0, 0
    for image in images:
        x = preprocess(image, size, mean, std)[None]
        with torch.no_grad():
            ref = LogitsOnly(model)(torch.from_numpy(x)).numpy()
        got = run_logits(session, x, stride)
        if got.shape != ref.shape:
            raise CheckpointError(f"{onnx_path}: ONNX logits have shape {got.shape}, PyTorch {ref.shape}")
        max_diff = max(max_diff, float(np.abs(got - ref).max()))
        max_ref = max(max_ref, float(np.abs(ref).max()))
        agree += int((got.argmax(1) == ref.argmax(1)).sum())
        total += ref.shape[0] * ref.shape[2] * ref.shape[3]
    return {
        "max_abs_logit_diff": max_diff,
        "max_abs_logit": max_ref,
        "pixel_agreement": agree / max(total, 1),
        "num_images": len(images),
        "source": source,
    }


#: Default parity thresholds. fp32/fp16: the largest |ONNX - PyTorch| logit difference relative to the
#: logit scale (max(1, max |logit|)): a fp32 graph that computes the same function differs by rounding only
#: (~1e-6), fp16 by ~1e-3; pixel agreement is not used for them because an untrained model's near-ties
#: flip on rounding noise. INT8 changes logits by design: the share of pixels whose class agrees is judged.
DEFAULT_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}
DEFAULT_MIN_AGREEMENT = {"int8": 0.90}


def check_verdict(
    check: dict[str, Any], precision: str, tolerance: float | None = None, min_agreement: float | None = None
) -> str | None:
    """Why the check fails (one sentence), or ``None`` when the ONNX file agrees with PyTorch.

    ``tolerance`` (relative max logit difference) defaults by precision for fp32/fp16 (``DEFAULT_TOLERANCE``);
    ``min_agreement`` (pixel agreement) defaults to 0.90 for int8 and, when given, applies to any precision.
    """
    tol = tolerance if tolerance is not None else DEFAULT_TOLERANCE.get(precision)
    agree_min = min_agreement if min_agreement is not None else DEFAULT_MIN_AGREEMENT.get(precision)
    scale = max(1.0, float(check.get("max_abs_logit", 0.0)))
    rel = float(check["max_abs_logit_diff"]) / scale
    if tol is not None and not rel <= tol:  # also catches NaN
        return (f"max |logit diff| {check['max_abs_logit_diff']:.3g} is {rel:.3g} of the logit scale "
                f"{scale:.3g}, above the {precision} tolerance {tol:g}")
    agree = float(check["pixel_agreement"])
    if agree_min is not None and not agree >= agree_min:
        return f"class maps agree on {100 * agree:.2f}% of the pixels, below {100 * agree_min:.2f}%"
    return None


def export_checkpoint(
    checkpoint: str,
    out: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = False,
    img_size: Sequence[int] | None = None,
    fp16: bool = False,
    int8: bool = False,
    calibration_dataset: str | None = None,
    calibration_root: str | None = None,
    calibration_split: str = "train",
    calibration_images: int = 64,
    calibration_dataset_args: dict[str, Any] | None = None,
    check_images: int = 4,
    check_split: str | None = None,
    reduce_range: bool | None = None,
    keep_head_float: bool = True,
    tolerance: float | None = None,
    min_agreement: float | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """The ``distilseg export`` pipeline: load, export, optionally quantize, check; returns a summary.

    The check compares with the PyTorch fp32 model on ``check_images`` images of the calibration dataset
    (its ``check_split``, default the calibration split) when one is given, else on synthetic images; its
    numbers are also written into the sidecar under ``"check"``. With ``strict`` (the default) a file that
    disagrees beyond ``tolerance`` / ``min_agreement`` (see ``check_verdict``) is not written and a
    ``CheckpointError`` raised; ``strict=False`` records the verdict and keeps the file. The files are made in a
    folder next to ``out`` and moved there only when they pass (``targets`` says which files may be replaced).
    """
    from .sources import dataset_images, load_torch_model
    from .targets import check_export_options, check_export_target

    check_export_options(fp16, int8, calibration_dataset, check_images, tolerance, min_agreement, opset, img_size)
    final = Path(out)
    if final.suffix != ".onnx":
        raise UsageError(f"{final}: the output file must end in .onnx")
    check_export_target(final, "distilseg-onnx")
    model, config = load_torch_model(checkpoint)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=final.parent) as staging:
        out = Path(staging) / final.name
        size = size_pair(img_size, allow_none=True) or size_pair(config.get("input_size"), allow_none=True) or DEFAULT_SIZE
        mean, std = config.get("mean") or IMAGENET_MEAN, config.get("std") or IMAGENET_STD
        if int8:
            from .quantize import default_reduce_range, quantize_int8

            weight_bits_reason = "as asked by --weight-bits"
            if reduce_range is None:
                reduce_range, weight_bits_reason = default_reduce_range()

            calib = dataset_images(calibration_dataset, calibration_root, calibration_split, calibration_images,
                                   calibration_dataset_args)
            with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as td:
                fp32 = export_onnx(model, config, Path(td) / "fp32.onnx", opset=opset, dynamic=dynamic,
                                   img_size=size, source=str(checkpoint))
                stride = int(getattr(model, "output_stride", 1) or 1) if dynamic else 1
                inputs = [preprocess(im, size, mean, std) for im in calib]
                quantize_int8(fp32, out, inputs, stride=stride, reduce_range=reduce_range,
                              keep_head_float=keep_head_float)
                side = build_sidecar(config, img_size=size, dynamic=dynamic, opset=int(opset), precision="int8",
                                     output_stride=stride, source=str(checkpoint))
                side["calibration"] = {"dataset": calibration_dataset, "split": calibration_split,
                                       "num_images": len(calib)}
                if calibration_dataset_args:
                    side["calibration"]["dataset_args"] = dict(calibration_dataset_args)
                side["quantization"] = {"format": "QDQ", "activations": "QUInt8", "weights": "QInt8",
                                        "per_channel": True, "reduce_range": bool(reduce_range),
                                        "weight_bits": 7 if reduce_range else 8, "weight_bits_reason": weight_bits_reason,
                                        "head_float": bool(keep_head_float), "calibration_method": "minmax"}
                atomic_write_json(sidecar_path(out), side)
        else:
            export_onnx(model, config, out, opset=opset, dynamic=dynamic, img_size=size, fp16=fp16,
                        source=str(checkpoint))
        quantization = side["quantization"] if int8 else None
        check: dict[str, Any] | None = None
        if check_images:
            if calibration_dataset:
                split = check_split or calibration_split
                images = dataset_images(calibration_dataset, calibration_root, split, check_images,
                                        calibration_dataset_args)
                src = f"{calibration_dataset}:{split}"
            else:
                images, src = synthetic_images(check_images, size), "synthetic"
            check = check_onnx(model, out, images, mean=mean, std=std, size=size, source=src)
            precision = "int8" if int8 else "fp16" if fp16 else "fp32"
            problem = check_verdict(check, precision, tolerance, min_agreement)
            check["passed"] = problem is None
            if problem is not None and strict:
                raise CheckpointError(
                    f"{final}: the exported {precision} model disagrees with PyTorch on {check['num_images']} "
                    f"{src} image(s): {problem}; not written, any earlier file is kept (--tolerance / --min-agreement to accept more, "
                    f"--no-check to keep it anyway)"
                )
            from ..inference.onnx_backend import read_sidecar

            side = read_sidecar(out)
            side["check"] = check
            atomic_write_json(sidecar_path(out), side)
        os.replace(out, final)  # the graph first, its sidecar last (as an artifact's config.json)
        os.replace(sidecar_path(out), sidecar_path(final))
    out = final
    return {
        "onnx": str(out),
        "sidecar": str(sidecar_path(out)),
        "size_mb": out.stat().st_size / 1e6,
        "precision": "int8" if int8 else "fp16" if fp16 else "fp32",
        "img_size": list(size),
        "dynamic": dynamic,
        "opset": int(opset),
        "quantization": quantization,
        "check": check,
    }

