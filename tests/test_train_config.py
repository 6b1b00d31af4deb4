"""``distilseg train`` settings: defaults < YAML < explicit flags, original-system aliases, bad values."""
from __future__ import annotations

import argparse

import pytest
import yaml

from distilseg.engine.train import DEFAULTS, add_train_arguments, resolve_config
from distilseg.errors import UsageError


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return resolve_config(parser.parse_args(argv))


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
    from distilseg.engine.train import build_datasets

    def names(tf) -> set[str]:
        return {type(t).__name__ for t in _walk(tf)}

    base = ["--dataset", "synthetic", "--dataset-args", "num_images=2", "--model", "unet", "--out", "o"]
    train_tf, eval_tf = (build_datasets(_parse(base + ["--weather"]))[i].transform for i in (0, 1))
    assert {"RandomFog", "RandomSunFlare"} <= names(train_tf)
    assert not {"RandomFog", "RandomSunFlare"} & names(eval_tf)
    plain = build_datasets(_parse(base))[0].transform
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
