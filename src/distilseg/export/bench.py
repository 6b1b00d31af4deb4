"""Latency, size and compute of a model on one runtime: ``distilseg bench`` and ``benchmark()``.

Conventions (so that numbers from different runs compare):
- ``gflops``: ``torch.utils.flop_counter.FlopCounterMode`` total / 1e9 for ONE image at ``img_size``. It
  counts 2 FLOPs per multiply-add (so GMACs = gflops / 2) and counts only conv/matmul-like ops (not
  activations, pooling or resizes). For an ONNX file it is computed on the architecture named in the
  sidecar (same graph, random weights); ``None`` when that cannot be rebuilt.
- ``params``: parameter elements of the torch model; for an ONNX file the number of initializer elements
  (BatchNorm folded into convs, so slightly fewer).
- ``size_mb``: bytes / 1e6 of the ONNX file or ``model.safetensors``; for a bare model params x element size.
- runtimes: ``torch`` (eager), ``onnxruntime`` (a torch model is exported to a temporary fixed-size ONNX
  file first), ``torchscript`` (traced + frozen), ``compile`` (``torch.compile``/inductor: it compiles
  during the first warmup pass, which needs a C++ compiler and can take minutes; keep ``warmup >= 1``).
- latency: wall time of ``runs`` forward passes of a ``batch x 3 x H x W`` input after ``warmup`` passes;
  ``fps = batch * 1000 / latency_ms_median``.
"""
from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import UsageError
from ..inference.segmenter import find_onnx
from ..checks import size_pair

__all__ = ["benchmark", "RUNTIMES", "count_gflops", "onnx_param_count"]

RUNTIMES = ("torch", "onnxruntime", "torchscript", "compile")


def count_gflops(model: nn.Module, img_size: tuple[int, int]) -> float:
    """FlopCounterMode FLOPs / 1e9 for one 3 x H x W image (2 FLOPs per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.eval()
    x = torch.zeros(1, 3, *img_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 1e9


# inputs that hold settings, not weights: quantization scales / zero points and shape-like operands
_NON_WEIGHT_INPUTS = {
    "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "Resize": (1, 2, 3), "Upsample": (1,),
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 2, 3),
    "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,), "ReduceMean": (1,),
}


def onnx_param_count(path: str | os.PathLike) -> int:
    """Elements in the graph's weight initializers, the ONNX counterpart of a parameter count.

    Quantization scales / zero points and shape operands (which exporters and quantizers turn into
    initializers) are settings, not weights: left out, so an INT8 model reports the same count as the float
    model it came from.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    settings = {node.input[i] for node in graph.node for i in _NON_WEIGHT_INPUTS.get(node.op_type, ())
                if i < len(node.input)}
    return int(sum(int(np.prod(list(t.dims), dtype=np.int64)) for t in graph.initializer
                   if t.name not in settings))


