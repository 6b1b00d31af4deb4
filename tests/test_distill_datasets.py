"""distill and compress take the dataset's class count and options as configured; every preset builds with
every student, and bad student args are refused before any stage."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_train_support import TEST_PRESET, tiny_cfg


pytestmark = pytest.mark.usefixtures("run_config_check")


# ---- distill / compress use the dataset's class count as configured; presets vs --student-model ---------
def _compress_settings(*extra: str) -> dict:
    import argparse

    from distilseg.distill.compress import add_compress_parser, settings_from_args

    parser = argparse.ArgumentParser()
    add_compress_parser(parser.add_subparsers())
    return settings_from_args(parser.parse_args(["compress", "--out", "unused", *extra]))


def _students() -> list[str]:
    from distilseg.models import list_models

    return [m for m in list_models() if "student" in m]


@pytest.mark.parametrize("preset", ["quick", "seed", "full", TEST_PRESET])
def test_every_preset_builds_with_every_student(preset: str) -> None:
    from distilseg.distill.compress import check_models, load_preset

    assert len(_students()) >= 2
    for student in _students():
        s = _compress_settings("--dataset", "synthetic", "--preset", preset, "--student-model", student,
                               "--teacher", "unused")  # only the student is built
        if student == load_preset(preset)["student_model"]:
            assert s["student_args"] == load_preset(preset)["student_args"]
        else:
            assert s["student_args"] == {}  # the preset's args were written for another model
        check_models(s, 7)
    # the teacher side too (msa_unet_student with lite_student args was the reported failure)
    s = _compress_settings("--dataset", "synthetic", "--preset", preset, "--teacher-model", "unet",
                           "--student-model", "msa_unet_student", "--teacher-args", "depth=2", "base_width=4")
    assert s["teacher_args"] == {"depth": 2, "base_width": 4}
    check_models(s, 7)


def test_compress_rejects_bad_student_args_before_any_stage(tmp_path: Path, capsys) -> None:
    from distilseg.cli import main

    out = tmp_path / "c"
    code = main(["compress", "--dataset", "synthetic", "--preset", TEST_PRESET, "--accelerator", "cpu",
                 "--student-model", "msa_unet_student", "--student-args", "stage_channels=[8,8]", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--student-model msa_unet_student" in err[0]
    assert not (out / "teacher").exists()


def _folder_dataset(root: Path, k: int = 4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
            mask = np.zeros((32, 48), dtype=np.uint8)
            for c in range(k):
                mask[:, c * 48 // k:(c + 1) * 48 // k] = c
                image[:, c * 48 // k:(c + 1) * 48 // k] //= (c + 1)
            Image.fromarray(image).save(root / split / "images" / f"s{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"s{i}.png")
    return root


def test_compress_on_folder_dataset(tmp_path: Path) -> None:
    from distilseg.cli import main

    data = _folder_dataset(tmp_path / "data")
    out = tmp_path / "c"
    assert main(["compress", "--dataset", "folder", "--root", str(data), "--preset", TEST_PRESET, "--accelerator", "cpu",
                 "--dataset-args", "num_classes=5", "--no-ort-fp32", "--out", str(out)]) == 0
    summary = json.loads((out / "compress.json").read_text())
    assert [len(r["per_class"]) for r in summary["rows"]] == [5, 5, 5, 5]


def test_distill_uses_dataset_options(tmp_path: Path, capsys) -> None:
    from distilseg.cli import main
    from distilseg.training.train import run_training

    data = _folder_dataset(tmp_path / "data")  # 4 classes inferred; num_classes=5 is a dataset option
    teacher = run_training(tiny_cfg(tmp_path / "t", epochs=1, dataset="folder", root=str(data),
                                    dataset_args={"num_classes": 5}))
    common = ["distill", "--teacher", str(teacher / "best"), "--model", "lite_student", "--dataset", "folder",
              "--root", str(data), "--img-size", "32", "48", "--epochs", "1", "--batch-size", "2",
              "--accelerator", "cpu", "--num-workers", "0", "--no-progress", "--kd", "logits@T=2:1"]
    assert main([*common, "--dataset-args", "num_classes=5", "--out", str(tmp_path / "kd")]) == 0
    assert json.loads((tmp_path / "kd" / "best" / "config.json").read_text())["num_classes"] == 5
    capsys.readouterr()
    # without the option the folder has 4 classes: refused before training, naming the teacher
    assert main([*common, "--out", str(tmp_path / "kd4")]) == 2
    err = capsys.readouterr().err
    assert "teacher predicts 5 classes" in err and "has 4" in err
