"""Settings from flags and YAML: numbers finite and in range, wrong types named with their file and key."""
from __future__ import annotations

import json

import pytest

from distilseg.cli import main
from test_train_support import DATA_ARGS, err_lines, snapshot, tiny_artifact

pytestmark = pytest.mark.usefixtures("run_config_check")


# ---- numeric settings finite and in range ---------------------------------------------------------


@pytest.mark.parametrize("key, value, words", [
    ("gamma", ".nan", "finite"), ("gamma", "1.5", "(0, 1]"), ("gamma", "0", "(0, 1]"),
    ("lr", ".inf", "finite"), ("lr", "-0.1", "positive"), ("weight_decay", "-1e-4", "negative"),
    ("warmup_epochs", "-.inf", "finite"), ("encoder_lr_mult", ".nan", "finite"), ("grad_clip", "0", "positive"),
    ("epochs", "0", "positive integer"), ("epochs", "2.5", "positive integer"), ("batch_size", "true", "integer"),
    ("seed", "-1", "non-negative"), ("seed", "4294967296", "at most"), ("num_workers", "-2", "non-negative"),
])
def test_yaml_numbers_must_be_finite_and_in_range(tmp_path, capsys, key, value, words):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(f"dataset: synthetic\nmodel: unet\n{key}: {value}\n")
    before = snapshot(tmp_path)
    code = main(["train", "--config", str(cfg_file), "--out", str(tmp_path / "o")])
    lines = err_lines(capsys)
    assert code == 2 and len(lines) == 1
    assert f"{cfg_file}: {key} (--{key.replace('_', '-')})" in lines[0] and words in lines[0]
    assert snapshot(tmp_path) == before and not (tmp_path / "o").exists()


def test_nan_flag_is_refused_naming_the_flag(tmp_path, capsys):
    assert main(["train", "--dataset", "synthetic", "--model", "unet", "--gamma", "nan", "--out",
                 str(tmp_path / "o")]) == 2
    lines = err_lines(capsys)
    assert len(lines) == 1 and "--gamma must be a finite number, got nan" in lines[0]


# ---- wrong types ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, needle", [
    ("weight_decay: lots", "weight_decay (--weight-decay) must be a number, got 'lots'"),
    ("seed: abc", "seed (--seed) must be a non-negative integer, got 'abc'"),
    ("dataset_args: [1, 2]", "dataset_args (--dataset-args) must be a mapping of KEY: VALUE settings"),
    ("model_args: 3", "model_args (--model-args) must be a mapping of KEY: VALUE settings"),
    ("augment: 'no'", "augment (--augment) must be true or false"),
    ("img_size: [32, '48']", "img_size (--img-size) must be two positive integers"),
    ("optimizer: [adam]", "optimizer (--optimizer) must be a name"),
])
def test_yaml_wrong_types_name_file_and_key(tmp_path, capsys, text, needle):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(f"dataset: synthetic\nmodel: unet\n{text}\n")
    assert main(["train", "--config", str(cfg_file), "--out", str(tmp_path / "o")]) == 2
    lines = err_lines(capsys)
    assert len(lines) == 1 and f"{cfg_file}: {needle}" in lines[0]


@pytest.mark.parametrize("change, needle", [
    ({"num_classes": "eleven"}, "num_classes must be a positive integer, got 'eleven'"),
    ({"model_args": {"depth": 2, "base_widht": 4}},
     "architecture 'unet' with model_args {'depth': 2, 'base_widht': 4} cannot be built (unet: unknown argument"),
    ({"architecture": "no_such_net"}, "architecture 'no_such_net' with model_args {'depth': 2, 'base_width': 4} cannot be built ("),
    ({"input_size": [32]}, "input_size must be two positive integers [H, W]"),
    ({"class_names": "a,b"}, "class_names must be a list of 7 names"),
    ({"std": [0.2, 0, 0.2]}, "std must be a list of 3 numbers above 0"),
])
def test_artifact_config_wrong_types_name_file_and_key(tmp_path, capsys, change, needle):
    art = tiny_artifact(tmp_path / "art")
    conf = json.loads((art / "config.json").read_text())
    conf.update(change)
    (art / "config.json").write_text(json.dumps(conf))
    before = snapshot(art)
    code = main(["eval", "--checkpoint", str(art), "--dataset", "synthetic", *DATA_ARGS, "--out", str(tmp_path / "e"),
                 "--no-progress"])
    lines = err_lines(capsys)
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"distilseg eval: error: {art / 'config.json'}: ") and needle in lines[0]
    assert snapshot(art) == before
