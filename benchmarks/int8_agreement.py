"""INT8 (static QDQ) vs PyTorch fp32 on CamVid: class-map agreement, mIoU and latency.

Quantizes a trained artifact with CamVid training images as calibration data, then compares the INT8 ONNX
model with the PyTorch fp32 model on validation images at full 360x480 (pixel agreement of the class maps,
and mIoU of each against the ground truth), and times ORT fp32 vs INT8. Prints one JSON object.

    python benchmarks/int8_agreement.py --checkpoint RUN/best --root ../shared/datasets/camvid
        [--calibration-images 64] [--val-images 20] [--threads 2] [--out-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from distilseg.data import create_dataset
    from distilseg.inference.segmenter import load
    from distilseg.export.bench import benchmark
    from distilseg.export.onnx_export import export_checkpoint
    from distilseg.metrics import metrics_from_confusion

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--root", required=True, help="CamVid root (train/, val/, trainannot/, valannot/)")
    p.add_argument("--dataset", default="camvid")
    p.add_argument("--img-size", type=int, nargs=2, default=[360, 480])
    p.add_argument("--calibration-images", type=int, default=64)
    p.add_argument("--val-images", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--full-range", action="store_true", help="8-bit weights (default 7-bit reduce_range)")
    p.add_argument("--quantize-head", action="store_true", help="quantize the classifier conv too")
    p.add_argument("--out-dir", help="keep the ONNX files here (default: a temporary folder)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as td:
        out_dir = Path(args.out_dir or td)
        out_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        int8 = export_checkpoint(
            args.checkpoint, out_dir / "model_int8.onnx", img_size=args.img_size, int8=True,
            calibration_dataset=args.dataset, calibration_root=args.root, calibration_split="train",
            calibration_images=args.calibration_images, check_images=0, reduce_range=not args.full_range,
            keep_head_float=not args.quantize_head,
        )
        quant_s = time.perf_counter() - t0
        fp32 = export_checkpoint(args.checkpoint, out_dir / "model_fp32.onnx", img_size=args.img_size,
                                 check_images=0)
        torch_seg = load(args.checkpoint)
        torch_seg.input_size = tuple(args.img_size)
        segs = {"int8": load(int8["onnx"]), "onnx_fp32": load(fp32["onnx"])}
        ds = create_dataset(args.dataset, root=args.root, split="val")
        idx = np.linspace(0, len(ds) - 1, num=min(args.val_images, len(ds))).round().astype(int)
        k = torch_seg.num_classes
        cms = {name: np.zeros((k, k), dtype=np.int64) for name in ("torch_fp32", *segs)}
        agree = {name: 0 for name in segs}
        total = 0
        for i in dict.fromkeys(idx.tolist()):
            image, mask = ds.load_image(i), ds.load_mask(i)
            ref = torch_seg.predict([image])[0]
            preds = {"torch_fp32": ref, **{name: s.predict([image])[0] for name, s in segs.items()}}
            valid = mask != ds.ignore_index
            for name, pred in preds.items():
                cms[name] += np.bincount(k * mask[valid].astype(np.int64) + pred[valid], minlength=k * k).reshape(k, k)
            for name in segs:
                agree[name] += int((preds[name] == ref).sum())
            total += ref.size
        miou = {name: metrics_from_confusion(cm, torch_seg.class_names)["mIoU"] for name, cm in cms.items()}
        common = dict(img_size=args.img_size, runtime="onnxruntime", threads=args.threads, runs=args.runs, warmup=2)
        lat = {name: benchmark(checkpoint=info["onnx"], **common) for name, info in (("onnx_fp32", fp32), ("int8", int8))}
        result = {
            "checkpoint": str(args.checkpoint),
            "img_size": list(args.img_size),
            "calibration_images": args.calibration_images,
            "val_images": len(dict.fromkeys(idx.tolist())),
            "quantize_seconds": round(quant_s, 1),
            "pixel_agreement_int8_vs_torch": agree["int8"] / total,
            "pixel_agreement_onnx_fp32_vs_torch": agree["onnx_fp32"] / total,
            "mIoU": miou,
            "size_mb": {"onnx_fp32": fp32["size_mb"], "int8": int8["size_mb"]},
            "latency_ms_median": {k2: v["latency_ms_median"] for k2, v in lat.items()},
            "threads": args.threads,
            "reduce_range": not args.full_range,
            "head_float": not args.quantize_head,
            "target_met": agree["int8"] / total >= 0.98,
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
