"""Memory and time of a training step with and without gradient checkpointing (``--grad-checkpointing``).

Each setting runs in its own process (peak resident memory is per process): AdamW steps on random data, CE
loss, the given batch and crop; prints and writes JSON with the peak resident memory (GiB) and the seconds
per step after a warm-up step. A setting that runs out of memory is recorded as such, not as a crash.
Run: ``python benchmarks/grad_checkpointing.py --model dilated_dws_unet --size 256 320 --batch 8
--json benchmarks/results/grad_checkpointing.json``.
"""
from __future__ import annotations

import argparse
import resource

from child_runs import add_step_args, run  # this script's folder is on sys.path


def one_setting(model_name: str, size: list[int], batch: int, steps: int, threads: int, ckpt: bool) -> dict:
    """Run in a child process: ``train_throughput.setting_rate``'s fp32 steps after one warm-up step, and the
    process's peak resident memory."""
    import torch

    from train_throughput import setting_rate  # this script's folder is on sys.path

    torch.set_num_threads(threads)
    rate = setting_rate(model_name, {}, tuple(size), "32", False, False, steps, 1, batch, grad_checkpointing=ckpt)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {"grad_checkpointing": ckpt, "peak_rss_gib": round(peak_gib, 2), "s_per_step": round(batch / rate, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dilated_dws_unet")
    add_step_args(ap)
    args = ap.parse_args(argv)
    return run(__file__, argv, args,
               lambda on: one_setting(args.model, args.size, args.batch, args.steps, args.threads, on),
               [(["--model", args.model], flag, {"grad_checkpointing": flag == "on"}) for flag in ("on", "off")],
               {"model": args.model, "size": args.size, "batch": args.batch, "threads": args.threads})


if __name__ == "__main__":
    raise SystemExit(main())
