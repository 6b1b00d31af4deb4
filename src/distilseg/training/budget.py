"""``--time-budget MINUTES``: a run that ends within a wall-clock budget, with a schedule that finishes.

Why not Lightning's ``max_time`` alone: it stops the run when the time is up, wherever the learning-rate
schedule is, so a cosine or poly schedule never reaches its end and the last weights are those of a
half-finished run. Here the first optimizer steps are timed (after a short warm-up), and the first epoch end
too when it comes early (else one validation batch), and the total number of optimizer steps is then fixed (Lightning's ``max_steps``) so that the steps,
the validations, the saves and the final files fit in the budget; the schedule's length is set to that count,
so warm-up, cosine, poly and WSD end exactly at their final learning rate. The safety net is ``max_time``'s
idea, counted from the start of the run rather than of ``fit`` (Lightning's ``Timer`` would leave the dataset
and model set-up out): should the steps turn slower than timed, the run stops when the budget is spent. The
fixed count is kept in the resume state: a resumed run keeps it (and its schedule). Should the steps come
slower than timed (a shared CPU), the count is lowered and the schedule refitted (``TimeBudget._keep_pace``),
so the schedule still ends where the run does; it is never raised.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

__all__ = ["TimeBudget", "plan_steps", "FINAL_RESERVE_S", "SAFETY"]

FINAL_RESERVE_S = 3.0  # curves.png, the last artifacts and the process' exit
SAFETY = 0.9  # plan for 90 % of the time left: step times drift (a shared CPU, data loader warm-up)


def plan_steps(
    seconds_left: float,
    step_s: float,
    steps_done: int,
    steps_per_epoch: int,
    epoch_s: float,
    save_s: float = 0.0,
    checkpoint_every: int = 0,
) -> int:
    """The largest total step count whose remaining steps, epoch ends (``epoch_s`` each: validation, saves,
    data loader restart; one more for the final validation) and periodic saves (``save_s`` every
    ``checkpoint_every`` steps) fit in ``seconds_left``. At least ``steps_done + 1``."""
    spe = max(1, int(steps_per_epoch))

    def cost(total: int) -> float:
        todo = total - steps_done
        epoch_ends = math.ceil(total / spe) - steps_done // spe + 1
        saves = todo // checkpoint_every if checkpoint_every > 0 else 0
        return todo * step_s + epoch_ends * epoch_s + saves * save_s

    lo, hi = steps_done + 1, steps_done + 1
    while cost(hi * 2) <= seconds_left and hi < 10**9:
        hi *= 2
    hi *= 2
    while lo < hi:  # cost is non-decreasing in total: the last total that fits
        mid = (lo + hi + 1) // 2
        if cost(mid) <= seconds_left:
            lo = mid
        else:
            hi = mid - 1
    return lo


class TimeBudget(Callback):
    """Times ``warmup`` then ``timed`` steps and, when an epoch ends within the first ``CALIBRATION`` of the
    budget, that epoch end too (its validation, saves and data loader restart); then fixes ``max_steps`` (and
    the schedule's length) to fit ``minutes`` counted from ``started`` (``time.perf_counter()`` when the run
    began) and reports it through ``on_fixed(steps, step_seconds)``."""

    CALIBRATION = 0.1  # time steps (and wait for an epoch end) for at most this fraction of the budget
    PACE_CHECK = 0.05  # then check the pace every this fraction of the budget

    def __init__(self, minutes: float, started: float, on_fixed: Callable[[int, float], None] | None = None,
                 checkpoint_every: int = 0, warmup: int = 2, timed: int = 3) -> None:
        self.budget_s = float(minutes) * 60.0
        self.checkpoint_every = int(checkpoint_every)
        self.started = float(started)
        self.on_fixed = on_fixed
        self.warmup = int(warmup)
        self.timed = int(timed)
        self.steps: int | None = None  # the fixed total (resume state)
        self.step_s: float | None = None
        self.spent_before = 0.0  # wall seconds of earlier launches of this run (resume state)
        self._last: float | None = None  # the end of the previous step
        self._count = 0
        self._timed: list[float] = []
        self._warm: float | None = None
        self._epoch_end: float | None = None  # the end of the last step of the previous epoch
        self.epoch_s: float | None = None  # measured cost of an epoch end
        self._since: tuple[float, int] | None = None  # (time, step) the pace is measured from once the count is fixed
        self._checked = 0.0
        self._checked_step: int | None = None  # the step at the last pace check
        self._recent: tuple[float, int] | None = None  # (time, step) of the check before it

    @property
    def state_key(self) -> str:
        return "TimeBudget"

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "step_s": self.step_s, "spent": self.spent()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = state_dict.get("steps")
        self.step_s = state_dict.get("step_s")
        self.spent_before = float(state_dict.get("spent") or 0.0)

    def spent(self) -> float:
        """Wall seconds of this run so far (earlier launches included)."""
        return self.spent_before + time.perf_counter() - self.started

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.steps is not None:  # resumed: the count (and the schedule) of the run it continues
            self._apply(trainer, pl_module, self.steps)
            self._since = (time.perf_counter(), int(trainer.global_step))
            if self.on_fixed is not None:
                self.on_fixed(self.steps, float(self.step_s or 0.0))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == 0:  # the epoch end before this batch is not step time
            now = time.perf_counter()
            if self._epoch_end is not None and self.epoch_s is None:
                self.epoch_s = now - self._epoch_end
            self._last = now

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.steps is not None:
            # the last step, or the budget spent: stop now; Lightning validates once more when asked to stop
            if int(trainer.global_step) >= self.steps or self.spent() >= self.budget_s - FINAL_RESERVE_S:
                trainer.should_stop = True
            else:
                self._keep_pace(trainer, pl_module)
            return
        self._count += 1
        now = time.perf_counter()
        if self._last is not None:
            if self._count > self.warmup:
                self._timed.append(now - self._last)  # the step and the loading of its batch
            else:
                self._warm = now - self._last  # stands in when the steps are too slow to wait for timed ones
        self._last = now
        if batch_idx + 1 >= int(trainer.num_training_batches):
            self._epoch_end = now
        late = self.spent() >= self.CALIBRATION * self.budget_s  # slow steps: fix with what was timed so far
        if (len(self._timed) >= self.timed and (self.epoch_s is not None or late)) or (
                late and (self._timed or self._warm is not None)):
            times = self._timed or [float(self._warm)]
            self.step_s = sum(times) / len(times)
            self._fix(trainer, pl_module)

    def _fix(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = sum(p.numel() for p in pl_module.parameters())
        save_s = 0.2 + params * 4 * 4 / 100e6  # resume state (weights and Adam's moments) at ~100 MB/s
        # an epoch end not seen yet: its validation timed on one batch, and the saves of two artifacts and a state
        epoch_s = self.epoch_s if self.epoch_s is not None else _time_validation(trainer, pl_module) + 3 * save_s
        left = (self.budget_s - self.spent() - FINAL_RESERVE_S) * SAFETY
        spe = int(trainer.num_training_batches)
        steps = plan_steps(left, float(self.step_s), int(trainer.global_step), spe, epoch_s, save_s,
                           self.checkpoint_every)
        if trainer.max_epochs is not None and trainer.max_epochs > 0:  # --epochs stays the upper bound
            steps = min(steps, int(trainer.max_epochs) * spe)
        self._apply(trainer, pl_module, steps)
        self._since = (time.perf_counter(), int(trainer.global_step))
        self._checked, self._checked_step = self._since
        if self.on_fixed is not None:
            self.on_fixed(steps, float(self.step_s))

    def _keep_pace(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Every ``PACE_CHECK`` of the budget, and at every step in the last two of them: when the steps since the
        count was fixed (epoch ends included), or those of the last check windows, came slower than timed
        (another job took the CPU) and the rest would overrun, lower the count (and refit the schedule, which
        still ends at its final value). The count is never raised."""
        now = time.perf_counter()
        left = self.budget_s - self.spent() - FINAL_RESERVE_S - (self.epoch_s or 0.0)
        end_game = left < 2 * self.PACE_CHECK * self.budget_s  # near the end: check every step
        if self._since is None or (now - self._checked < self.PACE_CHECK * self.budget_s and not end_game):
            return
        step = int(trainer.global_step)
        t0, s0 = self._since
        if step <= s0:
            return
        pace = (now - t0) / (step - s0)
        if self._recent is not None and step > self._recent[1]:  # a slow-down shows in the last window first
            pace = max(pace, (now - self._recent[0]) / (step - self._recent[1]))
        if now - self._checked >= self.PACE_CHECK * self.budget_s:
            self._recent = (self._checked, self._checked_step) if self._checked_step is not None else None
            self._checked, self._checked_step = now, step
        if (self.steps - step) * pace > left:
            steps = max(step + 1, step + int(left * SAFETY / pace))
            if steps < self.steps:
                self._apply(trainer, pl_module, steps)
                if self.on_fixed is not None:
                    self.on_fixed(steps, pace)

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule, steps: int) -> None:
        self.steps = int(steps)
        trainer.fit_loop.epoch_loop.max_steps = self.steps
        length = getattr(pl_module, "schedule_length", None)
        if isinstance(length, dict):
            length["total"] = self.steps


