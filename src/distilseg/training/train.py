"""``distilseg train``: the model and the Lightning ``Trainer`` run (configuration: ``config.py``; data: ``datamodule.py``).

Why Lightning's ``Trainer`` and not Fabric: the Trainer gives us, without code of our own, callbacks
(best/last artifacts, early stopping, progress bar with rate and ETA), loggers (CSV, TensorBoard),
DDP and multi-node launch (``--devices``/``--num-nodes``, torchrun and SLURM environments detected),
precision plugins (``16-mixed``/``bf16-mixed``), gradient clipping and resumable checkpoints that restore
the optimizer, scheduler, loop progress (mid-epoch) and callback state. Fabric would make us rewrite
every one of those loops and their resume logic; the Trainer's hooks are enough for what we customize.

Read top to bottom: ``build_model`` (architecture, pretrained weights or artifact), the run
(``run_training``: OUT checks and lock, resume state, data, model, loss, callbacks, ``Trainer.fit``), then the
``train`` command. The configuration lives in ``config.py``, the data in ``datamodule.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from ..artifact import is_artifact_dir
from ..errors import TrainingError, UsageError
from .config import GRAD_CHECKPOINTING_MODELS, TrainConfig, resolve_config
from .datamodule import SegDataModule, build_datasets, compute_class_weights, quick_check

LAST_CKPT_REL = Path("checkpoints") / "last.ckpt"


# --------------------------------------------------------------------------------------------------
# model


def build_model(cfg: TrainConfig, num_classes: int):
    from ..models import create_model

    kwargs = dict(cfg.model_args)
    pre = cfg.pretrained
    artifact_dir = Path(pre) if pre and is_artifact_dir(Path(pre)) else None
    if pre and artifact_dir is None:
        kwargs["pretrained"] = pre
    try:
        model = create_model(cfg.model, num_classes, **kwargs)
    except TypeError as exc:
        raise UsageError(f"--model {cfg.model}: bad --model-args {cfg.model_args} ({exc})") from exc
    if artifact_dir is not None:
        from ..artifact import load_artifact, read_config

        src = read_config(artifact_dir)
        if int(src["num_classes"]) != num_classes:
            raise UsageError(
                f"--pretrained {artifact_dir}: the model has {src['num_classes']} classes but dataset "
                f"{cfg.dataset} has {num_classes}"
            )
        pre_model, _ = load_artifact(artifact_dir)
        try:
            model.load_state_dict(pre_model.state_dict(), strict=True)
        except RuntimeError as exc:
            raise UsageError(f"--pretrained {artifact_dir}: weights do not fit {cfg.model} ({exc})") from exc
    if cfg.freeze_encoder:
        from .optim import freeze_encoder

        freeze_encoder(model)
    if cfg.grad_checkpointing:
        if not getattr(model, "supports_grad_checkpointing", False):
            raise UsageError(f"--grad-checkpointing: {cfg.model} ({type(model).__name__}) does not support it "
                             f"(these do: {', '.join(GRAD_CHECKPOINTING_MODELS)})")
        model.set_grad_checkpointing(True)
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


def _is_rank0() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def train(cfg: TrainConfig) -> Path:
    """Train one model per ``cfg`` (the ``distilseg train`` command from Python); returns OUT, which holds best/
    and last/ (model artifacts), checkpoints/last.ckpt (resume state), history.csv and config.yaml. With
    ``holdout="each"``: one run per group in OUT/fold-GROUP/, pooled in OUT/cv.json (``training.folds``)."""
    from .folds import is_each, run_folds

    if is_each(cfg):
        return run_folds(cfg, run_training)
    return run_training(cfg)


def run_training(cfg: TrainConfig | dict[str, Any], distiller: Any = None, extra_callbacks: list | None = None) -> Path:
    """Train per ``cfg`` (a ``TrainConfig``, or a mapping of its fields, validated here once); returns OUT with
    best/, last/, checkpoints/, history. ``distiller``: distill's hook (``distill.Distiller``).

    OUT is checked first (a writable folder, not a file) and locked (``OUT/.lock``) for the whole run, so a
    second run on the same folder is refused instead of mixing its files with this one's.
    """
    from ..io import ensure_output_dir, run_lock

    if not isinstance(cfg, TrainConfig):
        cfg = TrainConfig.from_dict(dict(cfg))
    out = Path(cfg.out)
    if not _is_rank0():  # DDP workers run under the launching process' lock
        return _run_training(cfg, distiller, extra_callbacks)
    ensure_output_dir(out)
    with run_lock(out), _sigterm_before_fit():
        return _run_training(cfg, distiller, extra_callbacks)


@contextlib.contextmanager
def _sigterm_before_fit() -> Iterator[None]:
    """SIGTERM while the datasets and the model are built (seconds to minutes on a big dataset) ends the run
    with the same one-line message and exit 143 as during training, instead of a silent kill. Lightning
    installs its own handler (which saves the state) when ``fit`` starts: ``_hand_sigterm_to_lightning``
    removes this one first, since Lightning would otherwise call it too."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # signals can only be set there
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        from ..errors import RunInterrupted

        raise RunInterrupted("run interrupted by SIGTERM before training started; nothing was saved", signum,
                             resumable=False)

    handler.distilseg_previous = signal.signal(signal.SIGTERM, handler)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        _hand_sigterm_to_lightning()


def _hand_sigterm_to_lightning() -> None:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if hasattr(current, "distilseg_previous"):
        signal.signal(signal.SIGTERM, current.distilseg_previous)


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