def _time(fn: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def _resolve(
    model: str | nn.Module | None, checkpoint: str | None, num_classes: int, model_args: dict[str, Any] | None
) -> tuple[nn.Module | None, Path | None, str, float | None, dict[str, Any]]:
    """-> (torch model or None, onnx path or None, display name, file size MB or None, config)."""
    from ..models import create_model

    if (model is None) == (checkpoint is None):
        raise UsageError("give exactly one of --model NAME and --checkpoint DIR|FILE.onnx|zoo:NAME")
    if isinstance(model, nn.Module):
        return model.eval(), None, str(getattr(model, "distilseg_arch", type(model).__name__)), None, {}
    if model is not None:
        net = create_model(str(model), int(num_classes), **(model_args or {})).eval()
        return net, None, str(model), None, {"num_classes": num_classes}
    onnx_path = find_onnx(str(checkpoint))
    if onnx_path is not None:
        if not onnx_path.is_file():
            raise UsageError(f"{onnx_path}: no such ONNX file")
        from ..inference.onnx_backend import read_sidecar

        side = read_sidecar(onnx_path)
        return None, onnx_path, str(side.get("architecture") or onnx_path.stem), onnx_path.stat().st_size / 1e6, side
    from ..artifact import resolve_artifact_dir
    from .sources import load_torch_model

    net, config = load_torch_model(str(checkpoint))
    weights = resolve_artifact_dir(str(checkpoint)) / "model.safetensors"
    return net, None, str(config.get("architecture")), weights.stat().st_size / 1e6, config


def benchmark(
    model: str | nn.Module | None = None,
    *,
    checkpoint: str | None = None,
    num_classes: int = 19,
    model_args: dict[str, Any] | None = None,
    img_size: Sequence[int] = (512, 512),
    runtime: str = "torch",
    threads: int | None = None,
    runs: int = 20,
    warmup: int = 3,
    batch: int = 1,
    spinning: bool | None = None,
) -> dict[str, Any]:
    """Measure one model on one runtime and return the ``distilseg bench`` JSON object (see module doc).

    ``model``: a registered name (built with ``num_classes`` and ``model_args``, random weights) or an
    ``nn.Module``; or ``checkpoint``: an artifact folder, ``zoo:NAME`` or ``.onnx`` file. ``runtime=
    "onnxruntime"`` with a torch model exports it to a temporary fixed-size ONNX file first.
    """
    size = size_pair(img_size, allow_none=True)
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    for name, value, low in (("runs", runs, 1), ("warmup", warmup, 0), ("batch", batch, 1)):
        if int(value) < low:
            raise UsageError(f"--{name} must be >= {low}, got {value}")
    if threads is not None and int(threads) < 1:
        raise UsageError(f"--threads must be a positive integer, got {threads}")
    net, onnx_path, name, file_mb, config = _resolve(model, checkpoint, num_classes, model_args)
    if onnx_path is not None and runtime != "onnxruntime":
        raise UsageError(f"{onnx_path}: an ONNX file runs only with --runtime onnxruntime, not {runtime}")

    old_threads = torch.get_num_threads()
    threads = int(threads) if threads is not None else old_threads
    torch.set_num_threads(threads)
    try:
        if runtime == "onnxruntime":
            result = _measure_ort(net, onnx_path, config, size, threads, runs, warmup, batch, spinning)
        else:
            result = _measure_torch(net, size, runtime, runs, warmup, batch)
    finally:
        torch.set_num_threads(old_threads)

    if net is not None:
        params = sum(p.numel() for p in net.parameters())
        elem = next((p.element_size() for p in net.parameters()), 4)
        gflops: float | None = count_gflops(net, size)
        size_mb = file_mb if file_mb is not None else params * elem / 1e6
    else:
        params = onnx_param_count(onnx_path)
        size_mb = float(file_mb)
        gflops = _gflops_from_sidecar(config, size)
    med = float(np.median(result["times"]))
    return {
        "model": name,
        "runtime": runtime,
        "precision": result["precision"],
        "threads": threads,
        "img_size": [size[0], size[1]],
        "batch": int(batch),
        "params": int(params),
        "gflops": gflops,
        "gflops_convention": "FlopCounterMode flops / 1e9 per image (2 FLOPs per multiply-add)",
        "size_mb": float(size_mb),
        "latency_ms_median": med,
        "latency_ms_p90": float(np.percentile(result["times"], 90)),
        "fps": batch * 1000.0 / med,
        "runs": int(runs),
        "warmup": int(warmup),
    }


def _gflops_from_sidecar(config: dict[str, Any], size: tuple[int, int]) -> float | None:
    from ..models import create_model

    arch = config.get("architecture")
    if not arch or not config.get("num_classes"):
        return None
    try:
        net = create_model(arch, int(config["num_classes"]), **(config.get("model_args") or {}))
    except Exception:  # an architecture this install lacks: report no FLOPs rather than fail the bench
        return None
    return count_gflops(net, size)


def _measure_torch(
    net: nn.Module | None, size: tuple[int, int], runtime: str, runs: int, warmup: int, batch: int
) -> dict[str, Any]:
    """Time ``net`` on the ``torch``, ``torchscript`` or ``compile`` runtime."""
    from .onnx_export import LogitsOnly

    assert net is not None
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0))
    fn: Callable[[torch.Tensor], Any] = net
    with torch.inference_mode(False), torch.no_grad():
        if runtime == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # deprecation and TracerWarnings (shapes are fixed here)
                traced = torch.jit.trace(LogitsOnly(net).eval(), (x,), check_trace=False)
                fn = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        elif runtime == "compile":
            fn = torch.compile(LogitsOnly(net).eval())
        times = _time(lambda: fn(x), runs, max(warmup, 1) if runtime == "compile" else warmup)
    precision = str(next((p.dtype for p in net.parameters()), torch.float32)).replace("torch.", "")
    return {"times": times, "precision": precision}


def _measure_ort(
    net: nn.Module | None,
    onnx_path: Path | None,
    config: dict[str, Any],
    size: tuple[int, int],
    threads: int,
    runs: int,
    warmup: int,
    batch: int,
    spinning: bool | None,
) -> dict[str, Any]:
    from ..inference.onnx_backend import make_session, read_sidecar, run_logits

    with tempfile.TemporaryDirectory(prefix="distilseg-bench-") as td:
        if onnx_path is None:
            from .onnx_export import LogitsOnly, export_onnx

            assert net is not None
            cfg = dict(config)
            if not cfg.get("num_classes"):
                with torch.no_grad():
                    cfg["num_classes"] = int(LogitsOnly(net.eval())(torch.zeros(1, 3, 32, 32)).shape[1])
            onnx_path = export_onnx(net, cfg, Path(td) / "model.onnx", img_size=size, batch=batch)
        session = make_session(onnx_path, threads=threads, spinning=spinning)
        shape = session.get_inputs()[0].shape
        static = [d for d in shape if isinstance(d, int)]
        if len(static) == 4 and (shape[0] != batch or tuple(shape[2:]) != tuple(size)):
            raise UsageError(
                f"{onnx_path}: fixed input shape {shape} does not match --batch {batch} --img-size "
                f"{size[0]} {size[1]}; export with --dynamic or bench at that shape"
            )
        side = read_sidecar(onnx_path)
        stride = int(side.get("output_stride") or 1)
        x = np.random.default_rng(0).standard_normal((batch, 3, *size)).astype(np.float32)
        times = _time(lambda: run_logits(session, x, stride), runs, warmup)
    return {"times": times, "precision": side.get("precision", "fp32")}
