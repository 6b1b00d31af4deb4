"""The ``train`` (and ``distill``) configuration: settings, flags, precedence, validation, ``OUT/config.yaml``.

Why dataclasses and argparse, not jsonargparse: docs/design.md ("Training engine"). In short: one typed,
commented table of settings, while the flags, their aliases and the one-line errors stay as they were.

Precedence: ``TrainConfig`` defaults < ``--config FILE.yaml`` < flags typed on the command line. Flags are
registered with ``argparse.SUPPRESS`` defaults, so the namespace only holds what the user typed, which is
how "explicitly given" is detected. ``validate`` is the one place every setting is checked.
``save_config`` writes ``OUT/config.yaml``; ``--config OUT/config.yaml`` reads it back and reproduces the run
(``num_classes``, recorded there for the reader, is derived again from the dataset).
"""
from __future__ import annotations

import argparse
import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..checks import size_pair
from ..errors import UsageError
from ..io import atomic_write_text, plain_data
from ..parsing import key_value, parse_key_values

__all__ = ["TrainConfig", "DEFAULTS", "add_train_arguments", "resolve_config", "validate", "save_config",
           "eval_size", "PRECISIONS"]


@dataclass
class TrainConfig:
    """Every ``train`` setting, its type and default (the ``train`` flags, ``--config`` YAML keys and
    ``OUT/config.yaml`` keys are these names). ``resolve_config`` returns ``asdict`` of one, validated."""

    dataset: str | None = None  # dataset name (`distilseg datasets`)
    root: str | None = None  # dataset root folder
    dataset_args: dict[str, Any] = field(default_factory=dict)  # dataset options
    train_split: str = "train"  # split(s) to train on; train+val joins two (final-model protocol)
    val_split: str = "val"  # split to validate (and select the best epoch) on
    model: str | None = None  # architecture (`distilseg models`)
    model_args: dict[str, Any] = field(default_factory=dict)  # architecture options
    img_size: list[int] = field(default_factory=lambda: [256, 256])  # training crop [H, W]
    eval_size: list[int] | None = None  # validation / saved model input size [H, W] (None: img_size)
    epochs: int = 50  # epochs
    batch_size: int = 8  # batch size per process
    lr: float = 1e-3  # learning rate
    optimizer: str = "adam"  # training.optim.OPTIMIZERS
    weight_decay: float = 1e-4  # not on norms and biases
    scheduler: str = "exponential"  # training.optim.SCHEDULERS
    gamma: float = 0.9  # exponential decay per epoch
    warmup_epochs: float = 0.0  # linear warmup (epochs)
    loss: str = "ce:1"  # loss spec, e.g. ce:1,dice:0.5
    class_weights: str = "none"  # none | auto | FILE
    precision: str = "32"  # 32 | 16-mixed | bf16-mixed
    channels_last: bool = False  # NHWC on the CPU too
    devices: int = 1  # processes per node
    num_nodes: int = 1  # nodes
    strategy: str = "auto"  # auto | ddp
    accelerator: str = "auto"  # auto | cpu | gpu
    seed: int = 42  # random seed
    limit_train_batches: int | None = None  # batches per epoch (None: all)
    limit_val_batches: int | None = None  # validation batches (None: all)
    num_workers: int = 2  # data loader workers
    patience: int = 0  # early stopping (0: off)
    grad_clip: float | None = None  # gradient norm clip
    freeze_encoder: bool = False  # freeze the pretrained encoder
    encoder_lr_mult: float = 1.0  # encoder lr = lr * F
    pretrained: str | None = None  # imagenet | hub name | weights file | artifact folder
    resume: bool = False  # continue from OUT/checkpoints/last.ckpt
    skip_bad: bool = False  # leave out unreadable samples
    skip_nonfinite: int = 0  # NaN/inf steps to skip
    val_every: int = 1  # validate every E epochs
    checkpoint_every_steps: int = 50  # resume state every N steps
    augment: bool = True  # scale/flip/rotate/color
    weather: bool = False  # fog and sun flare
    progress: bool = True  # progress bar
    out: str | None = None  # output folder

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> "TrainConfig":
        """Defaults plus ``settings`` (only known keys), validated (``validate``)."""
        unknown = sorted(set(settings) - set(DEFAULTS) - set(RECORDED))
        if unknown:
            raise UsageError(f"unknown setting {unknown[0]!r}")
        cfg = {**copy.deepcopy(DEFAULTS), **{k: v for k, v in settings.items() if k in DEFAULTS}}
        validate(cfg)
        return cls(**{k: cfg[k] for k in DEFAULTS})

    def to_dict(self) -> dict[str, Any]:
        """The plain settings dict that ``run_training`` and ``OUT/config.yaml`` use."""
        return asdict(self)


