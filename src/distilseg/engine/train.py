"""``distilseg train``: configuration, data, model and the Lightning ``Trainer`` run.

Why Lightning's ``Trainer`` and not Fabric: the Trainer gives us, without code of our own, callbacks
(best/last artifacts, early stopping, progress bar with rate and ETA), loggers (CSV, TensorBoard),
DDP and multi-node launch (``--devices``/``--num-nodes``, torchrun and SLURM environments detected),
precision plugins (``16-mixed``/``bf16-mixed``), gradient clipping and resumable checkpoints that restore
the optimizer, scheduler, loop progress (mid-epoch) and callback state. Fabric would make us rewrite
every one of those loops and their resume logic; the Trainer's hooks are enough for what we customize.

Configuration precedence: built-in ``DEFAULTS`` < ``--config FILE.yaml`` < flags given on the command
line. Flags are registered with ``argparse.SUPPRESS`` defaults, so the namespace only holds what the
user typed, which is how "explicitly given" is detected. The resolved config is saved as
``OUT/config.yaml``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path
from typing import Any

import yaml

from ..errors import DataError, TrainingError, UsageError
from ..io import atomic_write_text

LAST_CKPT_REL = Path("checkpoints") / "last.ckpt"

DEFAULTS: dict[str, Any] = {
    "dataset": None,
    "root": None,
    "dataset_args": {},
    "model": None,
    "model_args": {},
    "img_size": [256, 256],
    "eval_size": None,
    "epochs": 50,
    "batch_size": 8,
    "lr": 1e-3,
    "optimizer": "adam",
    "weight_decay": 1e-4,
    "scheduler": "exponential",
    "gamma": 0.9,
    "warmup_epochs": 0.0,
    "loss": "ce:1",
    "class_weights": "none",
    "precision": "32",
    "channels_last": False,
    "devices": 1,
    "num_nodes": 1,
    "strategy": "auto",
    "accelerator": "auto",
    "seed": 42,
    "limit_train_batches": None,
    "limit_val_batches": None,
    "num_workers": 2,
    "patience": 0,
    "grad_clip": None,
    "freeze_encoder": False,
    "encoder_lr_mult": 1.0,
    "pretrained": None,
    "resume": False,
    "skip_bad": False,
    "skip_nonfinite": 0,
    "val_every": 1,
    "checkpoint_every_steps": 50,
    "augment": True,
    "weather": False,
    "progress": True,
    "out": None,
}

PRECISIONS = ("32", "16-mixed", "bf16-mixed")
_SUPPRESS = argparse.SUPPRESS


def _kv(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        value = yaml.safe_load(v) if v != "" else ""
    except yaml.YAMLError:
        value = v
    return k.strip().replace("-", "_"), value


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every ``train`` flag (``distill`` reuses them). Defaults are SUPPRESSed: see ``DEFAULTS``."""
    from .optim import OPTIMIZERS, SCHEDULERS

    d = DEFAULTS
    a = parser.add_argument
    a("--config", default=_SUPPRESS, metavar="FILE.yaml", help="YAML with any of these settings (flags win)")
    a("--dataset", default=_SUPPRESS, help="dataset name (see `distilseg datasets`)")
    a("--root", "--root_path", dest="root", default=_SUPPRESS, metavar="PATH", help="dataset root folder")
    a("--dataset-args", dest="dataset_args", nargs="*", type=_kv, default=_SUPPRESS, metavar="K=V",
      help="dataset options, e.g. level=1 binary=true")
    a("--model", default=_SUPPRESS, help="architecture (see `distilseg models`)")
    a("--model-args", dest="model_args", nargs="*", type=_kv, default=_SUPPRESS, metavar="K=V",
      help="architecture options, e.g. depth=4 base_width=32")
    a("--img-size", dest="img_size", nargs=2, type=int, default=_SUPPRESS, metavar=("H", "W"),
      help=f"training crop size (default {d['img_size'][0]} {d['img_size'][1]})")
    a("--img_size", dest="img_size_square", type=int, default=_SUPPRESS, metavar="S",
      help="square training size S x S (original flag; same as --img-size S S)")
    a("--eval-size", dest="eval_size", nargs=2, type=int, default=_SUPPRESS, metavar=("H", "W"),
      help="size validation images are resized to, and the saved model's input size; scores stay at the "
           "labels' native size (default: the training crop size)")
    a("--epochs", type=int, default=_SUPPRESS, help=f"epochs (default {d['epochs']})")
    a("--batch-size", "--batch", dest="batch_size", type=int, default=_SUPPRESS,
      help=f"batch size per process (default {d['batch_size']})")
    a("--lr", type=float, default=_SUPPRESS, help=f"learning rate (default {d['lr']})")
    a("--optimizer", choices=OPTIMIZERS, default=_SUPPRESS, help=f"default {d['optimizer']}")
    a("--weight-decay", dest="weight_decay", type=float, default=_SUPPRESS,
      help=f"weight decay, never applied to norm layers and biases (default {d['weight_decay']})")
    a("--scheduler", choices=SCHEDULERS, default=_SUPPRESS, help=f"lr schedule (default {d['scheduler']})")
    a("--gamma", type=float, default=_SUPPRESS, help=f"exponential decay per epoch (default {d['gamma']})")
    a("--warmup-epochs", dest="warmup_epochs", type=float, default=_SUPPRESS,
      help="linear warmup length in epochs (cosine, poly, wsd)")
    a("--loss", default=_SUPPRESS, help=f"loss spec like ce:1,dice:0.5 (default {d['loss']})")
    a("--class-weights", dest="class_weights", default=_SUPPRESS, metavar="none|auto|FILE",
      help="class weights for the loss: auto = median frequency balancing from the training split")
    a("--precision", choices=PRECISIONS, default=_SUPPRESS, help="default 32")
    a("--channels-last", dest="channels_last", action="store_true", default=_SUPPRESS,
      help="NHWC memory format on the CPU too (always on a GPU); with --precision bf16-mixed it is the fast "
           "setting on CPUs with AVX512-BF16 (benchmarks/train_throughput.py --settings)")
    a("--devices", type=int, default=_SUPPRESS, help="devices (processes) per node (default 1)")
    a("--num-nodes", dest="num_nodes", type=int, default=_SUPPRESS, help="nodes (default 1)")
    a("--strategy", choices=("auto", "ddp"), default=_SUPPRESS, help="default auto")
    a("--accelerator", choices=("auto", "cpu", "gpu"), default=_SUPPRESS, help="default auto")
    a("--seed", type=int, default=_SUPPRESS, help=f"random seed (default {d['seed']})")
    a("--limit-train-batches", dest="limit_train_batches", type=int, default=_SUPPRESS, metavar="N")
    a("--limit-val-batches", dest="limit_val_batches", type=int, default=_SUPPRESS, metavar="N")
    a("--num-workers", dest="num_workers", type=int, default=_SUPPRESS, help="data loader workers (default 2)")
    a("--patience", type=int, default=_SUPPRESS, help="early stopping patience in validations (0 = off)")
    a("--grad-clip", dest="grad_clip", type=float, default=_SUPPRESS, help="clip gradient norm to C")
    a("--freeze-encoder", dest="freeze_encoder", action="store_true", default=_SUPPRESS)
    a("--encoder-lr-mult", dest="encoder_lr_mult", type=float, default=_SUPPRESS,
      help="encoder learning rate = lr * F")
    a("--pretrained", default=_SUPPRESS, metavar="NAME|PATH",
      help="initial weights: imagenet, a hub name, a weights file or a model artifact folder")
    a("--resume", action="store_true", default=_SUPPRESS, help="continue from OUT/checkpoints/last.ckpt")
    a("--skip-bad", dest="skip_bad", action="store_true", default=_SUPPRESS,
      help="leave out unreadable samples instead of stopping")
    a("--skip-nonfinite", dest="skip_nonfinite", type=int, default=_SUPPRESS, metavar="N",
      help="skip up to N steps whose loss is NaN/inf (default 0: stop)")
    a("--val-every", dest="val_every", type=int, default=_SUPPRESS, metavar="E", help="validate every E epochs")
    a("--checkpoint-every-steps", dest="checkpoint_every_steps", type=int, default=_SUPPRESS, metavar="N",
      help="also save the resume state every N steps (default 50; 0 = epoch ends only)")
    a("--weather", dest="weather", action="store_true", default=_SUPPRESS,
      help="also add random fog and sun flare to training images")
    a("--no-augment", dest="augment", action="store_false", default=_SUPPRESS,
      help="no random scale/flip/rotate/color augmentation")
    a("--no-progress", dest="progress", action="store_false", default=_SUPPRESS, help="no progress bar")
    a("--out", default=_SUPPRESS, metavar="DIR", help="output folder")
    return parser


