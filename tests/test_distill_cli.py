"""``distilseg distill`` end to end on tiny synthetic data through ``distilseg.cli.main``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distilseg.cli import build_parser, main  # noqa: E402
from distilseg.artifact import load_artifact, save_artifact  # noqa: E402
from distilseg.io import safe_torch_load  # noqa: E402
from distilseg.models import create_model  # noqa: E402

STUDENT_ARGS = ["stem_channels=4", "stage_channels=[8, 8]", "stage2_dilations=[2]", "stage3_dilations=[2]",
                "decoder_channels=8"]


pytestmark = pytest.mark.usefixtures("run_config_check")


def _teacher(folder: Path, num_classes: int = 7) -> Path:
    torch.manual_seed(0)
    model = create_model("unet", num_classes, depth=2, base_width=4)
    save_artifact(folder, model, {"num_classes": num_classes, "class_names": [f"c{i}" for i in range(num_classes)],
                                  "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                  "input_size": [32, 48], "ignore_index": 255, "dataset": "synthetic"})
    return folder


def _argv(teacher: Path, out: Path, kd: str) -> list[str]:
    return ["distill", "--teacher", str(teacher), "--student", "lite_student", "--student-args", *STUDENT_ARGS,
            "--dataset", "synthetic", "--dataset-args", "num_images=4", "size=[32, 48]", "--img-size", "32", "48",
            "--epochs", "1", "--batch-size", "2", "--num-workers", "0", "--no-progress", "--no-augment",
            "--accelerator", "cpu", "--kd", kd, "--out", str(out)]


def test_distill_end_to_end(tmp_path):
    teacher = _teacher(tmp_path / "teacher")
    out = tmp_path / "kd"
    assert main(_argv(teacher, out, "logits@T=4:0.5,cwd:0.2,feature@norm=1:0.1")) == 0
    model, config = load_artifact(out / "best")  # strict load: student weights only
    assert config["architecture"] == "lite_student" and config["num_classes"] == 7
    assert config["model_args"]["decoder_channels"] == 8
    assert not any("teacher" in k for k in model.state_dict())
    info = json.loads((out / "distill.json").read_text())
    assert info["hard_weight"] == 1.0 and [t[0] for t in info["terms"]] == ["logits", "cwd", "feature"]
    ckpt = safe_torch_load(out / "checkpoints" / "last.ckpt")
    keys = list(ckpt["state_dict"])
    assert keys and not any("teacher" in k for k in keys)
    assert any(k.startswith("distill_adapters") for k in keys)  # the feature adapter is trained and resumable


def test_distill_rejects_class_mismatch(tmp_path, capsys):
    teacher = _teacher(tmp_path / "teacher5", num_classes=5)
    assert main(_argv(teacher, tmp_path / "kd", "original")) == 2
    err = capsys.readouterr().err
    assert "5 classes" in err and "synthetic" in err


def test_distill_bad_spec_is_usage_error(tmp_path, capsys):
    teacher = _teacher(tmp_path / "teacher")
    assert main(_argv(teacher, tmp_path / "kd", "logits@T=-1")) == 2
    assert "--kd" in capsys.readouterr().err


def test_distill_help_documents_spec_and_train_flags():
    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    text = sub.choices["distill"].format_help()
    for flag in ("--teacher", "--kd", "--hard-weight", "--student", "--student-args", "--epochs", "--precision",
                 "--devices", "--resume", "--lr"):
        assert flag in text
    assert "logits@T=6:0.35" in text and "original" in text


def test_distill_settings_from_yaml_and_eval_size(tmp_path):
    """teacher / kd / hard_weight can live in --config (one file reproduces a run); flags still win."""
    import yaml

    teacher = _teacher(tmp_path / "teacher")
    argv = _argv(teacher, tmp_path / "kd", "original")
    i = argv.index("--teacher")
    del argv[i:i + 2]
    i = argv.index("--kd")
    del argv[i:i + 2]
    cfg_file = tmp_path / "kd.yaml"
    cfg_file.write_text(yaml.safe_dump({"teacher": str(teacher), "kd": "logits@T=2:0.3", "hard_weight": 0.7,
                                        "eval_size": [40, 56]}))
    assert main(argv + ["--config", str(cfg_file), "--kd", "logits@T=3:0.3"]) == 0
    info = json.loads((tmp_path / "kd" / "distill.json").read_text())
    assert info["teacher"] == str(teacher) and info["kd"] == "logits@T=3:0.3" and info["hard_weight"] == 0.7
    saved = yaml.safe_load((tmp_path / "kd" / "config.yaml").read_text())
    assert saved["teacher"] == str(teacher) and saved["eval_size"] == [40, 56]
    _, config = load_artifact(tmp_path / "kd" / "best")
    assert config["input_size"] == [40, 56]  # the saved model runs at the evaluation size, not the crop


def test_distill_without_teacher_is_usage_error(tmp_path, capsys):
    argv = _argv(tmp_path, tmp_path / "kd", "original")
    i = argv.index("--teacher")
    del argv[i:i + 2]
    assert main(argv) == 2
    assert "--teacher is required" in capsys.readouterr().err


def test_distill_hard_weight_from_yaml_must_be_a_number(tmp_path, capsys):
    teacher = _teacher(tmp_path / "teacher")
    cfg_file = tmp_path / "kd.yaml"
    cfg_file.write_text("hard_weight: lots\n")
    assert main(_argv(teacher, tmp_path / "kd", "original") + ["--config", str(cfg_file)]) == 2
    assert "kd.yaml: hard_weight (--hard-weight) must be a number, got 'lots'" in capsys.readouterr().err


@pytest.mark.parametrize("view", ["same", "clean"])
def test_teacher_view(tmp_path, monkeypatch, view):
    """`--teacher-view clean` gives the teacher the crop without the colour/camera augmentation while the student
    trains on the augmented one; `same` (the default) gives both the student's image."""
    from distilseg.distill.distiller import Distiller
    from distilseg.training.module import SegModule

    seen: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
    task_and_terms, teacher_outputs = SegModule._task_and_terms, Distiller.teacher_outputs

    def spy_task(self, images, masks, teacher_images=None):
        seen.append((images.detach().clone(), None if teacher_images is None else teacher_images.clone(), None))
        return task_and_terms(self, images, masks, teacher_images)

    def spy_teacher(self, images):
        student, clean, _ = seen[-1]
        seen[-1] = (student, clean, images.detach().clone())
        return teacher_outputs(self, images)

    monkeypatch.setattr(SegModule, "_task_and_terms", spy_task)
    monkeypatch.setattr(Distiller, "teacher_outputs", spy_teacher)
    argv = _argv(_teacher(tmp_path / "teacher"), tmp_path / "kd", "original")
    argv.remove("--no-augment")
    argv += ["--photometric", "strong", "--teacher-view", view, "--epochs", "2", "--seed", "0"]
    assert main(argv) == 0
    assert len(seen) == 4  # 2 epochs x 2 batches of 2
    for student, clean, teacher in seen:
        if view == "same":
            assert clean is None and torch.equal(teacher, student)
        else:
            assert clean is not None and torch.equal(teacher, clean)
    if view == "clean":  # colour jitter fires with p = 0.8: some teacher views differ from the student's
        assert sum(not torch.allclose(s, t, atol=1e-3) for s, _, t in seen) >= 2
