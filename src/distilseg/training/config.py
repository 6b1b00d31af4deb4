"""``TrainConfig``: the one configuration object of ``train`` (``DistillConfig`` extends it for ``distill``).

Each setting is declared once, as a dataclass field: its type, default, range or choices, help text and any
extra flag spelling live in that field. Everything else is derived from the fields:

- ``TrainConfig(...)`` validates itself (``__post_init__``) from the field types and ranges; a bad value is a
  ``SettingError`` (a ``ValueError``) naming the field;
- ``add_train_arguments`` makes one flag per field (``--img-size``; aliases such as ``--img_size`` are extra
  spellings of the same argument);
- ``resolve_config`` builds one from defaults < ``--config FILE.yaml`` < flags typed on the command line (flags
  have ``argparse.SUPPRESS`` defaults, so the namespace holds only what was typed) and names a bad value by
  its flag, or by its YAML file and key;
- ``save`` writes ``OUT/config.yaml``, its serialization; ``--config OUT/config.yaml`` reads it back and
  reproduces the run (``num_classes``, recorded there for the reader, is derived again from the dataset).

Why dataclasses and argparse, not jsonargparse: docs/design.md ("Training engine").
"""
from __future__ import annotations

import argparse
import copy
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import yaml

from .. import safe_yaml
from ..data.groups import check_group_by, check_holdout
from ..errors import SettingError, UsageError
from ..io import atomic_write_text, plain_data
from ..parsing import parse_key_values
from .setting_checks import _as_dict, _checked, _kind

__all__ = ["TrainConfig", "DEFAULTS", "RECORDED", "PRECISIONS", "setting", "add_train_arguments",
           "add_setting_arguments", "resolve_config", "eval_size"]

PRECISIONS = ("32", "16-mixed", "bf16-mixed")
# models whose stages can be recomputed in the backward pass (``supports_grad_checkpointing``)
GRAD_CHECKPOINTING_MODELS = ("unet", "attention_unet", "dilated_dws_unet")
# Keys that OUT/config.yaml records but that the run derives again (so a saved config reads back as is).
RECORDED = ("num_classes", "budget_steps", "budget_step_seconds")
_SUPPRESS = argparse.SUPPRESS


def _optimizers() -> tuple[str, ...]:
    from .optim import OPTIMIZERS

    return tuple(OPTIMIZERS)


def _schedulers() -> tuple[str, ...]:
    from .optim import SCHEDULERS

    return tuple(SCHEDULERS)


