"""Training throughput: ``distilseg train`` (through ``run_training``) vs a minimal hand-written loop.

Both train the same model (same seed) with the same optimizer, loss, batch size and synthetic data,
without augmentation; each times optimizer steps after a warm-up (data loading included, since both
fetch their next batch inside the timed span). Prints JSON with both rates and their ratio
(target: Lightning >= 0.9 x the plain loop). Run: ``python benchmarks/train_throughput.py [--steps 40]``.

``--settings`` instead measures the CPU training settings on the CamVid teacher and student
recipes (``configs/camvid/*.yaml``'s architectures, batch 8 at their crop size, random data): fp32 vs
``bf16-mixed`` (autocast, as Lightning's plugin does), each with and without channels_last, and
``torch.compile`` where it works; images per second after a warm-up:
``python benchmarks/train_throughput.py --settings --steps 6 --json benchmarks/results/train_settings.json``;
``--compile --fast-only --recipe "stride 8"`` times compiled against eager training of the bundled student's setting.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def lightning_rate(args: argparse.Namespace, out: Path) -> float:
    from distilseg.training.callbacks import StepTimer
    from distilseg.training.config import DEFAULTS
    from distilseg.training.train import run_training

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


RECIPES = {
    "teacher fpn(efficientnet_lite2) 288x384": ("fpn", {"encoder": "efficientnet_lite2"}, (288, 384)),
    "student fpn(efficientnet_lite0, depth 4) 288x384": (
        "fpn", {"encoder": "efficientnet_lite0", "encoder_depth": 4, "pyramid_channels": 96,
                "segmentation_channels": 64}, (288, 384)),
    "student fpn(efficientnet_lite0, depth 4, stride 8) 288x384": (
        "fpn", {"encoder": "efficientnet_lite0", "encoder_depth": 4, "pyramid_channels": 96,
                "segmentation_channels": 64, "decode_stride": 8}, (288, 384)),
    "lite_student 360x480": ("lite_student", {}, (360, 480)),
}


def setting_rate(name: str, kwargs: dict, size: tuple[int, int], precision: str, channels_last: bool,
                 compile_: bool, steps: int, warmup: int, batch: int, grad_checkpointing: bool = False) -> float:
    """Images per second of AdamW training steps (forward, CE loss, backward, step) on random data."""
    import torch

    from distilseg.models import create_model

    torch.manual_seed(0)
    model = create_model(name, 11, **kwargs).train()
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    step_model = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, *size).contiguous(memory_format=fmt)
    y = torch.randint(0, 11, (batch, *size))
    start = None
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = torch.nn.functional.cross_entropy(step_model(x).float(), y)
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - start)


def settings_main(args: argparse.Namespace) -> None:
    rows = []
    for recipe, (name, kwargs, size) in RECIPES.items():
        if args.recipe and args.recipe not in recipe:
            continue
        for precision in (("bf16-mixed",) if args.fast_only else ("32", "bf16-mixed")):
            for cl in ((True,) if args.fast_only else (False, True)):
                for comp in ((False, True) if args.compile else (False,)):
                    try:
                        rate = setting_rate(name, kwargs, size, precision, cl, comp, args.steps, args.warmup, args.batch)
                        row = {"recipe": recipe, "precision": precision, "channels_last": cl, "compile": comp,
                               "images_per_s": round(rate, 3)}
                    except Exception as exc:  # compile needs a C++ toolchain; report, keep going
                        row = {"recipe": recipe, "precision": precision, "channels_last": cl, "compile": comp,
                               "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.json:
        import torch

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"batch": args.batch, "timed_steps": args.steps, "warmup": args.warmup,
                                         "threads": torch.get_num_threads(), "rows": rows}, indent=1) + "\n")


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
    p.add_argument("--settings", action="store_true", help="fp32 / bf16-mixed / channels_last / compile on the CamVid recipes")
    p.add_argument("--compile", action="store_true", help="with --settings: also torch.compile (minutes per model)")
    p.add_argument("--recipe", help="with --settings: only the recipes whose name contains this text")
    p.add_argument("--fast-only", action="store_true",
                   help="with --settings: only bf16-mixed + channels_last (the recipes' setting), e.g. to add --compile")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.settings:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        settings_main(args)
        return
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