def _run_training(cfg: TrainConfig, distiller: Any = None, extra_callbacks: list | None = None) -> Path:
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from ..losses import build_loss
    from .callbacks import RunRecorder
    from .module import SegModule

    import warnings

    started = time.perf_counter()
    for msg in (".*smaller than the logging interval.*", ".*LeafSpec.*is deprecated.*",
                ".*`training_step` returned `None`.*", ".*does not have many workers.*"):
        warnings.filterwarnings("ignore", message=msg)
    out = Path(cfg.out)
    ckpt = out / LAST_CKPT_REL
    resume_from: Path | None = None
    rank0 = int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
    if ckpt.is_file():
        if not cfg.resume:
            raise UsageError(
                f"{out} already holds a training run ({ckpt}); pass --resume to continue it or choose "
                f"another --out (nothing was changed)"
            )
        resume_from = ckpt
        from .resume import check_resume_settings

        check_resume_settings(cfg.to_dict(), out)  # before anything is written
    else:
        _refuse_finished_without_state(out, ckpt)
        if cfg.resume and rank0:
            print(f"distilseg train: no saved state in {ckpt}; starting from the beginning")

    if cfg.keep_freed_memory:
        from .host_memory import keep_freed_memory

        why_not = keep_freed_memory()
        if why_not and rank0:
            print(f"distilseg: --keep-freed-memory has no effect here: {why_not}", file=sys.stderr)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    train_ds, val_ds, mean, std = build_datasets(cfg)
    train_ds = quick_check(train_ds, cfg.skip_bad)
    val_ds = quick_check(val_ds, cfg.skip_bad, substitute="ignore", like=train_ds)
    num_classes = int(train_ds.num_classes)
    if resume_from is not None:
        _check_resume_classes(resume_from, num_classes)
    model = build_model(cfg, num_classes)
    weights = compute_class_weights(cfg.class_weights, train_ds)
    ignore_index = int(getattr(train_ds, "ignore_index", 255))
    loss_fn = build_loss(
        cfg.loss, num_classes, ignore_index=ignore_index,
        class_weights=torch.tensor(weights, dtype=torch.float32) if weights is not None else None,
    )
    classes = [str(c) for c in train_ds.classes]
    settings = {k: getattr(cfg, k) for k in ("lr", "weight_decay", "optimizer", "scheduler", "gamma", "warmup_epochs",
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
        "input_size": cfg.input_size,
        "ignore_index": ignore_index,
        "dataset": cfg.dataset,
        "dataset_args": cfg.dataset_args,
        # which frames trained it: a teacher for a held-out fold must not have seen that fold's group
        "train_split": cfg.train_split,
        "holdout": cfg.holdout,
    }
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out, num_classes)
    recorder = RunRecorder(out, artifact_config, every_n_steps=cfg.checkpoint_every_steps)
    callbacks: list = [recorder, LearningRateMonitor(logging_interval="epoch")]
    if cfg.progress:  # a bar on a terminal, one line per epoch in a log file
        from ..progress import training_progress_callback

        callbacks.append(training_progress_callback(refresh_rate=1))
    if cfg.patience > 0:
        callbacks.append(EarlyStopping(monitor="val_mIoU", mode="max", patience=cfg.patience,
                                       check_finite=False))
    callbacks += _budget_callbacks(cfg, started, num_classes, rank0)
    callbacks += list(extra_callbacks or [])
    # a new version folder per launch: a resumed run must not erase the logs of the run it continues
    loggers = [CSVLogger(str(out), name="logs"), TensorBoardLogger(str(out), name="tensorboard")]
    precision = "32-true" if cfg.precision == "32" else cfg.precision
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        trainer = pl.Trainer(
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            num_nodes=cfg.num_nodes,
            strategy=cfg.strategy,
            precision=precision,
            max_epochs=cfg.epochs,
            limit_train_batches=cfg.limit_train_batches,
            limit_val_batches=cfg.limit_val_batches,
            check_val_every_n_epoch=cfg.val_every,
            gradient_clip_val=cfg.grad_clip,
            callbacks=callbacks,
            logger=loggers,
            default_root_dir=str(out),
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            enable_checkpointing=True,
            enable_progress_bar=bool(cfg.progress),
            enable_model_summary=False,
            log_every_n_steps=10,
        )
    except MisconfigurationException as exc:
        raise UsageError(f"cannot set up training: {exc}") from exc
    module.distilseg_num_classes = num_classes
    dm = SegDataModule(train_ds, val_ds, cfg.batch_size, cfg.num_workers, cfg.seed)
    _hand_sigterm_to_lightning()
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


def _budget_callbacks(cfg: TrainConfig, started: float, num_classes: int, rank0: bool) -> list:
    """``--time-budget``: the step planner (``training.budget``)."""
    if not cfg.time_budget:
        return []
    from .budget import TimeBudget

    minutes = float(cfg.time_budget)

    def fixed(steps: int, step_s: float) -> None:
        if rank0:
            cfg.save(cfg.out, num_classes, budget_steps=steps, budget_step_seconds=round(step_s, 4))
            print(f"time budget {minutes:g} min: {steps} optimizer steps ({step_s:.3f} s per step measured); "
                  f"the {cfg.scheduler} schedule is fitted to them")

    return [TimeBudget(minutes, started, fixed, checkpoint_every=cfg.checkpoint_every_steps)]


def run_train(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    from .folds import is_each

    if is_each(cfg):
        train(cfg)
        return 0
    out = run_training(cfg)
    best = out / "best"
    print(f"distilseg train: done; best model in {best}, resume state in {out / LAST_CKPT_REL}")
    return 0