def setting(default: Any, help: str, *, low: float | None = None, high: float | None = None,
            open_low: bool = False, choices: tuple | Callable[[], tuple] | None = None, required: bool = False,
            path: bool = False, flags: tuple[str, ...] = (), flag: str | None = None,
            metavar: Any = None, check: Callable[[Any, str], Any] | None = None) -> Any:
    """A ``TrainConfig`` field: ``default`` and what the flag, the checks and ``--help`` need.

    ``low``/``high``: the allowed range (``open_low``: ``low`` itself excluded); ``choices``: allowed names (or a
    function returning them, for lists that live with their code); ``required``: must be given (here or in
    ``--config``); ``path``: a path, kept as text; ``flag``: the flag when it is not ``--name`` (e.g.
    ``--no-augment`` for a setting that defaults to true); ``flags``: more spellings of the same flag;
    ``check``: ``check(value, name)`` -> the value normalised, for rules beyond type and range."""
    meta = dict(help=help, low=low, high=high, open_low=open_low, choices=choices, required=required, path=path,
                flags=flags, flag=flag, metavar=metavar, check=check)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every ``train`` setting. The ``train`` flags, ``--config`` YAML keys and ``OUT/config.yaml`` keys are these
    names; ``TrainConfig(dataset="synthetic", model="unet", out="runs/x")`` is a valid run."""

    dataset: str | None = setting(None, "dataset name (see `distilseg datasets`)", required=True)
    root: str | None = setting(None, "dataset root folder", path=True, flags=("--root_path",), metavar="PATH")
    dataset_args: dict[str, Any] = setting({}, "dataset options, e.g. level=1 binary=true")
    train_split: str = setting("train", "split(s) to train on; '+' joins splits, e.g. train+val", metavar="SPLIT")
    val_split: str = setting("val", "split to validate on and select the best epoch by", metavar="SPLIT")
    holdout: str | None = setting(
        None, "validate on whole groups (streets, cities) held out of the training split, instead of --val-split; "
        "'each' runs one fold per group into OUT/fold-GROUP/ and pools their confusion matrices in OUT/cv.json",
        metavar="GROUP[,GROUP]|each", check=check_holdout)
    group_by: str | None = setting(
        None, "what names a sample's group: a regex searched in the image path relative to the root, its first "
        "capture group is the group (default: the dataset's own; CamVid: the sequence prefix)", metavar="REGEX",
        check=check_group_by)
    model: str | None = setting(None, "architecture (see `distilseg models`)", required=True)
    model_args: dict[str, Any] = setting({}, "architecture options, e.g. depth=4 base_width=32")
    img_size: list[int] = setting([256, 256], "training crop size H W")
    eval_size: list[int] | None = setting(
        None, "size validation images are resized to, and the saved model's input size; scores stay at the "
        "labels' native size (default: the training crop size)")
    epochs: int = setting(50, "epochs", low=1)
    time_budget: float | None = setting(
        None, "end the whole run (validations and saving included) within MINUTES of wall time: the first steps "
        "are timed, then the number of optimizer steps is fixed to what fits (at most --epochs epochs) and the lr "
        "schedule is fitted to it; both are recorded in history.csv and config.yaml, and a resumed run keeps them",
        low=0.0, open_low=True, metavar="MINUTES")
    batch_size: int = setting(8, "batch size per process", low=1, flags=("--batch",))
    lr: float = setting(1e-3, "learning rate", low=0.0, open_low=True)
    optimizer: str = setting("adam", "optimizer", choices=_optimizers)
    weight_decay: float = setting(1e-4, "weight decay, never applied to norm layers and biases", low=0.0)
    scheduler: str = setting("exponential", "lr schedule", choices=_schedulers)
    gamma: float = setting(0.9, "exponential decay per epoch", low=0.0, open_low=True, high=1.0)
    warmup_epochs: float = setting(0.0, "linear warmup length in epochs (cosine, poly, wsd)", low=0.0)
    loss: str = setting("ce:1", "loss spec like ce:1,dice:0.5")
    class_weights: str = setting("none", "class weights for the loss: auto = median frequency balancing from the "
                                 "training split", metavar="none|auto|FILE")
    precision: str = setting("32", "numeric precision", choices=PRECISIONS)
    channels_last: bool = setting(False, "NHWC memory format on the CPU too (always on a GPU); with --precision "
                                  "bf16-mixed it is the fast setting on CPUs with AVX512-BF16")
    grad_checkpointing: bool = setting(False, "recompute activations in the backward pass instead of keeping them: "
                                       "much less memory for one more forward pass per step (models that support "
                                       f"it: {', '.join(GRAD_CHECKPOINTING_MODELS)})")
    keep_freed_memory: bool = setting(False, "CPU training: glibc's malloc keeps freed memory for the next step "
                                      "instead of returning it to the kernel; steps of large-activation models "
                                      "run up to 2-3x faster, at a higher peak of resident memory (Linux)")
    devices: int = setting(1, "devices (processes) per node", low=1)
    num_nodes: int = setting(1, "nodes", low=1)
    strategy: str = setting("auto", "distributed strategy", choices=("auto", "ddp"))
    accelerator: str = setting("auto", "training device", choices=("auto", "cpu", "gpu"))
    seed: int = setting(42, "random seed", low=0, high=2**32 - 1)  # numpy's seed range (seed_everything)
    limit_train_batches: int | None = setting(None, "batches per epoch (default: all)", low=1, metavar="N")
    limit_val_batches: int | None = setting(None, "validation batches (default: all)", low=1, metavar="N")
    num_workers: int = setting(2, "data loader workers", low=0)
    patience: int = setting(0, "early stopping patience in validations (0 = off)", low=0)
    grad_clip: float | None = setting(None, "clip gradient norm to C", low=0.0, open_low=True)
    freeze_encoder: bool = setting(False, "freeze the pretrained encoder")
    encoder_lr_mult: float = setting(1.0, "encoder learning rate = lr * F", low=0.0)
    pretrained: str | None = setting(None, "initial weights: imagenet, a hub name, a weights file or a model "
                                     "artifact folder", path=True, metavar="NAME|PATH")
    resume: bool = setting(
        False, "continue from OUT/checkpoints/last.ckpt with the settings saved in OUT/config.yaml; only --epochs, "
        "--patience, --num-workers, --no-progress, --val-every, --limit-val-batches, --checkpoint-every-steps, "
        "--skip-bad and --accelerator may differ, anything else is refused")
    skip_bad: bool = setting(False, "leave out unreadable samples instead of stopping")
    skip_nonfinite: int = setting(0, "skip up to N steps whose loss is NaN/inf (0: stop)", low=0, metavar="N")
    val_every: int = setting(1, "validate every E epochs", low=1, metavar="E")
    checkpoint_every_steps: int = setting(50, "also save the resume state every N steps (0 = epoch ends only)",
                                          low=0, metavar="N")
    augment: bool = setting(True, "no random scale/flip/rotate/color augmentation", flag="--no-augment")
    weather: bool = setting(False, "also add random fog and sun flare to training images")
    photometric: str = setting(
        "mild", "colour and camera augmentation: mild (brightness/contrast) or strong (colour jitter down to dusk "
        "brightness, gamma, blur, sensor noise, JPEG artefacts: for footage from other cameras, hours and cities)",
        choices=("mild", "strong"))
    progress: bool = setting(True, "no progress bar", flag="--no-progress")
    out: str | None = setting(None, "output folder", required=True, path=True, metavar="DIR")

    def __post_init__(self) -> None:
        self._check(None)

    # -- building ------------------------------------------------------------------------------------
    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every setting's default (a fresh copy)."""
        return {f.name: copy.deepcopy(f.default) if f.default is not MISSING else f.default_factory()
                for f in fields(cls)}

    @classmethod
    def from_dict(cls, settings: dict[str, Any], origin: dict[str, str] | None = None):
        """Defaults plus ``settings``, validated; an unknown key is a ``UsageError``. ``origin`` (setting ->
        YAML file) makes messages name flags and files, as the CLI does; without it they name the field."""
        unknown = sorted(set(settings) - set(cls.defaults()) - set(RECORDED))
        if unknown:
            raise UsageError(f"unknown setting {unknown[0]!r}")
        cfg = cls.__new__(cls)
        cfg.__dict__.update({**cls.defaults(), **{k: copy.deepcopy(v) for k, v in settings.items()
                                                   if k not in RECORDED}})
        cfg._check(origin)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, out: str | Path, num_classes: int | None = None, **recorded: Any) -> Path:
        """``OUT/config.yaml``: every setting (what ``--config`` reads back) plus, for the record, ``num_classes``
        and any other ``RECORDED`` key given (``budget_steps``, ``budget_step_seconds``)."""
        unknown = sorted(set(recorded) - set(RECORDED))
        if unknown:
            raise ValueError(f"not a recorded key: {unknown[0]!r}")
        data = self.to_dict() if num_classes is None else {**self.to_dict(), "num_classes": int(num_classes)}
        data.update(recorded)
        return atomic_write_text(Path(out) / "config.yaml", yaml.safe_dump(plain_data(data), sort_keys=False))

    @property
    def input_size(self) -> list[int]:
        """Validation/inference input size: training on crops smaller than the images is common (MMSeg's
        crop_size vs test scale), but the model must be judged, and later run, on whole images."""
        return list(self.eval_size or self.img_size)

    # -- checking ------------------------------------------------------------------------------------
    def _check(self, origin: dict[str, str] | None) -> None:
        """Every field against its type and range, values normalised in place (sizes as [H, W], paths as
        text, reals as floats); the first bad one is a ``SettingError`` naming it."""
        self.__dict__.update(self.check_values(self.__dict__, origin))

    @classmethod
    def check_values(cls, values: dict[str, Any], origin: dict[str, str] | None = {}) -> dict[str, Any]:
        """``values`` (some of the settings) checked and normalised as the config would; ``origin`` as in
        ``from_dict`` (default: name them by their flags, as a command that takes a few of them does)."""
        hints, out = typing.get_type_hints(cls), {}
        for f in fields(cls):
            if f.name not in values:
                continue
            name = _setting_name(f.name, origin)
            try:
                out[f.name] = _checked(values[f.name], hints[f.name], f.metadata, name, f.name)
            except SettingError:
                raise
            except UsageError as exc:  # the shared checks (size_pair, K=V) speak UsageError
                raise SettingError(str(exc)) from None
        return out


