"""Seconds per training step, kernel time and peak memory with and without ``--keep-freed-memory``.

Each model and setting runs in its own process (the malloc setting is process-wide and peak resident memory is
per process): ``train_throughput.setting_rate``'s fp32 AdamW steps on random data after one warm-up step, at
the seed table's batch and crop. Prints and writes JSON with the seconds per step, the kernel (system) CPU
seconds of the whole child and its peak resident memory (GiB). A setting that runs out of memory is recorded as
such, not as a crash.
Run: ``python benchmarks/keep_freed_memory.py --json benchmarks/results/keep_freed_memory.json``.
"""
from __future__ import annotations

import argparse
import resource

from child_runs import add_step_args, run  # this script's folder is on sys.path

MODELS = ("unet", "attention_unet", "msa_unet", "msa_unet_student", "dilated_dws_unet", "danet", "fcn_resnet50",
          "segformer", "lite_student")


def one_setting(model_name: str, size: list[int], batch: int, steps: int, threads: int, keep: bool) -> dict:
    """Run in a child process: switch the allocator if asked, then time the steps."""
    import torch

    from distilseg.training.host_memory import keep_freed_memory
    from train_throughput import setting_rate  # this script's folder is on sys.path

    if keep and keep_freed_memory() is not None:
        raise SystemExit("this C library cannot keep freed memory (not glibc)")
    torch.set_num_threads(threads)
    rate = setting_rate(model_name, {}, tuple(size), "32", False, False, steps, 1, batch)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"model": model_name, "keep_freed_memory": keep, "s_per_step": round(batch / rate, 3),
            "sys_s": round(usage.ru_stime, 1), "user_s": round(usage.ru_utime, 1),
            "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2)}  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated registry names")
    add_step_args(ap)
    args = ap.parse_args(argv)
    return run(__file__, argv, args,
               lambda on: one_setting(args.models, args.size, args.batch, args.steps, args.threads, on),
               [(["--models", model], flag, {"model": model, "keep_freed_memory": flag == "on"})
                for model in args.models.split(",") for flag in ("off", "on")],
               {"size": args.size, "batch": args.batch, "steps": args.steps, "threads": args.threads})


if __name__ == "__main__":
    raise SystemExit(main())