DEFAULTS: dict[str, Any] = asdict(TrainConfig())
# Keys that OUT/config.yaml records but that the run derives again (so a saved config reads back as is).
RECORDED = ("num_classes",)

PRECISIONS = ("32", "16-mixed", "bf16-mixed")
_SUPPRESS = argparse.SUPPRESS


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every ``train`` flag (``distill`` reuses them). Defaults are SUPPRESSed: see ``DEFAULTS``."""
    from .optim import OPTIMIZERS, SCHEDULERS

    d = DEFAULTS
    a = parser.add_argument
    a("--config", default=_SUPPRESS, metavar="FILE.yaml", help="YAML with any of these settings (flags win)")
    a("--dataset", default=_SUPPRESS, help="dataset name (see `distilseg datasets`)")
    a("--root", "--root_path", dest="root", default=_SUPPRESS, metavar="PATH", help="dataset root folder")
    a("--dataset-args", dest="dataset_args", nargs="*", default=_SUPPRESS, metavar="K=V",
      help="dataset options, e.g. level=1 binary=true")
    a("--train-split", dest="train_split", default=_SUPPRESS, metavar="SPLIT",
      help=f"split(s) to train on; '+' joins splits, e.g. train+val (default {d['train_split']})")
    a("--val-split", dest="val_split", default=_SUPPRESS, metavar="SPLIT",
      help=f"split to validate on and select the best epoch by (default {d['val_split']})")
    a("--model", default=_SUPPRESS, help="architecture (see `distilseg models`)")
    a("--model-args", dest="model_args", nargs="*", default=_SUPPRESS, metavar="K=V",
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
        if key in RECORDED:  # written into OUT/config.yaml for the record; derived again by the run
            continue
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
            if isinstance(item, str) and "=" in item:
                item = key_value(item, what)
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
            typed = parse_key_values(given[key], _setting(key))
            given[key] = {**_as_dict(cfg.get(key), _setting(key, origin)), **typed}
    for key in given:
        origin.pop(key, None)
    cfg.update(given)
    cfg["dataset_args"] = _as_dict(cfg["dataset_args"], _setting("dataset_args", origin))
    cfg["model_args"] = _as_dict(cfg["model_args"], _setting("model_args", origin))
    validate(cfg, origin)
    return cfg


def _size_pair(value: Any, flag: str) -> list[int]:
    """``S`` or ``[H, W]`` (positive ints) as ``[H, W]`` (``checks.size_pair``, the one size check)."""
    return list(size_pair(value, flag))


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


def validate(cfg: dict[str, Any], origin: dict[str, str] | None = None) -> None:
    """Every setting's type and range; a bad one is a ``UsageError`` naming it (and its YAML file)."""
    for key, value in DEFAULTS.items():  # a config dict written before a setting existed
        cfg.setdefault(key, copy.deepcopy(value))
    for key in ("dataset", "model", "out"):
        if not cfg.get(key):
            raise UsageError(f"--{key} is required (on the command line or in --config)")
    for key in ("dataset", "model", "optimizer", "scheduler", "loss", "class_weights", "train_split", "val_split"):
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
    for key in ("out", "root", "pretrained"):  # paths are saved (and compared) as text
        cfg[key] = None if cfg[key] is None else str(cfg[key])


def eval_size(cfg: dict[str, Any]) -> list[int]:
    """Validation/inference input size: training on crops smaller than the images is common (MMSeg's
    crop_size vs test scale), but the model must be judged, and later run, on whole images."""
    return list(cfg.get("eval_size") or cfg["img_size"])


def save_config(cfg: dict[str, Any], out: Path) -> Path:
    """``OUT/config.yaml``: every setting (what ``--config`` reads back) plus ``num_classes`` for the record."""
    return atomic_write_text(out / "config.yaml", yaml.safe_dump(plain_data(cfg), sort_keys=False))
