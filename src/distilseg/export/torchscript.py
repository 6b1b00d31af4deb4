"""TorchScript export (``distilseg export --format torchscript``): a traced, frozen logits-only module.

Why: C++/mobile deployments load TorchScript without Python; tracing (not scripting) works for every model
here because their control flow depends only on shapes, which are fixed at the export size.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import UsageError
from ..io import atomic_write, atomic_write_json
from .onnx_export import DEFAULT_SIZE, LogitsOnly, build_sidecar
from ..checks import size_pair

__all__ = ["export_torchscript"]


def export_torchscript(checkpoint: str, out: str | os.PathLike, img_size: Sequence[int] | None = None) -> dict[str, Any]:
    """Trace the artifact at ``img_size`` (default its ``input_size``), freeze it, save ``out`` + ``out.json``.

    Returns a summary with the max |logit difference| between the saved module and the eager model.
    """
    from .sources import load_torch_model

    out = Path(out)
    if out.suffix not in (".pt", ".ts", ".torchscript"):
        raise UsageError(f"{out}: a TorchScript file must end in .pt, .ts or .torchscript")
    from .targets import check_export_target

    check_export_target(out, "distilseg-torchscript")
    model, config = load_torch_model(checkpoint)
    size = size_pair(img_size, allow_none=True) or size_pair(config.get("input_size"), allow_none=True) or DEFAULT_SIZE
    wrapper = LogitsOnly(model).eval()
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(wrapper, (x,), check_trace=False))
        atomic_write(out, lambda tmp: torch.jit.save(traced, tmp))
        loaded = torch.jit.load(str(out), map_location="cpu")
        diff = float((loaded(x) - wrapper(x)).abs().max())
    side = build_sidecar(config, img_size=size, dynamic=False, opset=0, precision="fp32", source=str(checkpoint))
    side["format"] = "distilseg-torchscript"
    side.pop("opset")
    side["check"] = {"max_abs_logit_diff": diff, "num_images": 1, "source": "synthetic"}
    atomic_write_json(out.with_suffix(".json"), side)
    return {"path": str(out), "size_mb": out.stat().st_size / 1e6, "precision": "fp32", "img_size": list(size),
            "check": None, "max_abs_logit_diff": diff}
