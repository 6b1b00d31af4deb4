"""``distilseg train`` settings: defaults < YAML < explicit flags, original-system aliases, bad values."""
from __future__ import annotations

import argparse

import pytest
import yaml

from distilseg.training.config import DEFAULTS, TrainConfig, add_train_arguments, resolve_config
from distilseg.errors import UsageError


pytestmark = pytest.mark.usefixtures("run_config_check")


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return resolve_config(parser.parse_args(argv)).to_dict()


def test_yaml_then_flags_precedence(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "dataset": "synthetic", "model": "unet", "epochs": 3, "lr": 0.01, "img-size": [32, 48],
        "model_args": {"depth": 2, "base_width": 4}, "scheduler": "poly",
    }))
    cfg = _parse(["--config", str(cfg_file), "--lr", "0.5", "--model-args", "base_width=8", "--out", "o"])
    assert cfg["lr"] == 0.5  # flag beats YAML
    assert cfg["epochs"] == 3 and cfg["scheduler"] == "poly" and cfg["img_size"] == [32, 48]  # YAML beats defaults
    assert cfg["model_args"] == {"depth": 2, "base_width": 8}  # K=V flags merge over the YAML's
    assert cfg["batch_size"] == DEFAULTS["batch_size"] and cfg["optimizer"] == DEFAULTS["optimizer"]
    # a flag equal to the default still wins over the YAML (explicit, not compared to the default)
    cfg = _parse(["--config", str(cfg_file), "--epochs", str(DEFAULTS["epochs"]), "--out", "o"])
    assert cfg["epochs"] == DEFAULTS["epochs"]


def test_original_flag_aliases():
    cfg = _parse(["--dataset", "camvid", "--model", "unet", "--root_path", "/data/cv", "--img_size", "64",
                  "--batch", "4", "--lr", "0.1", "--epochs", "2", "--out", "o"])
    assert cfg["root"] == "/data/cv" and cfg["img_size"] == [64, 64] and cfg["batch_size"] == 4
    assert cfg["lr"] == 0.1 and cfg["epochs"] == 2
    cfg = _parse(["--dataset", "idd", "--model", "unet", "--img-size", "48", "64", "--batch-size", "2",
                  "--dataset-args", "level=1", "binary=true", "--out", "o"])
    assert cfg["img_size"] == [48, 64] and cfg["batch_size"] == 2
    assert cfg["dataset_args"] == {"level": 1, "binary": True}


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--batch-size", "-1"], ["--img-size", "0", "32"],
                                 ["--lr", "0"], ["--devices", "0"]])
def test_non_positive_values_are_usage_errors(bad):
    with pytest.raises(UsageError):
        _parse(["--dataset", "synthetic", "--model", "unet", "--out", "o", *bad])


