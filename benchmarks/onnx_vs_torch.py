"""ONNX Runtime fp32 vs PyTorch eager latency for a U-Net at 360x480 (CamVid size) on T CPU threads.

Prints one JSON object. Rounds alternate the runtimes (torch, ORT, ORT without spinning, ...) so that load
from other processes on a shared machine hits all of them alike; each latency is the median over rounds of
the per-round medians. Usage:

    python benchmarks/onnx_vs_torch.py [--model unet] [--model-args depth=4 base_width=32]
        [--img-size 360 480] [--threads 2] [--runs 10] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from distilseg.export.bench import benchmark
    from distilseg.parsing import parse_key_values
    from distilseg.export.onnx_export import export_onnx
    from distilseg.models import create_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="unet")
    p.add_argument("--model-args", nargs="*", default=[])
    p.add_argument("--num-classes", type=int, default=11)
    p.add_argument("--img-size", type=int, nargs=2, default=[360, 480])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)

    import torch

    torch.manual_seed(0)
    model = create_model(args.model, args.num_classes, **parse_key_values(args.model_args, "--model-args")).eval()
    size = tuple(args.img_size)
    common = dict(img_size=size, threads=args.threads, runs=args.runs, warmup=args.warmup)
    with tempfile.TemporaryDirectory() as td:
        onnx_path = export_onnx(model, {"num_classes": args.num_classes}, Path(td) / "m.onnx", img_size=size)
        configs = {
            "torch": lambda: benchmark(model, runtime="torch", **common),
            "onnxruntime": lambda: benchmark(checkpoint=str(onnx_path), runtime="onnxruntime", **common),
            "onnxruntime_no_spin": lambda: benchmark(
                checkpoint=str(onnx_path), runtime="onnxruntime", spinning=False, **common
            ),
        }
        per_round: dict[str, list[dict]] = {k: [] for k in configs}
        for _ in range(args.rounds):
            for name, fn in configs.items():
                per_round[name].append(fn())
    summary = {}
    for name, results in per_round.items():
        summary[name] = {
            "latency_ms_median": statistics.median(r["latency_ms_median"] for r in results),
            "latency_ms_p90": statistics.median(r["latency_ms_p90"] for r in results),
            "round_medians_ms": [round(r["latency_ms_median"], 2) for r in results],
        }
    first = per_round["torch"][0]
    best_ort = min(("onnxruntime", "onnxruntime_no_spin"), key=lambda k: summary[k]["latency_ms_median"])
    ratio = summary[best_ort]["latency_ms_median"] / summary["torch"]["latency_ms_median"]
    print(json.dumps({
        "model": args.model,
        "model_args": parse_key_values(args.model_args, "--model-args"),
        "img_size": list(size),
        "threads": args.threads,
        "runs": args.runs,
        "rounds": args.rounds,
        "params": first["params"],
        "gflops": first["gflops"],
        "results": summary,
        "best_onnxruntime": best_ort,
        "ort_over_torch_latency": ratio,
        "ort_not_slower": ratio <= 1.0,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