def _time_validation(trainer: pl.Trainer, pl_module: pl.LightningModule) -> float:
    """Seconds of one full validation: one batch timed (after one untimed) times the number of batches."""
    import torch

    dm = trainer.datamodule
    if dm is None or trainer.limit_val_batches == 0:
        return 0.0
    loader = dm.val_dataloader()
    n = len(loader)
    limit = trainer.limit_val_batches
    if isinstance(limit, int):
        n = min(n, limit)
    elif isinstance(limit, float):
        n = int(n * limit)
    if n == 0:
        return 0.0
    modes = {m: m.training for m in pl_module.modules()}  # frozen-encoder norms stay in eval mode
    pl_module.eval()
    times: list[float] = []
    try:
        with torch.no_grad():
            it = iter(loader)
            t0 = time.perf_counter()
            for _ in range(min(2, n)):
                batch = next(it)
                images, masks = batch["image"], batch["mask"]
                if isinstance(images, torch.Tensor):
                    pl_module._score(images, masks)  # noqa: SLF001 - the validation step's own work
                else:
                    for img, mask in zip(list(images), list(masks)):
                        pl_module._score(img.unsqueeze(0), mask.unsqueeze(0))  # noqa: SLF001
                times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
            del it
    finally:
        pl_module.val_metrics.reset()
        pl_module.val_loss_mean.reset()
        for m, mode in modes.items():
            m.training = mode
    return times[-1] * n + (times[0] - times[-1] if len(times) > 1 else 0.0)
