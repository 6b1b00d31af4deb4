"""The `camvid-cpu` compress preset builds, for each stage, exactly the training settings of the CamVid recipe
configs (configs/camvid/*.yaml), on train+val and with strong photometric augmentation, and `--holdout` reaches
every stage and the evaluation rows."""
from __future__ import annotations

from pathlib import Path

import yaml

from distilseg.cli import build_parser
from distilseg.distill.compress import Compressor
from distilseg.distill.compress_settings import PRESETS, settings_from_args

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "camvid"
RECIPE_KEYS = ("model", "model_args", "pretrained", "img_size", "eval_size", "batch_size", "optimizer", "lr",
               "weight_decay", "scheduler", "warmup_epochs", "loss", "class_weights", "precision", "channels_last",
               "augment")


def _stage_cfgs(tmp_path: Path, *extra: str) -> tuple[dict, dict, Compressor]:
    args = build_parser().parse_args(["compress", "--dataset", "camvid", "--root", str(tmp_path), "--preset",
                                      "camvid-cpu", *extra, "--out", str(tmp_path / "out")])
    s = settings_from_args(args)
    comp = Compressor(tmp_path / "out", s)
    teacher = comp._train_cfg(s["teacher_model"], s["teacher_args"], tmp_path / "t", s["teacher_epochs"],
                              "teacher").to_dict()
    student = comp._train_cfg(s["student_model"], s["student_args"], tmp_path / "s", s["epochs"]).to_dict()
    return teacher, student, comp


def test_camvid_cpu_preset_is_the_recipe_of_the_camvid_configs(tmp_path: Path) -> None:
    assert "camvid-cpu" in PRESETS
    teacher, student, comp = _stage_cfgs(tmp_path)
    for cfg, name in ((teacher, "teacher_lite2_fpn.yaml"), (student, "student_fpn8_lite0.yaml")):
        recipe = {**_defaults(), **yaml.safe_load((CONFIGS / name).read_text())}
        assert {k: cfg[k] for k in RECIPE_KEYS} == {k: recipe[k] for k in RECIPE_KEYS}, name
        assert cfg["photometric"] == "strong" and recipe.get("photometric", "mild") == "mild"  # chosen cross-street
        assert cfg["train_split"] == "train+val" and cfg["epochs"] == recipe["epochs"] and cfg["holdout"] is None
    kd = yaml.safe_load((CONFIGS / "student_fpn8_lite0_kd.yaml").read_text())
    assert (comp.s["kd"], comp.s["hard_weight"]) == (kd["kd"], kd["hard_weight"])
    assert comp.use == "last"


def test_camvid_cpu_preset_takes_holdout_into_every_stage(tmp_path: Path) -> None:
    teacher, student, comp = _stage_cfgs(tmp_path, "--holdout", "0001TP")
    assert teacher["holdout"] == student["holdout"] == "0001TP"
    assert comp.s["train"]["holdout"] == "0001TP"


def _defaults() -> dict:
    from distilseg.training.config import DEFAULTS

    return dict(DEFAULTS)