def _setting_name(key: str, origin: dict[str, str] | None) -> str:
    """How a message names a setting: the field (Python), ``--flag`` (command line) or ``FILE.yaml: key
    (--flag)`` (a ``--config`` file)."""
    if origin is None:
        return key
    flag = f"--{key.replace('_', '-')}"
    return f"{origin[key]}: {key} ({flag})" if key in origin else flag


DEFAULTS: dict[str, Any] = TrainConfig.defaults()


# ------------------------------------------------------------------------------------------------- flags
def add_train_arguments(parser: argparse.ArgumentParser, cls: type[TrainConfig] = TrainConfig) -> argparse.ArgumentParser:
    """One flag per setting of ``cls`` (``train``: ``TrainConfig``; ``distill``: ``DistillConfig``), made from
    its fields; defaults are SUPPRESSed so the namespace holds only what was typed (see ``resolve_config``)."""
    parser.add_argument("--config", default=_SUPPRESS, metavar="FILE.yaml",
                        help="YAML with any of these settings (flags win)")
    return add_setting_arguments(parser, cls, [f.name for f in fields(cls)])


def add_setting_arguments(parser: argparse.ArgumentParser, cls: type[TrainConfig], names: list[str],
                          defaults: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """The flags of the settings ``names`` of ``cls`` (also for commands that take some training settings,
    such as ``compress``); ``defaults``: what ``--help`` shows where the command's default differs."""
    hints, by_name = typing.get_type_hints(cls), {f.name: f for f in fields(cls)}
    shown = {**cls.defaults(), **(defaults or {})}
    for name in names:
        meta, default = by_name[name].metadata, shown[name]
        flag = meta.get("flag") or f"--{name.replace('_', '-')}"
        kw: dict[str, Any] = dict(dest=name, default=_SUPPRESS, help=meta.get("help", ""))
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        kind = _kind(hints[name])[0]
        if kind is bool:
            kw["action"] = "store_false" if cls.defaults()[name] else "store_true"
        elif kind is list:
            kw.update(nargs=2, type=int, metavar=("H", "W"))
        elif kind is dict:
            kw.update(nargs="*", metavar="K=V")
        elif kind in (int, float):
            kw["type"] = kind
        elif meta.get("choices") is not None:
            kw["choices"] = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
        if kind is not bool and default not in (None, {}, []):
            kw["help"] += f" (default {' '.join(map(str, default)) if kind is list else default})"
        parser.add_argument(flag, *meta.get("flags", ()), **kw)
        if name == "img_size":  # the original system's flag: a square size
            parser.add_argument("--img_size", dest="img_size_square", type=int, default=_SUPPRESS, metavar="S",
                                help="square training size S x S (original flag; same as --img-size S S)")
    return parser


def _load_yaml(path: str | Path, known: dict[str, Any]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such config file")
    try:
        data = safe_yaml.load(path.read_text()) or {}
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
        out[key] = v
    return out


def resolve_config(args: argparse.Namespace, cls: type[TrainConfig] = TrainConfig) -> TrainConfig:
    """defaults < YAML ``--config`` < flags typed on the command line, as a validated ``cls``."""
    known = cls.defaults()
    given = {k: v for k, v in vars(args).items() if k in known or k in ("img_size_square", "config")}
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}  # setting -> the YAML file it came from (for messages)
    if given.get("config"):
        values = _load_yaml(given["config"], known)
        origin = {k: str(given["config"]) for k in values}
    if "img_size_square" in given:
        given["img_size"] = [given.pop("img_size_square")] * 2
    given.pop("config", None)
    for key in [k for k, f in ((f.name, f) for f in fields(cls)) if isinstance(known[k], dict) and k in given]:
        # explicit K=V pairs add to (and override) the YAML's
        typed = parse_key_values(given[key], _setting_name(key, {}))
        given[key] = {**_as_dict(values.get(key), _setting_name(key, origin)), **typed}
    for key in given:
        origin.pop(key, None)
    return cls.from_dict({**values, **given}, origin)


def eval_size(cfg: TrainConfig | dict[str, Any]) -> list[int]:
    """``cfg.input_size`` for a config given as a mapping (the artifact and report writers take both)."""
    if isinstance(cfg, TrainConfig):
        return cfg.input_size
    return list(cfg.get("eval_size") or cfg["img_size"])
