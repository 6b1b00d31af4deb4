"""What a ``compress`` run will cost on this machine, said before it starts.

Why: a preset that trains a 5-level U-Net for 100 epochs at 256x256 takes days on a laptop CPU, and nothing
said so. A stage with a time budget (``--time-budget``, or the preset's ``time_budget``) costs its budget; a
stage trained for a number of epochs is estimated by timing one optimizer step of its model on one image
of the run's size (random data, after one untimed step), scaling it to the batch size and extrapolating to
its epochs, plus its validations (forward passes at a third of a training step per image); a distillation
step is the student's step plus a teacher forward pass (a third of the teacher's step). One image, not a
batch: on a CPU a big model's single step at batch 8 can take minutes, and the estimate must come first.
Export, evaluation and the latency benchmark are estimated the same way. The estimate is printed per stage, with the total; above ``LONG_HOURS`` it says so
plainly.
"""
from __future__ import annotations

import math
import time
from typing import Any

__all__ = ["STAGES", "LONG_HOURS", "measure_step_seconds", "plan", "format_plan", "stage_budgets"]

STAGES = ("teacher", "student", "kd_student", "rest")  # rest: export, evaluation, benchmark, report
LONG_HOURS = 2.0


def stage_budgets(preset_budget: dict[str, Any] | None, total_minutes: float | None, flag: str) -> dict | None:
    """The per-stage minutes: the preset's, scaled so they add up to ``total_minutes`` when given (a preset
    without budgets splits it 35/25/30/10 % over teacher, student, KD student and the rest)."""
    if preset_budget is not None:
        if not isinstance(preset_budget, dict) or set(preset_budget) - set(STAGES):
            raise ValueError(f"{flag}: time_budget must map {', '.join(STAGES)} to minutes, got {preset_budget!r}")
        for k, v in preset_budget.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{flag}: time_budget {k} must be a positive number of minutes, got {v!r}")
    if total_minutes is None:
        return None if preset_budget is None else {k: float(preset_budget.get(k, 0.0)) for k in STAGES}
    base = preset_budget or {"teacher": 35, "student": 25, "kd_student": 30, "rest": 10}
    whole = sum(float(base.get(k, 0.0)) for k in STAGES)
    return {k: float(base.get(k, 0.0)) * float(total_minutes) / whole for k in STAGES}


def measure_step_seconds(model: Any, num_classes: int, img_size: list[int], batch_size: int = 1,
                         steps: int = 1) -> float:
    """Seconds of one training step (forward, cross-entropy, backward, Adam) on random data, after one
    untimed step."""
    import torch
    import torch.nn.functional as F

    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(int(batch_size), 3, *img_size)
    y = torch.randint(0, int(num_classes), (int(batch_size), *img_size))
    times = []
    for i in range(1 + int(steps)):
        t0 = time.perf_counter()
        out = model(x)
        F.cross_entropy(out[0] if isinstance(out, (tuple, list)) else out, y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def plan(settings: dict[str, Any], num_classes: int, n_train: int, n_val: int) -> dict[str, dict[str, Any]]:
    """Per stage: ``{"seconds", "how"}`` (budgeted stages: the budget; the others: measured and extrapolated)."""
    from ..models import create_model

    s = settings
    budget = s.get("time_budget") or {}
    size, bs = list(s["img_size"]), int(s["batch_size"])
    steps_per_epoch = max(1, math.ceil(int(n_train) / bs))
    built: dict[str, Any] = {}
    step_s: dict[str, float] = {}

    def model(role: str) -> Any:
        if role not in built:
            args = {k: v for k, v in dict(s.get(f"{role}_args") or {}).items() if k != "pretrained"}
            built[role] = create_model(s[f"{role}_model"], int(num_classes), **args)
        return built[role]

    def timed(role: str, kd: bool = False) -> float:
        """Seconds of a training step at the run's batch size (one image timed, scaled)."""
        if role not in step_s:
            step_s[role] = bs * measure_step_seconds(model(role), num_classes, size)
        return step_s[role] + (timed("teacher") / 3 if kd else 0.0)

    def training(role: str, epochs: int, kd: bool = False) -> dict[str, Any]:
        t = timed(role, kd)
        val = n_val * timed(role) / bs / 3  # a forward pass: about a third of a training step
        seconds = epochs * (steps_per_epoch * t + val)
        return {"seconds": seconds, "how": f"{epochs} epochs x {steps_per_epoch} steps x {t:.2f} s per step "
                                          f"(measured on 1 image, x{bs}) + {epochs} validations"}

    out: dict[str, dict[str, Any]] = {}
    has_teacher = not s.get("teacher")
    for stage, role, epochs_key, kd in (("teacher", "teacher", "teacher_epochs", False),
                                        ("student", "student", "epochs", False),
                                        ("kd_student", "student", "epochs", True)):
        if stage == "teacher" and not has_teacher:
            out[stage] = {"seconds": 0.0, "how": "given with --teacher"}
        elif budget.get(stage):
            out[stage] = {"seconds": float(budget[stage]) * 60.0, "how": f"time budget {budget[stage]:.1f} min"}
        elif stage == "kd_student" and not has_teacher:
            out[stage] = training(role, int(s[epochs_key]))  # the given teacher is not built here
        else:
            out[stage] = training(role, int(s[epochs_key]), kd)
    if budget.get("rest"):
        out["rest"] = {"seconds": float(budget["rest"]) * 60.0, "how": "set aside for export, evaluation, benchmark"}
    else:
        fwd = sum(timed(r) / bs / 3 for r in (["teacher"] if has_teacher else []) + ["student"] * 4)
        runs = int(s.get("bench_runs", 20)) + int(s.get("bench_warmup", 3))
        seconds = 20.0 + (n_val + runs + int(s.get("calibration_images", 32))) * fwd
        out["rest"] = {"seconds": seconds, "how": "export, evaluation and benchmark: forward passes (measured)"}
    return out


def format_plan(stages: dict[str, dict[str, Any]]) -> list[str]:
    """Lines to print: one per stage, the total, and a plain warning above ``LONG_HOURS``."""
    def human(sec: float) -> str:
        return f"{sec / 60:.1f} min" if sec < 5400 else f"{sec / 3600:.1f} h"

    lines = [f"[compress] estimate on this CPU: {name} {human(v['seconds'])} ({v['how']})"
             for name, v in stages.items()]
    total = sum(v["seconds"] for v in stages.values())
    lines.append(f"[compress] estimated total: {human(total)}")
    if total > LONG_HOURS * 3600:
        lines.append(f"[compress] warning: this run will take about {total / 3600:.0f} hours on this CPU; "
                     f"--time-budget MINUTES bounds it (the steps are then fitted to the time)")
    return lines
