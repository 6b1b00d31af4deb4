"""CPU latency of our CamVid students next to the small model a user would otherwise pick:
torchvision's LR-ASPP MobileNetV3-Large (random weights: latency does not depend on them), all timed in the
same harness (``distilseg.export.bench.benchmark``: fixed-size ONNX export, ONNX Runtime, batch 1).

    python benchmarks/peers_latency.py --img-size 360 480 --threads 2 --runs 30 --int8 \
        --json benchmarks/results/peers_latency_360x480.json

Rows: ``lraspp_mobilenet_v3_large`` (torchvision), the bundled ``zoo:camvid-student-kd`` and the candidate
students of ``configs/camvid/`` (architectures only, random weights). Each row also has PyTorch eager latency
and, with ``--int8``, ONNX Runtime INT8 latency (static QDQ quantization exactly as ``distilseg export --int8``
does it, calibrated on random inputs: the ranges do not change the operator count, so the timing holds).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from torch import nn


class LRASPP(nn.Module):
    """torchvision's LR-ASPP MobileNetV3-Large returning the logits tensor (its forward returns a dict)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        from torchvision.models.segmentation import lraspp_mobilenet_v3_large

        self.net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


CANDIDATES = {
    "fpn_lite0_d4_stride8 (configs/camvid/student_fpn8_lite0.yaml)": (
        "fpn", {"encoder": "efficientnet_lite0", "encoder_depth": 4, "pyramid_channels": 96,
                "segmentation_channels": 64, "decode_stride": 8}),
    "fpn_lite0_d4 (student candidate)": ("fpn", {"encoder": "efficientnet_lite0", "encoder_depth": 4,
                                                 "pyramid_channels": 96, "segmentation_channels": 64}),
    "fpn_lite0_d4_separable (student candidate)": ("fpn", {"encoder": "efficientnet_lite0", "encoder_depth": 4,
                                                           "pyramid_channels": 64, "segmentation_channels": 64,
                                                           "separable": True}),
    "lite_student": ("lite_student", {}),
}


def _int8_file(spec: dict, args: argparse.Namespace, folder: Path) -> Path:
    """Export ``spec`` to a fixed-size ONNX file in ``folder`` and quantize it as ``distilseg export --int8``."""
    import numpy as np

    from distilseg.export.onnx_export import export_onnx
    from distilseg.export.quantize import quantize_int8
    from distilseg.export.sources import load_torch_model

    if "model" in spec:
        model, config = spec["model"], {"num_classes": args.num_classes}
    else:
        model, config = load_torch_model(spec["checkpoint"])
    fp32 = export_onnx(model.eval(), dict(config), folder / "fp32.onnx", img_size=args.img_size)
    rng = np.random.default_rng(0)
    calibration = [rng.standard_normal((3, *args.img_size)).astype(np.float32) for _ in range(4)]
    return quantize_int8(fp32, folder / "int8.onnx", calibration)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--img-size", type=int, nargs=2, default=[360, 480])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--num-classes", type=int, default=11)
    ap.add_argument("--int8", action="store_true", help="also time each model quantized to INT8 in ONNX Runtime")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from distilseg.export.bench import benchmark
    from distilseg.models import create_model

    common = dict(img_size=tuple(args.img_size), threads=args.threads, runs=args.runs, warmup=args.warmup)
    models: dict[str, dict] = {"lraspp_mobilenet_v3_large (torchvision)": {"model": LRASPP(args.num_classes)}}
    models["zoo:camvid-student-kd"] = {"checkpoint": "zoo:camvid-student-kd"}
    for label, (name, kw) in CANDIDATES.items():
        models[label] = {"model": create_model(name, args.num_classes, **kw)}
    rows = []
    for label, spec in models.items():
        row = {"model": label}
        for runtime in ("onnxruntime", "torch"):
            r = benchmark(**spec, runtime=runtime, num_classes=args.num_classes, **common)
            row[runtime] = {k: r.get(k) for k in ("latency_ms_median", "fps", "params", "gflops")}
        if args.int8:
            with tempfile.TemporaryDirectory(prefix="peers-int8-") as td:
                r = benchmark(checkpoint=str(_int8_file(spec, args, Path(td))), runtime="onnxruntime", **common)
            row["onnxruntime_int8"] = {k: r.get(k) for k in ("latency_ms_median", "fps")}
        rows.append(row)
        print(json.dumps(row))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"img_size": args.img_size, "threads": args.threads, "runs": args.runs,
                                         "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
