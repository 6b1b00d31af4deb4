"""Training throughput: ``distilseg train`` (through ``run_training``) vs a minimal hand-written loop.

Both train the same model (same seed) with the same optimizer, loss, batch size and synthetic data,
without augmentation; each times optimizer steps after a warm-up (data loading included, since both
fetch their next batch inside the timed span). Prints JSON with both rates and their ratio
(target: Lightning >= 0.9 x the plain loop). Run: ``python benchmarks/train_throughput.py [--steps 40]``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def lightning_rate(args: argparse.Namespace, out: Path) -> float:
    from distilseg.engine.callbacks import StepTimer
    from distilseg.engine.train import DEFAULTS, run_training

    cfg = dict(DEFAULTS)
    cfg.update(
        dataset="synthetic", dataset_args={"num_images": args.images, "size": args.size}, model=args.model,
        model_args={"depth": args.depth, "base_width": args.width}, img_size=args.size, epochs=1,
        batch_size=args.batch, lr=1e-3, weight_decay=0.0, optimizer="adam", scheduler="none", loss="ce:1", num_workers=0,
        accelerator="cpu", augment=False, progress=False, checkpoint_every_steps=0,
        limit_train_batches=args.steps + args.warmup, limit_val_batches=1, seed=0, out=str(out),
    )
    timer = StepTimer(warmup=args.warmup)
    run_training(cfg, extra_callbacks=[timer])
    return float(timer.steps_per_second)


def plain_rate(args: argparse.Namespace) -> float:
    import torch
    from torch.utils.data import DataLoader

    from distilseg.data import IMAGENET_MEAN, IMAGENET_STD, build_train_transform, collate_segmentation, create_dataset
    from distilseg.losses import build_loss
    from distilseg.models import create_model

    torch.manual_seed(0)
    tf = build_train_transform(img_size=tuple(args.size), mean=IMAGENET_MEAN, std=IMAGENET_STD, scale=(1.0, 1.0),
                               hflip=False, rotate=0, color=False)
    ds = create_dataset("synthetic", split="train", transform=tf, num_images=args.images, size=args.size)
    loader = DataLoader(ds, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=0,
                        collate_fn=collate_segmentation)
    model = create_model(args.model, ds.num_classes, depth=args.depth, base_width=args.width)
    model.train()
    loss_fn = build_loss("ce:1", ds.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n, start = 0, None
    total = args.steps + args.warmup
    while n < total:
        for batch in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch["image"]), batch["mask"])
            loss.backward()
            opt.step()
            n += 1
            if n == args.warmup:
                start = time.perf_counter()
            if n >= total:
                break
    return args.steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40, help="timed steps (after warm-up)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, nargs=2, default=[96, 128])
    p.add_argument("--model", default="unet")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    args.images = args.batch * (args.steps + args.warmup)  # one epoch holds every step
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    # plain, Lightning, plain again: the machine's load drifts, the two plain runs bracket it
    plain_runs = [plain_rate(args)]
    with tempfile.TemporaryDirectory() as tmp:
        light = lightning_rate(args, Path(tmp) / "run")
    plain_runs.append(plain_rate(args))
    plain = sum(plain_runs) / len(plain_runs)
    print(json.dumps({
        "model": f"{args.model}(depth={args.depth}, base_width={args.width})", "batch": args.batch,
        "img_size": args.size, "timed_steps": args.steps, "threads": torch.get_num_threads(),
        "plain_steps_per_s": round(plain, 3), "plain_runs": [round(r, 3) for r in plain_runs], "lightning_steps_per_s": round(light, 3),
        "ratio": round(light / plain, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
