"""``distilseg export`` and ``distilseg bench``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_export(subparsers)
    _register_bench(subparsers)


def _register_export(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a model artifact to ONNX (fp32, fp16 or INT8) or TorchScript",
        description=(
            "Export an artifact to ONNX (input 'input', output 'logits') with a sidecar FILE.json holding "
            "classes, palette, mean/std and input size, then compare ONNX Runtime with PyTorch (max |logit "
            "difference| and pixel agreement of the class maps) on dataset or synthetic images."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="artifact folder, training output folder or zoo:NAME")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("--out", required=True, help="output file (.onnx, or .pt for torchscript)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    p.add_argument("--img-size", type=int, nargs=2, metavar=("H", "W"),
                   help="export size (default: the artifact's input_size)")
    p.add_argument("--fp16", action="store_true", help="float16 weights and compute, float32 input/output")
    p.add_argument("--int8", action="store_true", help="static INT8 (QDQ) quantization, needs calibration data")
    p.add_argument("--calibration-dataset", help="registered dataset name for calibration and the check")
    p.add_argument("--calibration-root", help="dataset root folder")
    p.add_argument("--calibration-split", default="train")
    p.add_argument("--calibration-images", type=int, default=64)
    p.add_argument("--calibration-dataset-args", nargs="*", default=[], metavar="K=V",
                   help="options of the calibration dataset, as train's --dataset-args (e.g. label_type=misc20)")
    p.add_argument("--weight-bits", choices=("auto", "7", "8"), default="auto",
                   help="INT8 weight range: 7 ('reduce_range') avoids the overflow in the int8 kernels of x86 CPUs "
                        "without VNNI, 8 is more accurate on VNNI and ARM CPUs; auto (default) picks for the CPU "
                        "that exports (the choice and its reason are printed and kept in the sidecar)")
    p.add_argument("--full-range", action="store_true", help="same as --weight-bits 8")
    p.add_argument("--quantize-head", action="store_true",
                   help="also quantize the final classifier conv (default: kept in float for accuracy)")
    p.add_argument("--check-images", type=int, default=4,
                   help="images for the ONNX Runtime vs PyTorch check (0 = skip; default 4)")
    p.add_argument("--check-split", help="dataset split for the check (default: the calibration split)")
    p.add_argument("--tolerance", type=float, default=None, metavar="T",
                   help="largest accepted |ONNX - PyTorch| logit difference, relative to the logit scale "
                        "(default 1e-3 for fp32, 5e-2 for fp16); a file beyond it fails the export")
    p.add_argument("--min-agreement", type=float, default=None, metavar="F",
                   help="smallest accepted share of pixels whose class agrees with PyTorch (default 0.90 for "
                        "--int8; when given, checked for every precision)")
    p.add_argument("--no-check", action="store_true",
                   help="keep the file even when the check finds disagreement (the numbers are still printed)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run_export)


def _register_bench(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure latency, FPS, parameters, GFLOPs and size",
        description=(
            "Time forward passes of a model on one runtime. GFLOPs = FlopCounterMode flops / 1e9 for one "
            "image (2 FLOPs per multiply-add)."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="registered architecture (random weights)")
    src.add_argument("--checkpoint", help="artifact folder, FILE.onnx or zoo:NAME")
    p.add_argument("--num-classes", type=int, default=19, help="classes for --model (default 19)")
    p.add_argument("--model-args", nargs="*", default=[], metavar="K=V", help="extra model arguments")
    p.add_argument("--img-size", type=int, nargs=2, metavar=("H", "W"), required=True)
    p.add_argument("--runtime", choices=("torch", "onnxruntime", "torchscript", "compile"), default="torch")
    p.add_argument("--threads", type=int, help="intra-op threads (default: torch's current setting)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--no-spinning", action="store_true", help="ONNX Runtime: idle threads do not busy-wait")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_bench)


def _reduce_range(args: argparse.Namespace) -> bool | None:
    """``--weight-bits`` / ``--full-range`` -> ``reduce_range`` (``None``: the CPU decides)."""
    if args.full_range or args.weight_bits == "8":
        return False
    return True if args.weight_bits == "7" else None


def run_export(args: argparse.Namespace) -> int:
    from ..io import ensure_output_file
    from ..parsing import parse_key_values

    ensure_output_file(args.out)  # before any work
    if args.format == "torchscript":
        from .torchscript import export_torchscript

        result = export_torchscript(args.checkpoint, args.out, img_size=args.img_size)
    else:
        from .onnx_export import export_checkpoint

        if args.calibration_dataset_args and not args.calibration_dataset:
            raise UsageError("--calibration-dataset-args needs --calibration-dataset NAME")
        if args.full_range and args.weight_bits == "7":
            raise UsageError("--full-range means --weight-bits 8; it contradicts --weight-bits 7")
        if args.calibration_images < 1:
            raise UsageError(f"--calibration-images must be positive, got {args.calibration_images}")
        result = export_checkpoint(
            args.checkpoint,
            args.out,
            opset=args.opset,
            dynamic=args.dynamic,
            img_size=args.img_size,
            fp16=args.fp16,
            int8=args.int8,
            calibration_dataset=args.calibration_dataset,
            calibration_root=args.calibration_root,
            calibration_split=args.calibration_split,
            calibration_images=args.calibration_images,
            calibration_dataset_args=parse_key_values(args.calibration_dataset_args, "--calibration-dataset-args"),
            check_images=args.check_images,
            check_split=args.check_split,
            reduce_range=_reduce_range(args),
            keep_head_float=not args.quantize_head,
            tolerance=args.tolerance,
            min_agreement=args.min_agreement,
            strict=not args.no_check,
        )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"wrote {result['onnx' if 'onnx' in result else 'path']} ({result['size_mb']:.2f} MB, "
          f"{result.get('precision', 'fp32')})")
    quantization = result.get("quantization")
    if quantization:
        print(f"INT8 weights: {quantization['weight_bits']}-bit ({quantization['weight_bits_reason']})")
    check = result.get("check")
    if check:
        print(f"check vs PyTorch fp32 on {check['num_images']} {check['source']} image(s): "
              f"max |logit diff| = {check['max_abs_logit_diff']:.3g}, "
              f"pixel agreement = {100 * check['pixel_agreement']:.3f}%")
        if not check.get("passed", True):
            print("warning: the ONNX file disagrees with PyTorch beyond the tolerance (kept: --no-check)",
                  file=sys.stderr)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from ..checks import size_pair
    from ..parsing import parse_key_values
    from .bench import benchmark

    size_pair(args.img_size, "--img-size")
    if args.num_classes < 1:
        raise UsageError(f"--num-classes must be a positive integer, got {args.num_classes}")

    result = benchmark(
        args.model,
        checkpoint=args.checkpoint,
        num_classes=args.num_classes,
        model_args=parse_key_values(args.model_args, "--model-args"),
        img_size=args.img_size,
        runtime=args.runtime,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        batch=args.batch,
        spinning=False if args.no_spinning else None,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    return 0
