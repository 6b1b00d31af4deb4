"""CPU latency of the original system's student (``msa_unet_student``) next to ``lite_student``, timed in one run.

    python benchmarks/seed_latency.py --img-size 360 480 --threads 2 --runs 30 \
        --json benchmarks/results/seed_latency.json

PyTorch eager latency (batch 1, inference mode) of both models is timed *interleaved* (one forward of each in
turn, median of ``--runs``), so that a load that comes and goes on a shared CPU hits both alike: the ratio is
the figure to read, the absolute numbers move with the load (the 1-minute load average is recorded before and
after). Rows:

- ``msa_unet_student``: as it runs now (inference form: each multi-kernel block's three depthwise branches and
  their BatchNorms folded into one depthwise conv, channels-last layout on the CPU);
- ``msa_unet_student (training form)``: the same weights run branch by branch in NCHW, as the network trains
  (what inference cost before the folding);
- ``lite_student``;

plus ONNX Runtime fp32 for both (``distilseg.export.bench.benchmark``: fixed-size export, batch 1).
Random weights: latency does not depend on them.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Iterator

import torch


@contextlib.contextmanager
def training_form() -> Iterator[None]:
    """Run ``msa_unet`` networks in eval mode the way they train: three branches per block, NCHW."""
    from distilseg.models import blocks, msa_unet

    fold, nhwc = blocks.AsymConvBN._foldable, msa_unet._nhwc_inference
    blocks.AsymConvBN._foldable = lambda self: False
    msa_unet._nhwc_inference = lambda model, x: False
    try:
        yield
    finally:
        blocks.AsymConvBN._foldable, msa_unet._nhwc_inference = fold, nhwc


def interleaved_ms(fns: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, list[float]]:
    """Per name, ``runs`` wall times (ms) of ``fns[name]()``, the functions called in turn within each round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for i in range(warmup + runs):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                if i >= warmup:
                    times[name].append((time.perf_counter() - t0) * 1000.0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--img-size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--num-classes", type=int, default=11)
    ap.add_argument("--no-ort", action="store_true", help="PyTorch only")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/seed_latency.json"))
    args = ap.parse_args()
    from distilseg.export.bench import benchmark
    from distilseg.models import create_model
    from distilseg.models.base import count_parameters

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(1, 3, *args.img_size)
    seed = create_model("msa_unet_student", args.num_classes).eval()
    lite = create_model("lite_student", args.num_classes).eval()
    load_before = os.getloadavg()[0]

    def seed_training_form() -> object:
        with training_form():
            return seed(x)

    times = interleaved_ms({"msa_unet_student": lambda: seed(x), "lite_student": lambda: lite(x),
                            "msa_unet_student (training form)": seed_training_form}, args.runs, args.warmup)
    rows = {name: {"torch_ms_median": round(statistics.median(t), 2), "torch_ms_min": round(min(t), 2)}
            for name, t in times.items()}
    for name, model in (("msa_unet_student", seed), ("lite_student", lite)):
        rows[name]["params"] = count_parameters(model)
        if not args.no_ort:
            r = benchmark(model, runtime="onnxruntime", img_size=tuple(args.img_size), threads=args.threads,
                          runs=args.runs, warmup=args.warmup)
            rows[name]["ort_fp32_ms_median"] = r.get("latency_ms_median")
            rows[name]["gflops"] = r.get("gflops")
    rows["msa_unet_student (training form)"]["params"] = rows["msa_unet_student"]["params"]
    ratio = rows["msa_unet_student"]["torch_ms_median"] / rows["lite_student"]["torch_ms_median"]
    result = {
        "command": "python benchmarks/seed_latency.py " + " ".join(
            [f"--img-size {args.img_size[0]} {args.img_size[1]}", f"--threads {args.threads}", f"--runs {args.runs}"]
            + (["--no-ort"] if args.no_ort else [])),
        "img_size": args.img_size,
        "threads": args.threads,
        "runs": args.runs,
        "torch": torch.__version__,
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "torch_ratio_seed_to_lite": round(ratio, 2),
        "torch_ratio_training_form_to_lite": round(
            rows["msa_unet_student (training form)"]["torch_ms_median"] / rows["lite_student"]["torch_ms_median"], 2),
        "rows": [{"model": k, **v} for k, v in rows.items()],
    }
    print(json.dumps(result, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
