"""The Python API mirrors the CLI: ``train(TrainConfig(...))`` and ``distill(DistillConfig(...))`` run what the
commands run, a config checks itself when it is made, and the OUT/config.yaml it writes reproduces the run."""
from __future__ import annotations

from pathlib import Path

import pytest

from distilseg import DistillConfig, TrainConfig, distill, train
from distilseg.cli import main
from distilseg.errors import SettingError

pytestmark = pytest.mark.usefixtures("run_config_check")

TINY = dict(dataset="synthetic", dataset_args={"num_images": 8, "size": [32, 48]}, img_size=(32, 48), epochs=2,
            batch_size=4, num_workers=0, accelerator="cpu", progress=False, seed=5)
STUDENT = dict(model="lite_student", model_args={"stem_channels": 4, "stage_channels": [8, 8], "stage2_dilations": [2],
                                                 "stage3_dilations": [2], "decoder_channels": 8})


def _history(out: Path) -> list[str]:
    return (out / "history.csv").read_text().splitlines()


def test_python_train_and_distill_and_their_configs_reproduce_the_runs(tmp_path):
    teacher = train(TrainConfig(**TINY, model="unet", model_args={"depth": 2, "base_width": 8},
                                out=str(tmp_path / "teacher")))
    assert teacher == tmp_path / "teacher" and (teacher / "best" / "config.json").is_file()
    assert len(_history(teacher)) == 3  # header + 2 epochs
    kd = distill(DistillConfig(**TINY, **STUDENT, teacher=str(teacher), kd="logits@T=4:0.5,cwd:0.2",
                               out=str(tmp_path / "kd")))
    assert (kd / "distill.json").is_file() and len(_history(kd)) == 3
    # the saved config is the object's serialization: read back, it is the same config
    assert TrainConfig.from_dict(__import__("yaml").safe_load((teacher / "config.yaml").read_text())) == \
        TrainConfig(**TINY, model="unet", model_args={"depth": 2, "base_width": 8}, out=str(teacher))
    for command, run in (("train", teacher), ("distill", kd)):  # same seed, same numbers
        again = tmp_path / f"{run.name}_again"
        assert main([command, "--config", str(run / "config.yaml"), "--out", str(again)]) == 0
        assert _history(again) == _history(run)


@pytest.mark.parametrize("field, value, words", [
    ("epochs", -1, "must be a positive integer, got -1"),
    ("lr", 0, "must be positive"),
    ("gamma", 2, r"must be in \(0, 1\]"),
    ("img_size", (0, 4), "must be two positive integers"),
    ("precision", "8", "must be one of 32, 16-mixed, bf16-mixed"),
    ("augment", "yes", "must be true or false"),
    ("seed", 2**32, "must be at most"),
    ("num_workers", 1.5, "must be a non-negative integer"),
])
def test_a_config_with_a_bad_field_raises_a_value_error_naming_it(field, value, words):
    with pytest.raises(ValueError, match=rf"^{field} {words}"):
        TrainConfig(dataset="synthetic", model="unet", out="o", **{field: value})


def test_required_fields_and_distill_fields_are_checked_too():
    with pytest.raises(SettingError, match="^dataset is required$"):
        TrainConfig(model="unet", out="o")
    with pytest.raises(ValueError, match="^hard_weight must not be negative"):
        DistillConfig(dataset="synthetic", model="unet", out="o", hard_weight=-1)
    cfg = DistillConfig(dataset="synthetic", model="unet", out="o", img_size=64, precision=16 * 2)
    assert cfg.img_size == [64, 64] and cfg.precision == "32" and cfg.input_size == [64, 64]
    assert isinstance(cfg, TrainConfig)
    assert DistillConfig.own_settings() == {"teacher", "kd", "hard_weight", "teacher_view"}