def test_missing_required_and_unknown_yaml_key(tmp_path):
    with pytest.raises(UsageError, match="--model"):
        _parse(["--dataset", "synthetic", "--out", "o"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: synthetic\nmodel: unet\nepoch: 3\n")
    with pytest.raises(UsageError, match="bad.yaml.*'epoch'"):
        _parse(["--config", str(bad), "--out", "o"])


def test_cli_bad_args_exit_2_with_one_line(capsys, tmp_path):
    from distilseg.cli import main

    code = main(["train", "--dataset", "synthetic", "--model", "unet", "--epochs", "0", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("distilseg train: error:") and "--epochs" in err[0]


def test_presets_resolve(tmp_path):
    from pathlib import Path

    presets = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert presets
    for preset in presets:
        cfg = _parse(["--config", str(preset), "--dataset", "synthetic", "--model", "unet", "--out", "o"])
        data = yaml.safe_load(preset.read_text())
        for key, value in data.items():
            if key not in ("dataset", "model"):
                assert cfg[key.replace("-", "_")] == value, (preset.name, key)


def test_weather_flag_adds_fog_and_sun_flare_to_training_only():
    from distilseg.training.datamodule import build_datasets

    def names(tf) -> set[str]:
        return {type(t).__name__ for t in _walk(tf)}

    base = ["--dataset", "synthetic", "--dataset-args", "num_images=2", "--model", "unet", "--out", "o"]
    train_tf, eval_tf = (build_datasets(TrainConfig.from_dict(_parse(base + ["--weather"])))[i].transform for i in (0, 1))
    assert {"RandomFog", "RandomSunFlare"} <= names(train_tf)
    assert not {"RandomFog", "RandomSunFlare"} & names(eval_tf)
    plain = build_datasets(TrainConfig.from_dict(_parse(base)))[0].transform
    assert not {"RandomFog", "RandomSunFlare"} & names(plain)


def _walk(obj, depth=0):
    """Every transform object reachable from a (possibly wrapped) albumentations pipeline."""
    if depth > 6 or obj is None:
        return
    yield obj
    for attr in ("transforms", "pipeline", "compose", "transform"):
        child = getattr(obj, attr, None)
        if child is None or child is obj:
            continue
        if isinstance(child, (list, tuple)) or type(child).__name__ == "Transforms":
            for c in child:
                yield from _walk(c, depth + 1)
        else:
            yield from _walk(child, depth + 1)


def test_eval_size_defaults_to_crop_and_is_validated(tmp_path):
    from distilseg.training.config import eval_size

    cfg = _parse(["--dataset", "synthetic", "--model", "unet", "--img-size", "32", "48", "--out", "o"])
    assert cfg["eval_size"] is None and eval_size(cfg) == [32, 48]
    cfg = _parse(["--dataset", "synthetic", "--model", "unet", "--img-size", "32", "48", "--eval-size", "64", "96",
                  "--out", "o"])
    assert eval_size(cfg) == [64, 96] and cfg["img_size"] == [32, 48]
    f = tmp_path / "e.yaml"
    f.write_text("dataset: synthetic\nmodel: unet\neval_size: 40\n")
    assert eval_size(_parse(["--config", str(f), "--out", "o"])) == [40, 40]
    with pytest.raises(UsageError, match="--eval-size"):
        _parse(["--dataset", "synthetic", "--model", "unet", "--eval-size", "0", "32", "--out", "o"])
    f.write_text("dataset: synthetic\nmodel: unet\neval_size: [1, 2, 3]\n")
    with pytest.raises(UsageError, match="--eval-size"):
        _parse(["--config", str(f), "--out", "o"])


def test_command_specific_settings_only_where_declared(tmp_path):
    f = tmp_path / "kd.yaml"
    f.write_text("dataset: synthetic\nmodel: unet\nteacher: runs/t\nkd: original\n")
    with pytest.raises(UsageError, match="'teacher'"):  # train does not know distill's settings
        _parse(["--config", str(f), "--out", "o"])
    from distilseg.distill.api import DistillConfig

    parser = argparse.ArgumentParser()
    add_train_arguments(parser, DistillConfig)
    cfg = resolve_config(parser.parse_args(["--config", str(f), "--out", "o"]), DistillConfig)
    assert cfg.teacher == "runs/t" and cfg.kd == "original" and cfg.hard_weight is None


def test_every_shipped_config_resolves_and_builds_its_model():
    """configs/**.yaml are what the README and benchmarks/camvid.md tell users to run: each must parse with the
    command it is for (distill configs carry `teacher`/`kd`) and name a model that builds with its args."""
    from pathlib import Path

    from distilseg.cli import build_parser
    from distilseg.distill.api import DistillConfig
    from distilseg.models import create_model

    configs = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
    assert any(c.parent.name == "camvid" for c in configs)
    for path in configs:
        data = yaml.safe_load(path.read_text())
        is_distill = "kd" in data or "teacher" in data or path.parent.name == "distill"
        command = "distill" if is_distill else "train"
        extra = [f for key, flag in (("dataset", ["--dataset", "synthetic"]), ("model", ["--model", "unet"]))
                 if key not in data for f in flag]  # presets that leave these to the command line
        args = build_parser().parse_args([command, "--config", str(path), "--out", "o", *extra])
        cfg = resolve_config(args, DistillConfig if is_distill else TrainConfig).to_dict()
        for key, value in data.items():
            assert cfg[key.replace("-", "_")] == value, (path.name, key)
        if cfg["model"] in ("msa_unet", "fcn_resnet50", "danet"):
            continue  # big: built by the model tests
        create_model(cfg["model"], 11, **cfg["model_args"])
