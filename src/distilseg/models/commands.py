"""``distilseg models``: list every registered architecture with its description and parameter count, then the
bundled ``zoo:`` models;
``distilseg ensemble``: one model artifact from several trained ones (the mean of their logits)."""
from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register", "describe_models", "describe_zoo"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list model architectures",
        description="List every registered model with its description and parameter count (default arguments), "
        "then the bundled models (zoo:NAME) with their architecture, parameters, dataset and validation score.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of {name, description, params}")
    parser.add_argument(
        "--num-classes", type=int, default=19, metavar="C", help="classes used to count parameters (default 19)"
    )
    parser.set_defaults(func=run)
    ens = subparsers.add_parser(
        "ensemble",
        help="combine trained models into one artifact (mean of their logits), e.g. a teacher for distill",
        description="Write a model artifact that averages the logits of trained models (artifact folders, "
        "training outputs with best/, zoo:NAME). They must predict the same classes from the same input "
        "normalization. The result works wherever a checkpoint is accepted: eval, predict, export, "
        "distill --teacher.",
    )
    ens.add_argument("members", nargs="+", metavar="MODEL", help="two or more trained models")
    ens.add_argument("--out", required=True, help="output artifact folder")
    prec = ens.add_mutually_exclusive_group()
    prec.add_argument("--half", dest="half", action="store_true", default=None,
                      help="store fp16 weights (default: fp16 when every member is stored in fp16)")
    prec.add_argument("--float32", dest="half", action="store_false", help="store fp32 weights")
    ens.set_defaults(func=run_ensemble)


def run_ensemble(args: argparse.Namespace) -> int:
    from ..io import ensure_output_dir
    from ..artifact import combine_artifacts

    ensure_output_dir(args.out)
    out = combine_artifacts(args.members, args.out, half=args.half)
    print(f"distilseg ensemble: {len(args.members)} models -> {out}")
    return 0


def _count(name: str, num_classes: int) -> int:
    """Parameter count of ``create_model(name, num_classes)``.

    Built on the meta device first (no memory, no init time: big teachers count in milliseconds); a
    factory that cannot build there (e.g. it reads weights) is built on the CPU instead.
    """
    import torch

    from .registry import create_model

    try:
        with torch.device("meta"):
            model = create_model(name, num_classes)
    except Exception:  # noqa: BLE001 - any failure here just means "try the ordinary way"
        model = create_model(name, num_classes)
    return sum(p.numel() for p in model.parameters())


def describe_models(num_classes: int = 19) -> list[dict[str, Any]]:
    """One row per registered model; a model whose factory fails gets ``params: None`` and ``error``."""
    from .registry import get_model_entry, list_models

    rows: list[dict[str, Any]] = []
    for name in list_models():
        entry = get_model_entry(name)
        row: dict[str, Any] = {"name": name, "description": entry.description, "params": None}
        try:
            row["params"] = _count(name, num_classes)
        except Exception as exc:  # noqa: BLE001 - one broken model must not hide the others
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            row["error"] = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        rows.append(row)
    return rows


_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def describe_zoo() -> list[dict[str, Any]]:
    """One row per bundled model (``zoo:NAME``): architecture, parameters (counted from the weights file's header,
    nothing is loaded), the dataset it was trained on and its validation mIoU from its ``config.json``."""
    from safetensors import safe_open

    from ..zoo import list_zoo, resolve_zoo

    rows: list[dict[str, Any]] = []
    for name in list_zoo():
        folder = resolve_zoo(name)
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        params = None
        weights = folder / "model.safetensors"
        if weights.is_file():
            params = 0
            with safe_open(str(weights), framework="np") as f:
                for key in f.keys():
                    if key.endswith(_BUFFERS):  # BatchNorm statistics are buffers, not parameters
                        continue
                    n = 1
                    for d in f.get_slice(key).get_shape():
                        n *= int(d)
                    params += n
        args = config.get("model_args") or {}
        arch = config.get("architecture", "?")
        encoder = args.get("encoder")
        miou = (config.get("metrics") or {}).get("mIoU")
        rows.append({
            "name": f"zoo:{name}",
            "architecture": f"{arch}({encoder})" if encoder else arch,
            "params": params,
            "dataset": config.get("dataset"),
            "split": "val",
            "mIoU": miou,
        })
    return rows


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}K"
    return str(n)


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError

    if args.num_classes < 1:
        raise UsageError(f"--num-classes must be a positive integer, got {args.num_classes}")
    rows = describe_models(args.num_classes)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    name_w = max([len("NAME")] + [len(r["name"]) for r in rows])
    print(f"{'NAME':<{name_w}}  {'PARAMS':>8}  DESCRIPTION")
    for r in rows:
        text = r["description"] if "error" not in r else f"{r['description']} [unavailable: {r['error']}]"
        print(f"{r['name']:<{name_w}}  {_human(r['params']):>8}  {text}")
    print(f"({len(rows)} models; parameters counted with {args.num_classes} classes and default arguments)")
    zoo = describe_zoo()
    if zoo:
        w = max(len("BUNDLED MODEL"), *(len(r["name"]) for r in zoo))
        aw = max(len("ARCHITECTURE"), *(len(r["architecture"]) for r in zoo))
        print()
        print(f"{'BUNDLED MODEL':<{w}}  {'ARCHITECTURE':<{aw}}  {'PARAMS':>8}  DATASET  SAME-STREET VAL mIoU")
        for r in zoo:
            score = "-" if r["mIoU"] is None else f"{100 * float(r['mIoU']):.1f} %"
            print(f"{r['name']:<{w}}  {r['architecture']:<{aw}}  {_human(r['params']):>8}  "
                  f"{str(r['dataset']):<7}  {score}")
        print("(use them wherever a checkpoint is accepted: --checkpoint zoo:NAME, distilseg.load('zoo:NAME'). "
              "Their val split shares a street with training frames, so it overstates accuracy on a new street; "
              "cross-street validation numbers: see the benchmarks page of the documentation)")
    return 0