def _load_yaml(path: str | Path, known: dict[str, Any] = DEFAULTS) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = str(k).replace("-", "_")
        if key == "img_size_square":
            key, v = "img_size", [v, v]
        if key not in known:
            raise UsageError(f"{path}: unknown setting {k!r}")
        if key == "img_size" and isinstance(v, int):
            v = [v, v]
        out[key] = v
    return out


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k).replace("-", "_"): v for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        pairs = []
        for item in value:
            if isinstance(item, str):
                try:
                    item = _kv(item)
                except argparse.ArgumentTypeError:
                    item = None
            if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
                raise UsageError(f"{what} must be a mapping of KEY: VALUE settings, got {value!r}")
            pairs.append((item[0].replace("-", "_"), item[1]))
        return dict(pairs)
    raise UsageError(f"{what} must be a mapping of KEY: VALUE settings, got {value!r}")


def _setting(key: str, origin: dict[str, str] | None = None) -> str:
    """How to name a setting in a message: ``FILE.yaml: key`` when it came from the YAML, else ``--flag``."""
    flag = f"--{key.replace('_', '-')}"
    if origin and key in origin:
        return f"{origin[key]}: {key} ({flag})"
    return flag


def resolve_config(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """defaults < YAML ``--config`` < flags typed on the command line; validated.

    ``extra`` adds a command's own settings (with their defaults), e.g. distill's teacher, so that one
    YAML file can hold everything that reproduces a run.
    """
    known = {**DEFAULTS, **(extra or {})}
    cfg = copy.deepcopy(known)
    given = {k: v for k, v in vars(args).items() if k in known or k in ("img_size_square", "config")}
    origin: dict[str, str] = {}  # setting -> the YAML file it came from (for messages)
    if given.get("config"):
        from_yaml = _load_yaml(given["config"], known)
        origin = {k: str(given["config"]) for k in from_yaml}
        cfg.update(from_yaml)
    if "img_size_square" in given:
        given["img_size"] = [given.pop("img_size_square")] * 2
    given.pop("config", None)
    for key in ("dataset_args", "model_args"):
        if key in given:
            # explicit K=V pairs add to (and override) the YAML's
            given[key] = {**_as_dict(cfg.get(key), _setting(key, origin)), **_as_dict(given[key], key)}
    for key in given:
        origin.pop(key, None)
    cfg.update(given)
    cfg["dataset_args"] = _as_dict(cfg["dataset_args"], _setting("dataset_args", origin))
    cfg["model_args"] = _as_dict(cfg["model_args"], _setting("model_args", origin))
    _validate(cfg, origin)
    return cfg


def _size_pair(value: Any, flag: str) -> list[int]:
    """``S`` or ``[H, W]`` (positive ints) as ``[H, W]``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in value)):
        raise UsageError(f"{flag} must be two positive integers H W, got {value!r}")
    return [int(s) for s in value]


# integer settings: smallest allowed value (the optional ones may also be None = unset)
_INT_MIN: dict[str, int] = {"epochs": 1, "batch_size": 1, "devices": 1, "num_nodes": 1, "val_every": 1,
                            "num_workers": 0, "patience": 0, "skip_nonfinite": 0, "checkpoint_every_steps": 0,
                            "seed": 0}
_OPTIONAL_INT_MIN: dict[str, int] = {"limit_train_batches": 1, "limit_val_batches": 1}
# real settings: (low, low_inclusive, high, high_inclusive, optional); every value must also be finite
_REAL_RANGES: dict[str, tuple[float | None, bool, float | None, bool, bool]] = {
    "lr": (0.0, False, None, False, False),
    "weight_decay": (0.0, True, None, False, False),
    "gamma": (0.0, False, 1.0, True, False),
    "warmup_epochs": (0.0, True, None, False, False),
    "encoder_lr_mult": (0.0, True, None, False, False),
    "grad_clip": (0.0, False, None, False, True),
}
_BOOLS = ("freeze_encoder", "resume", "skip_bad", "augment", "weather", "progress", "channels_last")
_CHOICES: dict[str, tuple[str, ...]] = {"strategy": ("auto", "ddp"), "accelerator": ("auto", "cpu", "gpu")}
_SEED_MAX = 2**32 - 1  # numpy's seed range (seed_everything)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_real(cfg: dict[str, Any], key: str, origin: dict[str, str] | None) -> None:
    import math

    low, low_inc, high, high_inc, optional = _REAL_RANGES[key]
    v = cfg[key]
    if v is None and optional:
        return
    name = _setting(key, origin)
    if isinstance(v, str):  # PyYAML reads 1e-4 (no dot) as text: take what Python reads as a number
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise UsageError(f"{name} must be a number, got {v!r}")
    if not math.isfinite(v):
        raise UsageError(f"{name} must be a finite number, got {v!r}")
    ok = True
    if low is not None:
        ok &= v >= low if low_inc else v > low
    if high is not None:
        ok &= v <= high if high_inc else v < high
    if not ok:
        if high is None:
            want = "must not be negative" if low_inc else "must be positive"
        else:
            want = f"must be in {'[' if low_inc else '('}{low:g}, {high:g}{']' if high_inc else ')'}"
        raise UsageError(f"{name} {want}, got {v!r}")
    cfg[key] = float(v)


def _validate(cfg: dict[str, Any], origin: dict[str, str] | None = None) -> None:
    """Every setting's type and range; a bad one is a ``UsageError`` naming it (and its YAML file)."""
    for key, value in DEFAULTS.items():  # a config dict written before a setting existed
        cfg.setdefault(key, copy.deepcopy(value))
    for key in ("dataset", "model", "out"):
        if not cfg.get(key):
            raise UsageError(f"--{key} is required (on the command line or in --config)")
    for key in ("dataset", "model", "optimizer", "scheduler", "loss", "class_weights"):
        if not isinstance(cfg[key], str):
            raise UsageError(f"{_setting(key, origin)} must be a name (text), got {cfg[key]!r}")
    for key in ("out", "root", "pretrained"):
        if cfg[key] is not None and not isinstance(cfg[key], (str, Path)):
            raise UsageError(f"{_setting(key, origin)} must be a path, got {cfg[key]!r}")
    cfg["img_size"] = _size_pair(cfg["img_size"], _setting("img_size", origin))
    if cfg.get("eval_size") is not None:
        cfg["eval_size"] = _size_pair(cfg["eval_size"], _setting("eval_size", origin))
    for key, low in _INT_MIN.items():
        if not _is_int(cfg[key]) or cfg[key] < low:
            what = "a positive integer" if low >= 1 else "a non-negative integer"
            raise UsageError(f"{_setting(key, origin)} must be {what}, got {cfg[key]!r}")
    if cfg["seed"] > _SEED_MAX:
        raise UsageError(f"{_setting('seed', origin)} must be at most {_SEED_MAX}, got {cfg['seed']!r}")
    for key, low in _OPTIONAL_INT_MIN.items():
        if cfg[key] is not None and (not _is_int(cfg[key]) or cfg[key] < low):
            raise UsageError(f"{_setting(key, origin)} must be a positive integer, got {cfg[key]!r}")
    for key in _REAL_RANGES:
        _check_real(cfg, key, origin)
    for key in _BOOLS:
        if not isinstance(cfg[key], bool):
            raise UsageError(f"{_setting(key, origin)} must be true or false, got {cfg[key]!r}")
    for key, choices in _CHOICES.items():
        if cfg[key] not in choices:
            raise UsageError(f"{_setting(key, origin)} must be one of {', '.join(choices)}, got {cfg[key]!r}")
    for key in ("dataset_args", "model_args"):
        if not isinstance(cfg[key], dict):
            raise UsageError(f"{_setting(key, origin)} must be a mapping of KEY: VALUE settings, got {cfg[key]!r}")
    if isinstance(cfg["precision"], bool):
        raise UsageError(f"{_setting('precision', origin)} must be one of {', '.join(PRECISIONS)}")
    cfg["precision"] = str(cfg["precision"])
    if cfg["precision"] not in PRECISIONS:
        raise UsageError(f"{_setting('precision', origin)} must be one of {', '.join(PRECISIONS)}, "
                         f"got {cfg['precision']!r}")
    from .optim import OPTIMIZERS, SCHEDULERS

    if cfg["optimizer"] not in OPTIMIZERS:
        raise UsageError(f"{_setting('optimizer', origin)} must be one of {', '.join(OPTIMIZERS)}, "
                         f"got {cfg['optimizer']!r}")
    if cfg["scheduler"] not in SCHEDULERS:
        raise UsageError(f"{_setting('scheduler', origin)} must be one of {', '.join(SCHEDULERS)}, "
                         f"got {cfg['scheduler']!r}")
    cfg["out"] = str(cfg["out"])
    if cfg["root"] is not None:
        cfg["root"] = str(cfg["root"])
    if cfg["pretrained"] is not None:
        cfg["pretrained"] = str(cfg["pretrained"])


# --------------------------------------------------------------------------------------------------
# class weights


def _read_weights_file(path: Path, num_classes: int) -> list[float]:
    if not path.is_file():
        raise UsageError(f"--class-weights {path}: no such file (use none, auto or a JSON/.txt file)")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            values = [float(t) for t in text.replace(",", " ").split()]
    except (ValueError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: class weights must be a list of numbers ({exc})") from exc
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
        raise UsageError(f"{path}: class weights must be a list of numbers")
    if len(values) != num_classes:
        raise UsageError(f"{path}: {len(values)} class weights for a dataset with {num_classes} classes")
    if any(v < 0 for v in values):
        raise UsageError(f"{path}: class weights must not be negative")
    return [float(v) for v in values]


def pixel_counts(ds: Any) -> tuple[list[int], list[int]]:
    """Per class: pixels, and pixels of the images that contain the class (for median frequency)."""
    import numpy as np

    k = int(ds.num_classes)
    counts = np.zeros(k, dtype=np.int64)
    image_pixels = np.zeros(k, dtype=np.int64)
    for i in range(len(ds)):
        m = np.asarray(ds.load_mask(i))
        c = np.bincount(m[m < k].ravel(), minlength=k)[:k]
        counts += c
        image_pixels[c > 0] += int((m < k).sum())
    return counts.tolist(), image_pixels.tolist()


def median_frequency_weights(counts: list[int], image_pixels: list[int]) -> list[float]:
    """Eigen & Fergus: w_c = median(freq) / freq_c with freq_c = pixels_c / pixels of images with c.

    The formula lives in ``data.stats.class_weights``; here the denominator is the *labelled* pixels of
    those images (``pixel_counts``), and a split with no labelled pixel at all trains unweighted."""
    from ..data.stats import class_weights

    if not any(counts):
        return [1.0] * len(counts)
    return [float(w) for w in class_weights(counts, "median_freq", image_pixels)]


def compute_class_weights(spec: Any, ds: Any) -> list[float] | None:
    if spec is None or str(spec).lower() == "none":
        return None
    k = int(ds.num_classes)
    if str(spec).lower() == "auto":
        try:
            from ..data.stats import compute_class_stats
        except ImportError:
            compute_class_stats = None
        if compute_class_stats is not None:
            stats = compute_class_stats(ds, workers=2)
            med = stats["class_weights"]["median_freq"]
            return [float(med[c]) for c in stats["classes"]]
        return median_frequency_weights(*pixel_counts(ds))
    return _read_weights_file(Path(spec), k)


# --------------------------------------------------------------------------------------------------
# data


def eval_size(cfg: dict[str, Any]) -> list[int]:
    """Validation/inference input size: training on crops smaller than the images is common (MMSeg's
    crop_size vs test scale), but the model must be judged, and later run, on whole images."""
    return list(cfg.get("eval_size") or cfg["img_size"])


def build_datasets(cfg: dict[str, Any]) -> tuple[Any, Any, list[float], list[float]]:
    from .. import data as dmod

    mean = list(getattr(dmod, "IMAGENET_MEAN", (0.485, 0.456, 0.406)))
    std = list(getattr(dmod, "IMAGENET_STD", (0.229, 0.224, 0.225)))
    h, w = cfg["img_size"]
    if cfg["augment"]:
        train_tf = dmod.build_train_transform(img_size=(h, w), mean=mean, std=std, weather=bool(cfg["weather"]))
    else:
        train_tf = dmod.build_train_transform(
            img_size=(h, w), mean=mean, std=std, scale=(1.0, 1.0), hflip=False, rotate=0, color=False
        )
    eval_tf = dmod.build_eval_transform(img_size=tuple(eval_size(cfg)), mean=mean, std=std)
    opts = dict(cfg["dataset_args"])
    train_ds = dmod.create_dataset(cfg["dataset"], root=cfg["root"], split="train", transform=train_tf, **opts)
    val_ds = dmod.create_dataset(cfg["dataset"], root=cfg["root"], split="val", transform=eval_tf, **opts)
    if len(train_ds) == 0:
        raise DataError(f"dataset {cfg['dataset']} ({cfg['root']}): the training split has no samples")
    return train_ds, val_ds, mean, std


def quick_check(ds: Any, skip_bad: bool, substitute: str = "replace", like: Any = None) -> Any:
    """Check every sample cheaply (headers, sizes, modes) and decode a few before the first step, so a
    broken file fails now, naming the file. With ``skip_bad`` the bad ones are left out and listed, and a
    sample that only fails when a worker decodes it is skipped there too (``substitute``: "replace" = the
    next good sample, for training; "ignore" = one that scores nothing, for validation)."""
    if like is not None and int(like.num_classes) != int(ds.num_classes):
        raise DataError(
            f"dataset {ds.name} ({ds.root}): split {like.split!r} has {like.num_classes} classes but split "
            f"{ds.split!r} has {ds.num_classes}; give the class count (num_classes) explicitly"
        )
    try:
        from ..data.validate import validate_dataset
    except ImportError:
        return ds
    report = validate_dataset(ds, full=False, skip_bad=skip_bad, workers=2)
    bad = getattr(report, "bad", None)
    if bad:  # only with skip_bad: they were removed from ds.samples
        for b in bad:
            print(f"distilseg train: skipped {b.file}: {b.problem}")
        print(f"distilseg train: left out {len(bad)} bad sample(s) of split {ds.split!r} (--skip-bad)")
    if skip_bad:
        ds.on_bad = substitute
    if len(ds) == 0:
        raise DataError(f"dataset {ds.name} split {ds.split!r}: no usable samples left")
    return ds


class UnpaddedShardSampler:
    """Validation indices ``rank, rank + world, ...``: every sample is scored exactly once across processes
    (``DistributedSampler`` pads with duplicates, which would count some images twice)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def seed_train_worker(worker_id: int, rank: int = 0) -> None:
    """DataLoader ``worker_init_fn``: what Lightning's ``pl_worker_init_function`` does (torch, numpy,
    ``random``) plus albumentations' own generators, which nothing else seeds.

    The worker's seed (``torch.initial_seed()`` there = DataLoader base seed + worker id) comes from the
    main process' torch generator, seeded by ``seed_everything``: so it is the same in two runs with the
    same ``--seed``, distinct per worker, and new each time workers start. Mixing in ``rank`` keeps DDP
    processes (same base seed) from repeating each other's augmentations.
    """
    import torch
    from lightning.fabric.utilities.seed import pl_worker_init_function

    from ..data.transforms import seed_augmentations

    pl_worker_init_function(worker_id, rank=rank)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        seed_augmentations(info.dataset, [info.seed, worker_id, rank])


def _make_datamodule(cfg: dict[str, Any], train_ds: Any, val_ds: Any):
    import functools

    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, DistributedSampler

    from ..data import collate_segmentation
    from ..data.transforms import seed_augmentations

    class _Data(pl.LightningDataModule):
        def train_dataloader(self):
            world, rank = self.trainer.world_size, self.trainer.global_rank
            bs = cfg["batch_size"]
            drop_last = len(train_ds) // world >= bs  # never a batch of 1 for BatchNorm unless data is tiny
            nw = cfg["num_workers"]
            # albumentations keeps its own generators (seed_everything does not reach them): seed them from
            # --seed for num_workers=0; each worker reseeds its copy in seed_train_worker. The stream goes on
            # across epochs, so every epoch still draws new augmentations.
            seed_augmentations(train_ds, [int(cfg["seed"]), rank])
            common = dict(batch_size=bs, num_workers=nw, collate_fn=collate_segmentation,
                          drop_last=drop_last, persistent_workers=nw > 0, pin_memory=False,
                          worker_init_fn=functools.partial(seed_train_worker, rank=rank) if nw > 0 else None)
            if world > 1:
                sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True,
                                             seed=cfg["seed"], drop_last=False)
                return DataLoader(train_ds, sampler=sampler, **common)
            return DataLoader(train_ds, shuffle=True, **common)

        def val_dataloader(self):
            world, rank = self.trainer.world_size, self.trainer.global_rank
            sampler = UnpaddedShardSampler(len(val_ds), rank, world)
            nw = cfg["num_workers"]
            return DataLoader(val_ds, sampler=sampler, batch_size=cfg["batch_size"], num_workers=nw,
                              collate_fn=collate_segmentation, persistent_workers=nw > 0)

    return _Data()


# --------------------------------------------------------------------------------------------------
# model


def build_model(cfg: dict[str, Any], num_classes: int):
    from ..models import create_model

    kwargs = dict(cfg["model_args"])
    pre = cfg.get("pretrained")
    artifact_dir = Path(pre) if pre and _is_distilseg_artifact(Path(pre)) else None
    if pre and artifact_dir is None:
        kwargs["pretrained"] = pre
    try:
        model = create_model(cfg["model"], num_classes, **kwargs)
    except TypeError as exc:
        raise UsageError(f"--model {cfg['model']}: bad --model-args {cfg['model_args']} ({exc})") from exc
    if artifact_dir is not None:
        from .artifact import load_artifact, read_config

        src = read_config(artifact_dir)
        if int(src["num_classes"]) != num_classes:
            raise UsageError(
                f"--pretrained {artifact_dir}: the model has {src['num_classes']} classes but dataset "
                f"{cfg['dataset']} has {num_classes}"
            )
        pre_model, _ = load_artifact(artifact_dir)
        try:
            model.load_state_dict(pre_model.state_dict(), strict=True)
        except RuntimeError as exc:
            raise UsageError(f"--pretrained {artifact_dir}: weights do not fit {cfg['model']} ({exc})") from exc
    if cfg["freeze_encoder"]:
        from .optim import freeze_encoder

        freeze_encoder(model)
    return model


def _check_resume_classes(ckpt: Path, num_classes: int) -> None:
    from ..io import safe_torch_load

    state = safe_torch_load(ckpt)
    saved = state.get("distilseg_num_classes") if isinstance(state, dict) else None
    if saved is not None and int(saved) != num_classes:
        raise UsageError(
            f"{ckpt}: the saved run has {saved} classes but the dataset has {num_classes}; "
            f"use another --out or the dataset it was trained on"
        )


# --------------------------------------------------------------------------------------------------
# run


def save_config(cfg: dict[str, Any], out: Path) -> Path:
    return atomic_write_text(out / "config.yaml", yaml.safe_dump(_primitive(cfg), sort_keys=False))


def _primitive(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _primitive(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_primitive(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _is_rank0() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def run_training(cfg: dict[str, Any], distiller: Any = None, extra_callbacks: list | None = None) -> Path:
    """Train per ``cfg`` (see ``resolve_config``); returns OUT with best/, last/, checkpoints/, history.

    OUT is checked first (a writable folder, not a file) and locked (``OUT/.lock``) for the whole run, so a
    second run on the same folder is refused instead of mixing its files with this one's.
    """
    from ..io import ensure_output_dir, run_lock

    cfg = copy.deepcopy(cfg)
    _validate(cfg)
    out = Path(cfg["out"])
    if not _is_rank0():  # DDP workers run under the launching process' lock
        return _run_training(cfg, distiller, extra_callbacks)
    ensure_output_dir(out)
    with run_lock(out):
        return _run_training(cfg, distiller, extra_callbacks)


def _refuse_finished_without_state(out: Path, ckpt: Path) -> None:
    """Results of an earlier run but no resume state: starting over would silently replace them."""
    found = [name for name in ("best", "last", "history.csv") if (out / name).exists()]
    if found:
        raise UsageError(
            f"{out} holds the results of an earlier run ({', '.join(found)}) but no resume state ({ckpt}): "
            f"there is nothing to continue, and a new run would replace them; choose a new --out "
            f"(or delete {out} to start over)"
        )


def _interruption(trainer: Any, exc: BaseException | None) -> int | None:
    """The signal that stopped ``trainer.fit`` (Lightning turns SIGTERM into ``SIGTERMException`` and
    Ctrl-C into ``sys.exit(1)``, both ``SystemExit``), or None when it was not interrupted."""
    import signal

    if getattr(trainer, "received_sigterm", False):
        return int(signal.SIGTERM)
    if exc is not None and (isinstance(exc, KeyboardInterrupt) or isinstance(exc.__context__, KeyboardInterrupt)):
        return int(signal.SIGINT)
    if exc is None and getattr(trainer, "interrupted", False):
        return int(signal.SIGINT)
    return None


def _interrupted_error(signum: int, out: Path, recorder: Any) -> Exception:
    import signal

    from ..errors import RunInterrupted

    ckpt = out / LAST_CKPT_REL
    name = signal.Signals(signum).name
    if ckpt.is_file():
        step = getattr(recorder, "_last_saved_step", -1)
        at = f" at step {step}" if step is not None and step >= 0 else ""
        return RunInterrupted(f"run interrupted by {name}; its state{at} is saved in {ckpt}", signum)
    return RunInterrupted(f"run interrupted by {name} before any state was saved", signum, resumable=False)


def _run_training(cfg: dict[str, Any], distiller: Any = None, extra_callbacks: list | None = None) -> Path:
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from ..losses import build_loss
    from .callbacks import RunRecorder
    from .module import SegModule

    import warnings

    cfg = copy.deepcopy(cfg)
    _validate(cfg)
    for msg in (".*smaller than the logging interval.*", ".*LeafSpec.*is deprecated.*",
                ".*`training_step` returned `None`.*", ".*does not have many workers.*"):
        warnings.filterwarnings("ignore", message=msg)
    out = Path(cfg["out"])
    ckpt = out / LAST_CKPT_REL
    resume_from: Path | None = None
    rank0 = int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
    if ckpt.is_file():
        if not cfg["resume"]:
            raise UsageError(
                f"{out} already holds a training run ({ckpt}); pass --resume to continue it or choose "
                f"another --out (nothing was changed)"
            )
        resume_from = ckpt
    else:
        _refuse_finished_without_state(out, ckpt)
        if cfg["resume"] and rank0:
            print(f"distilseg train: no saved state in {ckpt}; starting from the beginning")

    pl.seed_everything(int(cfg["seed"]), workers=True, verbose=False)
    train_ds, val_ds, mean, std = build_datasets(cfg)
    train_ds = quick_check(train_ds, cfg["skip_bad"])
    val_ds = quick_check(val_ds, cfg["skip_bad"], substitute="ignore", like=train_ds)
    num_classes = int(train_ds.num_classes)
    if resume_from is not None:
        _check_resume_classes(resume_from, num_classes)
    model = build_model(cfg, num_classes)
    weights = compute_class_weights(cfg["class_weights"], train_ds)
    ignore_index = int(getattr(train_ds, "ignore_index", 255))
    loss_fn = build_loss(
        cfg["loss"], num_classes, ignore_index=ignore_index,
        class_weights=torch.tensor(weights, dtype=torch.float32) if weights is not None else None,
    )
    classes = [str(c) for c in train_ds.classes]
    settings = {k: cfg[k] for k in ("lr", "weight_decay", "optimizer", "scheduler", "gamma", "warmup_epochs",
                                    "encoder_lr_mult", "skip_nonfinite", "channels_last")}
    module = SegModule(model, loss_fn, num_classes, settings, class_names=classes, ignore_index=ignore_index,
                       distiller=distiller)
    palette = getattr(train_ds, "palette", None)
    artifact_config = {
        "num_classes": num_classes,
        "class_names": classes,
        "palette": palette.tolist() if hasattr(palette, "tolist") else palette,
        "mean": mean,
        "std": std,
        "input_size": eval_size(cfg),
        "ignore_index": ignore_index,
        "dataset": cfg["dataset"],
        "dataset_args": cfg["dataset_args"],
    }
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(dict(cfg, num_classes=num_classes), out)
    recorder = RunRecorder(out, artifact_config, every_n_steps=cfg["checkpoint_every_steps"])
    callbacks: list = [recorder, LearningRateMonitor(logging_interval="epoch")]
    if cfg["progress"]:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    if cfg["patience"] > 0:
        callbacks.append(EarlyStopping(monitor="val_mIoU", mode="max", patience=cfg["patience"],
                                       check_finite=False))
    callbacks += list(extra_callbacks or [])
    # a new version folder per launch: a resumed run must not erase the logs of the run it continues
    loggers = [CSVLogger(str(out), name="logs"), TensorBoardLogger(str(out), name="tensorboard")]
    precision = "32-true" if cfg["precision"] == "32" else cfg["precision"]
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        trainer = pl.Trainer(
            accelerator=cfg["accelerator"],
            devices=cfg["devices"],
            num_nodes=cfg["num_nodes"],
            strategy=cfg["strategy"],
            precision=precision,
            max_epochs=cfg["epochs"],
            limit_train_batches=cfg["limit_train_batches"],
            limit_val_batches=cfg["limit_val_batches"],
            check_val_every_n_epoch=cfg["val_every"],
            gradient_clip_val=cfg["grad_clip"],
            callbacks=callbacks,
            logger=loggers,
            default_root_dir=str(out),
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            enable_checkpointing=True,
            enable_progress_bar=bool(cfg["progress"]),
            enable_model_summary=False,
            log_every_n_steps=10,
        )
    except MisconfigurationException as exc:
        raise UsageError(f"cannot set up training: {exc}") from exc
    module.distilseg_num_classes = num_classes
    dm = _make_datamodule(cfg, train_ds, val_ds)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume_from) if resume_from else None, weights_only=True)
    except torch.OutOfMemoryError as exc:
        raise TrainingError(
            f"out of GPU memory ({str(exc).splitlines()[0]}); lower --batch-size, --img-size or use "
            f"--precision 16-mixed"
        ) from exc
    except (SystemExit, KeyboardInterrupt) as exc:
        signum = _interruption(trainer, exc)
        if signum is None:
            raise
        raise _interrupted_error(signum, out, recorder) from exc
    signum = _interruption(trainer, None)  # a Lightning that stops quietly after SIGTERM
    if signum is not None:
        raise _interrupted_error(signum, out, recorder)
    return out


def run_train(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    out = run_training(cfg)
    best = out / "best"
    print(f"distilseg train: done; best model in {best}, resume state in {out / LAST_CKPT_REL}")
    return 0


def register_train(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a segmentation model (Lightning: multi-GPU, resume, best/last artifacts)",
        description="Train a model on a dataset. Settings: defaults < --config YAML < flags. Writes OUT/best, "
        "OUT/last (model artifacts), OUT/checkpoints/last.ckpt (resume), history.csv, curves.png, config.yaml.",
    )
    add_train_arguments(p)
    p.set_defaults(func=run_train)
    return p


def _is_distilseg_artifact(path: Path) -> bool:
    """A distilseg artifact's config.json names an ``architecture``; a transformers
    ``save_pretrained`` folder also has a config.json but must go to the model's own loader."""
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return "architecture" in json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError):
        return False
