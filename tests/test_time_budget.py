"""``--time-budget MINUTES``: the run ends within its budget, its fixed step count is recorded and kept on resume,
and the learning-rate schedule fitted to that count ends exactly at its final value."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
import yaml

from distilseg.training.budget import plan_steps
from distilseg.training.optim import lr_multiplier
from distilseg.training.train import run_training
from distilseg.errors import UsageError
from distilseg.io import safe_torch_load
from test_train_support import tiny_cfg

pytestmark = pytest.mark.usefixtures("run_config_check")

DATA = {"num_images": 16, "size": [32, 48]}  # 4 steps per epoch at batch 4


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "history.csv") as fh:
        return list(csv.DictReader(fh))


def _check_finished(out: Path, lr: float, scheduler: str, warmup_epochs: float = 0.0) -> int:
    """The recorded count was run to its end and the schedule reached its end value: returns the count."""
    rows = _rows(out)
    steps = int(rows[-1]["budget_steps"])
    assert int(rows[-1]["step"]) == steps
    state = safe_torch_load(out / "checkpoints/last.ckpt")
    assert state["global_step"] == steps
    assert state["lr_schedulers"][0]["last_epoch"] == steps
    end = lr * lr_multiplier(scheduler, steps, steps, 4, int(round(warmup_epochs * 4)))
    assert float(rows[-1]["lr_end"]) == end  # exactly: the schedule's value at its last step
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["budget_steps"] == steps and recorded["budget_step_seconds"] > 0
    return steps


def test_plan_steps_fits_steps_epoch_ends_and_saves() -> None:
    # 10 s left, 0.1 s a step, 10 steps an epoch, 1 s an epoch end: k epochs cost k * (1 + 1) + 1 (the final one)
    assert plan_steps(10.0, 0.1, 0, 10, 1.0) == 40  # 4 s of steps + 5 epoch ends = 9 s; 41 steps: 10.1 s
    assert plan_steps(10.0, 0.1, 0, 10, 0.0) == 100
    assert plan_steps(0.0, 1.0, 5, 10, 1.0) == 6  # nothing left: one more step, never fewer
    assert plan_steps(10.0, 0.1, 0, 10, 0.0, 0.5, 5) == 50  # 5 s of steps + 10 saves * 0.5 s = 10 s; 51: 10.1 s
    assert plan_steps(10.0, 0.1, 20, 10, 1.0) == 60  # 20 done: 4 s of steps + 5 epoch ends
    assert plan_steps(100.0, 0.1, 0, 10, 1.0) > plan_steps(10.0, 0.1, 0, 10, 1.0)


@pytest.mark.slow
def test_one_minute_budget_ends_within_it_and_the_schedule_finishes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    t0 = time.perf_counter()
    run_training(tiny_cfg(out, dataset_args=DATA, time_budget=1.0, scheduler="cosine", warmup_epochs=0.5, lr=0.01,
                          epochs=10_000))
    wall = time.perf_counter() - t0
    assert wall <= 1.2 * 60, f"a 1-minute budget took {wall:.1f} s"
    steps = _check_finished(out, 0.01, "cosine", 0.5)
    assert 5 <= steps < 40_000, "the budget, not --epochs, sets the length"
    assert float(_rows(out)[-1]["lr_end"]) == 0.0
    assert all(float(r["time_budget"]) == 1.0 for r in _rows(out))


def test_epochs_bound_a_budget_run(tmp_path: Path) -> None:
    """A budget longer than the epochs need: the epochs end the run, and the schedule is fitted to them."""
    out = tmp_path / "run"
    run_training(tiny_cfg(out, dataset_args=DATA, time_budget=5.0, scheduler="poly", lr=0.01, epochs=2))
    assert _check_finished(out, 0.01, "poly") == 8
    assert float(_rows(out)[-1]["lr_end"]) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["poly", "wsd"])
def test_interrupted_budget_run_resumes_with_its_step_count(tmp_path: Path, scheduler: str) -> None:
    from lightning.pytorch.callbacks import Callback

    class Crash(Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 7:
                raise RuntimeError("crash for the test")

    out = tmp_path / "run"
    cfg = tiny_cfg(out, dataset_args=DATA, time_budget=0.3, scheduler=scheduler, lr=0.01, checkpoint_every_steps=1,
                   epochs=10_000)
    with pytest.raises(RuntimeError, match="crash for the test"):
        run_training(cfg, extra_callbacks=[Crash()])
    planned = yaml.safe_load((out / "config.yaml").read_text())["budget_steps"]
    assert planned > 7
    run_training(dict(cfg, resume=True))
    assert _check_finished(out, 0.01, scheduler) == planned


def test_time_budget_must_be_positive(tmp_path: Path) -> None:
    from distilseg.training.config import TrainConfig

    with pytest.raises(UsageError, match="time_budget must be positive"):
        TrainConfig.from_dict(tiny_cfg(tmp_path / "run", time_budget=0))


# -- compress: stage budgets and the estimate printed before a run ----------------------------------------------
def _compress_settings(*extra: str) -> dict:
    import argparse

    from distilseg.distill.compress import add_compress_parser, settings_from_args

    parser = argparse.ArgumentParser()
    add_compress_parser(parser.add_subparsers())
    return settings_from_args(parser.parse_args(["compress", "--dataset", "synthetic", "--out", "unused", *extra]))


def test_quick_preset_budgets_every_stage_within_15_minutes(tmp_path: Path) -> None:
    from distilseg.distill.compress import Compressor

    s = _compress_settings("--teacher-model", "unet", "--student-model", "msa_unet_student")
    assert sum(s["time_budget"].values()) <= 12.5 and all(v > 0 for v in s["time_budget"].values())
    comp = Compressor(tmp_path / "c", s)
    for stage in ("teacher", "student", "kd_student"):
        cfg = comp._train_cfg("unet", {}, tmp_path / "c" / stage, 3)
        assert cfg.time_budget == s["time_budget"][stage] and cfg.epochs == 3


def test_compress_time_budget_rescales_and_epochs_take_over(tmp_path: Path) -> None:
    s = _compress_settings("--time-budget", "6")
    assert sum(s["time_budget"].values()) == pytest.approx(6.0)
    quick = _compress_settings()["time_budget"]
    assert s["time_budget"]["teacher"] / s["time_budget"]["student"] == pytest.approx(quick["teacher"] / quick["student"])
    s = _compress_settings("--epochs", "2")  # explicit epochs: the student stages train for them
    assert s["time_budget"]["student"] == s["time_budget"]["kd_student"] == 0.0 and s["time_budget"]["teacher"] > 0
    s = _compress_settings("--preset", "seed", "--time-budget", "100")  # no preset budgets: the default shares
    assert s["time_budget"] == pytest.approx({"teacher": 35.0, "student": 25.0, "kd_student": 30.0, "rest": 10.0})
    assert _compress_settings("--preset", "seed")["time_budget"] is None
    with pytest.raises(UsageError, match="--time-budget must be a positive"):
        _compress_settings("--time-budget", "0")


def test_plan_of_budgeted_stages_and_the_long_run_warning() -> None:
    from distilseg.distill.compress_plan import format_plan, plan

    s = _compress_settings("--time-budget", "10")
    stages = plan(s, 7, 160, 40)
    assert [round(v["seconds"]) for v in stages.values()] == [200, 150, 175, 75]  # 4 : 3 : 3.5 : 1.5 of 10 min
    lines = format_plan(stages)
    assert lines[-1] == "[compress] estimated total: 10.0 min" and "warning" not in " ".join(lines)
    long = format_plan({"teacher": {"seconds": 3 * 3600.0, "how": "x"}})
    assert "warning: this run will take about 3 hours on this CPU" in long[-1]


def test_plan_measures_epoch_stages(tmp_path: Path) -> None:
    from distilseg.distill.compress_plan import plan

    s = _compress_settings("--preset", str(Path(__file__).parent / "configs" / "compress_test.yaml"))
    stages = plan(s, 7, 6, 6)
    assert stages["teacher"]["how"].startswith("1 epochs x 2 steps x ")  # 6 images / batch 3
    assert all(v["seconds"] > 0 for v in stages.values())


def test_slow_steps_fix_the_count_within_the_first_tenth_of_the_budget(tmp_path: Path) -> None:
    """Steps too slow to time several of them: the count is fixed with what was timed once a tenth of the budget
    is spent, and the run still ends within its budget with its schedule finished."""
    from lightning.pytorch.callbacks import Callback

    class Slow(Callback):
        def on_train_batch_end(self, *args) -> None:
            time.sleep(1.0)

    out = tmp_path / "run"
    t0 = time.perf_counter()
    run_training(tiny_cfg(out, dataset_args=DATA, time_budget=0.25, scheduler="cosine", lr=0.01, epochs=10_000),
                 extra_callbacks=[Slow()])
    assert time.perf_counter() - t0 <= 1.2 * 15
    steps = _check_finished(out, 0.01, "cosine")
    assert 1 <= steps <= 12
