"""Callbacks that make a run's results durable: artifacts, history, resume state, timing.

Why one ``RunRecorder`` deriving from Lightning's ``Checkpoint``: Lightning runs "checkpoint" callbacks'
``on_train_epoch_end`` *after* the LightningModule's own hook, so the epoch's train loss and the validation
metrics are final when we write ``best/``, ``last/``, ``history.csv`` and the resume state - in that
order, so that the resume state always includes the history it matches. Every file is written atomically
(temporary file + ``os.replace``): a run killed at any instant leaves the previous version intact.
"""
from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, Checkpoint

from ..io import atomic_write, atomic_write_text
from ..artifact import save_artifact
from ..checks import finite_or_none

# lr: the learning rate the epoch started with; lr_end: after its last step (a finished schedule's final value);
# step: optimizer steps so far; time_budget (minutes) and budget_steps: a --time-budget run's budget and fixed count
HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_mIoU", "lr", "skipped_nonfinite", "step", "lr_end",
                  "time_budget", "budget_steps")
LAST_CKPT = "last.ckpt"


def history_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(HISTORY_FIELDS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in HISTORY_FIELDS})
    return buf.getvalue()


def _budget_record(trainer: pl.Trainer) -> dict[str, Any]:
    from .budget import TimeBudget

    for cb in trainer.callbacks:
        if isinstance(cb, TimeBudget):
            return {"time_budget": cb.budget_s / 60.0, "budget_steps": cb.steps}
    return {}


class RunRecorder(Checkpoint):
    """Per epoch: ``last/`` artifact, ``best/`` when val mIoU improves, ``history.csv``; resume state
    ``checkpoints/last.ckpt`` at each epoch end and every ``every_n_steps`` optimizer steps."""

    def __init__(self, out: str | Path, artifact_config: dict[str, Any], every_n_steps: int = 50) -> None:
        super().__init__()
        self.out = Path(out)
        self.artifact_config = dict(artifact_config)
        self.every_n_steps = int(every_n_steps)
        self.history: list[dict[str, Any]] = []
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self._last_saved_step = -1
        self._epoch_lr: float | None = None  # the learning rate the current epoch started with
        self._epoch_lr_epoch: int | None = None  # ... and that epoch (0-based), kept in the resume state

    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoints" / LAST_CKPT

    @property
    def state_key(self) -> str:
        return "RunRecorder"

    # -- resume ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [dict(r) for r in self.history],
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "epoch_lr": self._epoch_lr,
            "epoch_lr_epoch": self._epoch_lr_epoch,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(r) for r in state_dict.get("history", [])]
        self.best_score = state_dict.get("best_score")
        self.best_epoch = state_dict.get("best_epoch")
        # a run resumed within an epoch does not see that epoch start again: keep the lr it started with
        self._epoch_lr = state_dict.get("epoch_lr")
        self._epoch_lr_epoch = state_dict.get("epoch_lr_epoch")

    # -- hooks -----------------------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = int(trainer.global_step)
        # Not on an epoch's last batch: a state saved there resumes into the next epoch and would skip this
        # epoch's validation and history row; the epoch-end save follows right after validation anyway.
        last_batch = batch_idx + 1 >= int(trainer.num_training_batches)
        if (self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0
                and step != self._last_saved_step and not last_batch):
            self.save_resume_state(trainer)
        if getattr(trainer, "received_sigterm", False) and trainer.world_size == 1 and not last_batch:
            # Lightning alone would train on to the end of the epoch before stopping: save the state of this
            # very step and stop now (the run's caller reports the interruption and how to resume it).
            # With several processes Lightning's own synchronized stop is used instead.
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            if step != self._last_saved_step:
                self.save_resume_state(trainer)
            raise SIGTERMException()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the learning rate this epoch trains with (per-step schedules: its first step's)
        epoch = int(trainer.current_epoch)
        if self._epoch_lr_epoch == epoch and self._epoch_lr is not None:
            return  # restored from the resume state of a run stopped within this epoch
        self._epoch_lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        self._epoch_lr_epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = int(trainer.current_epoch) + 1
        val = getattr(pl_module, "last_val", None)
        miou = finite_or_none(val.get("mIoU")) if val else None
        row = {
            "epoch": epoch,
            "train_loss": finite_or_none(getattr(pl_module, "epoch_train_loss", None)),
            "val_loss": finite_or_none(getattr(pl_module, "epoch_val_loss", None)) if val else None,
            "val_mIoU": miou,
            "lr": finite_or_none(self._epoch_lr if self._epoch_lr is not None else (
                trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None)),
            "skipped_nonfinite": int(getattr(pl_module, "skipped_nonfinite", 0)),
            "step": int(trainer.global_step),
            "lr_end": finite_or_none(trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None),
            **_budget_record(trainer),
        }
        self.history = [r for r in self.history if int(r["epoch"]) < epoch] + [row]
        improved = miou is not None and (self.best_score is None or miou > self.best_score)
        if improved:
            self.best_score, self.best_epoch = miou, epoch
        if trainer.is_global_zero:
            model = pl_module.model
            cfg = dict(self.artifact_config, epoch=epoch, metrics=val or {})
            save_artifact(self.out / "last", model, cfg)
            if improved or (self.best_score is None and not (self.out / "best").exists()):
                # no validation at all: the latest model is the best we know
                save_artifact(self.out / "best", model, cfg)
            text = history_csv(self.history)
            atomic_write_text(self.out / "history.csv", text)
            atomic_write_text(self.out / "metrics.csv", text)
        self.save_resume_state(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.history:
            from ..viz import save_curves

            save_curves(self.history, self.out / "curves.png")

    # -- atomic resume state ---------------------------------------------------------------------------
    def save_resume_state(self, trainer: pl.Trainer) -> None:
        """``trainer.save_checkpoint`` to a temporary name (every process must call it), then rename."""
        step = int(trainer.global_step)
        self._last_saved_step = step
        final = self.ckpt_path
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{LAST_CKPT}.tmp"
        try:
            trainer.save_checkpoint(tmp, weights_only=False)
            if trainer.is_global_zero:
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, final)
        except (OSError, RuntimeError) as exc:  # disk full, folder made read-only: one line, old state kept
            from ..io import _OUTPUT_ERRNOS, _is_write_failure, output_error

            if tmp.exists():
                tmp.unlink()
            if isinstance(exc, OSError) and exc.errno in _OUTPUT_ERRNOS:
                raise output_error(final, exc) from exc
            if isinstance(exc, RuntimeError) and _is_write_failure(exc):
                raise output_error(final, OSError(0, str(exc).splitlines()[0])) from exc
            raise
        trainer.strategy.barrier("distilseg_ckpt")


class StepTimer(Callback):
    """Times optimizer steps after ``warmup`` steps (for the throughput benchmark)."""

    def __init__(self, warmup: int = 5) -> None:
        self.warmup = int(warmup)
        self.count = 0
        self.start: float | None = None
        self.end: float | None = None
        self.timed_steps = 0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.count += 1
        now = time.perf_counter()
        if self.count == self.warmup:
            self.start = now
        elif self.count > self.warmup:
            self.end = now
            self.timed_steps = self.count - self.warmup

    @property
    def steps_per_second(self) -> float | None:
        if self.start is None or self.end is None or self.timed_steps <= 0:
            return None
        return self.timed_steps / (self.end - self.start)


__all__ = ["RunRecorder", "StepTimer", "history_csv", "HISTORY_FIELDS", "atomic_write"]
