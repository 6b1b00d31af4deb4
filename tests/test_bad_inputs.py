"""Bad inputs across the whole CLI, table-driven: each case exits non-zero with exactly one
``distilseg CMD: error: ...`` line naming the file or the setting, no traceback, and leaves every input
file as it was (bytes and modification time)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distilseg.cli import main

SYN = ["--dataset", "synthetic", "--dataset-args", "num_images=4", "size=[32,48]"]
TRAIN = ["train", *SYN, "--model", "unet", "--model-args", "depth=2", "base_width=4", "--img-size", "32", "48",
         "--batch-size", "2", "--epochs", "1", "--limit-train-batches", "1", "--num-workers", "0",
         "--accelerator", "cpu", "--no-progress", "--no-augment"]
EVAL = ["eval", *SYN, "--no-progress"]

YAMLS = {
    "nan_gamma.yaml": "dataset: synthetic\nmodel: unet\ngamma: .nan\n",
    "inf_lr.yaml": "dataset: synthetic\nmodel: unet\nlr: .inf\n",
    "big_gamma.yaml": "dataset: synthetic\nmodel: unet\ngamma: 2\n",
    "neg_wd.yaml": "dataset: synthetic\nmodel: unet\nweight_decay: -0.5\n",
    "lots_wd.yaml": "dataset: synthetic\nmodel: unet\nweight_decay: lots\n",
    "abc_seed.yaml": "dataset: synthetic\nmodel: unet\nseed: abc\n",
    "list_dargs.yaml": "dataset: synthetic\nmodel: unet\ndataset_args: [1, 2]\n",
    "zero_epochs.yaml": "dataset: synthetic\nmodel: unet\nepochs: 0\n",
    "float_batch.yaml": "dataset: synthetic\nmodel: unet\nbatch_size: 2.5\n",
    "str_bool.yaml": "dataset: synthetic\nmodel: unet\naugment: 'no'\n",
    "unknown_key.yaml": "dataset: synthetic\nmodel: unet\nepoch: 3\n",
    "not_mapping.yaml": "- dataset\n- model\n",
    "broken.yaml": "dataset: [synthetic\nmodel: unet\n",
    "bad_size.yaml": "dataset: synthetic\nmodel: unet\nimg_size: [0, 32]\n",
}


pytestmark = pytest.mark.usefixtures("run_config_check")


def _artifact(folder: Path, num_classes: int = 7) -> Path:
    from distilseg.data import create_dataset
    from distilseg.artifact import save_artifact
    from distilseg.models import create_model

    ds = create_dataset("synthetic", split="val", num_images=2, size=[32, 48])
    model = create_model("unet", num_classes, depth=2, base_width=4)
    return save_artifact(folder, model, {
        "num_classes": num_classes, "class_names": [f"c{i}" for i in range(num_classes)],
        "palette": ds.palette.tolist()[:num_classes], "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225], "input_size": [32, 48], "ignore_index": 255, "dataset": "synthetic"})


def _edit_config(folder: Path, **change) -> None:
    conf = json.loads((folder / "config.json").read_text())
    conf.update(change)
    (folder / "config.json").write_text(json.dumps(conf))


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Path:
    """Every input file the cases use, built once."""
    import numpy as np
    from PIL import Image

    d = tmp_path_factory.mktemp("inputs")
    for name, text in YAMLS.items():
        (d / name).write_text(text)
    good = _artifact(d / "art")
    _artifact(d / "art3", num_classes=3)
    for name, change in {"art_eleven": {"num_classes": "eleven"},
                         "art_typo": {"model_args": {"depth": 2, "base_widht": 4}},
                         "art_arch": {"architecture": "no_such_net"},
                         "art_palette": {"palette": [[0, 0, 300]] * 7}}.items():
        shutil.copytree(good, d / name)
        _edit_config(d / name, **change)
    shutil.copytree(good, d / "art_json")
    (d / "art_json" / "config.json").write_text('{"architecture": "unet", "num_classes": ')
    shutil.copytree(good, d / "art_trunc")
    w = d / "art_trunc" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    img = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    Image.fromarray(img).save(d / "good.png")
    Image.fromarray(img).save(d / "full.png")
    data = (d / "full.png").read_bytes()
    (d / "trunc.png").write_bytes(data[: len(data) // 2])
    (d / "full.png").unlink()
    (d / "afile.txt").write_text("not a folder\n")
    (d / "weights.txt").write_text("1 2 3\n")
    (d / "fake.onnx").write_bytes(b"not an onnx model")
    finished = d / "finished"
    assert main([*TRAIN, "--out", str(finished)]) == 0
    (finished / "checkpoints" / "last.ckpt").unlink()
    return d


# (id, argv with {d} = the inputs folder and {o} = a fresh output path, text the error line must hold)
CASES = [
    # train: YAML settings of wrong type or out of range
    ("yaml-nan-gamma", ["train", "--config", "{d}/nan_gamma.yaml", "--out", "{o}"],
     "{d}/nan_gamma.yaml: gamma (--gamma) must be a finite number"),
    ("yaml-inf-lr", ["train", "--config", "{d}/inf_lr.yaml", "--out", "{o}"], "{d}/inf_lr.yaml: lr (--lr) must be a finite"),
    ("yaml-gamma-range", ["train", "--config", "{d}/big_gamma.yaml", "--out", "{o}"],
     "{d}/big_gamma.yaml: gamma (--gamma) must be in (0, 1]"),
    ("yaml-negative-wd", ["train", "--config", "{d}/neg_wd.yaml", "--out", "{o}"],
     "{d}/neg_wd.yaml: weight_decay (--weight-decay) must not be negative"),
    ("yaml-wd-text", ["train", "--config", "{d}/lots_wd.yaml", "--out", "{o}"],
     "{d}/lots_wd.yaml: weight_decay (--weight-decay) must be a number, got 'lots'"),
    ("yaml-seed-text", ["train", "--config", "{d}/abc_seed.yaml", "--out", "{o}"],
     "{d}/abc_seed.yaml: seed (--seed) must be a non-negative integer"),
    ("yaml-dataset-args-list", ["train", "--config", "{d}/list_dargs.yaml", "--out", "{o}"],
     "{d}/list_dargs.yaml: dataset_args (--dataset-args) must be a mapping"),
    ("yaml-zero-epochs", ["train", "--config", "{d}/zero_epochs.yaml", "--out", "{o}"],
     "{d}/zero_epochs.yaml: epochs (--epochs) must be a positive integer"),
    ("yaml-float-batch", ["train", "--config", "{d}/float_batch.yaml", "--out", "{o}"],
     "{d}/float_batch.yaml: batch_size (--batch-size) must be a positive integer"),
    ("yaml-text-bool", ["train", "--config", "{d}/str_bool.yaml", "--out", "{o}"],
     "{d}/str_bool.yaml: augment (--augment) must be true or false"),
    ("yaml-unknown-key", ["train", "--config", "{d}/unknown_key.yaml", "--out", "{o}"],
     "{d}/unknown_key.yaml: unknown setting 'epoch'"),
    ("yaml-not-mapping", ["train", "--config", "{d}/not_mapping.yaml", "--out", "{o}"],
     "{d}/not_mapping.yaml: expected a mapping of settings"),
    ("yaml-syntax", ["train", "--config", "{d}/broken.yaml", "--out", "{o}"], "{d}/broken.yaml: invalid YAML"),
    ("yaml-bad-size", ["train", "--config", "{d}/bad_size.yaml", "--out", "{o}"],
     "{d}/bad_size.yaml: img_size (--img-size) must be two positive integers"),
    ("yaml-missing-file", ["train", "--config", "{d}/nope.yaml", "--out", "{o}"], "{d}/nope.yaml: no such config file"),
    # train: flags
    ("flag-nan-lr", ["train", "--dataset", "synthetic", "--model", "unet", "--lr", "nan", "--out", "{o}"],
     "--lr must be a finite number"),
    ("flag-zero-size", ["train", "--dataset", "synthetic", "--model", "unet", "--img-size", "0", "32", "--out", "{o}"],
     "--img-size must be two positive integers"),
    ("unknown-model", [*TRAIN[:5], "--model", "no_such_net", "--out", "{o}"], "no_such_net"),
    ("unknown-dataset", ["train", "--dataset", "no_such_data", "--model", "unet", "--out", "{o}"], "no_such_data"),
    ("unknown-loss", [*TRAIN, "--loss", "bogus:1", "--out", "{o}"], "bogus"),
    ("class-weights-count", [*TRAIN, "--class-weights", "{d}/weights.txt", "--out", "{o}"],
     "{d}/weights.txt: 3 class weights for a dataset with 7 classes"),
    ("class-weights-missing", [*TRAIN, "--class-weights", "{d}/nope.txt", "--out", "{o}"], "{d}/nope.txt: no such file"),
    ("pretrained-other-classes", [*TRAIN, "--pretrained", "{d}/art3", "--out", "{o}"],
     "--pretrained {d}/art3: the model has 3 classes"),
    # output locations
    ("train-out-is-file", [*TRAIN, "--out", "{d}/afile.txt"], "--out {d}/afile.txt: is a file, not a folder"),
    ("train-out-under-file", [*TRAIN, "--out", "{d}/afile.txt/run"], "{d}/afile.txt/run: cannot create the output folder"),
    ("eval-out-is-file", [*EVAL, "--checkpoint", "{d}/art", "--out", "{d}/afile.txt"],
     "--out {d}/afile.txt: is a file, not a folder"),
    ("predict-out-is-file", ["predict", "--checkpoint", "{d}/art", "{d}/good.png", "--out", "{d}/afile.txt"],
     "--out {d}/afile.txt: is a file, not a folder"),
    ("export-out-is-folder", ["export", "--checkpoint", "{d}/art", "--out", "{d}"], "--out {d}: is a folder"),
    ("distill-out-is-file", ["distill", *SYN, "--teacher", "{d}/art", "--model", "unet", "--out", "{d}/afile.txt"],
     "--out {d}/afile.txt: is a file, not a folder"),
    ("compress-out-is-file", ["compress", "--dataset", "synthetic", "--out", "{d}/afile.txt"],
     "--out {d}/afile.txt: is a file, not a folder"),
    # finished run whose resume state is gone
    ("resume-finished-run", [*TRAIN, "--resume", "--out", "{d}/finished"],
     "{d}/finished holds the results of an earlier run (best, last, history.csv) but no resume state"),
    # checkpoints and artifacts
    ("checkpoint-missing", [*EVAL, "--checkpoint", "{d}/nothing", "--out", "{o}"], "{d}/nothing: no such checkpoint"),
    ("artifact-num-classes-text", [*EVAL, "--checkpoint", "{d}/art_eleven", "--out", "{o}"],
     "{d}/art_eleven/config.json: num_classes must be a positive integer, got 'eleven'"),
    ("artifact-arg-typo", [*EVAL, "--checkpoint", "{d}/art_typo", "--out", "{o}"],
     "{d}/art_typo/config.json: architecture 'unet' with model_args {{'depth': 2, 'base_widht': 4}} cannot be built"),
    ("artifact-unknown-arch", [*EVAL, "--checkpoint", "{d}/art_arch", "--out", "{o}"],
     "{d}/art_arch/config.json: architecture 'no_such_net'"),
    ("artifact-bad-palette", [*EVAL, "--checkpoint", "{d}/art_palette", "--out", "{o}"],
     "{d}/art_palette/config.json: palette must be a list of 7 [R, G, B] colors"),
    ("artifact-json-syntax", [*EVAL, "--checkpoint", "{d}/art_json", "--out", "{o}"],
     "{d}/art_json/config.json: invalid JSON"),
    ("artifact-truncated-weights", [*EVAL, "--checkpoint", "{d}/art_trunc", "--out", "{o}"],
     "{d}/art_trunc/model.safetensors: not a valid safetensors file"),
    ("eval-class-mismatch", [*EVAL, "--checkpoint", "{d}/art3", "--out", "{o}"], "model has 3 classes"),
    ("fake-onnx", ["predict", "--checkpoint", "{d}/fake.onnx", "{d}/good.png", "--out", "{o}"], "{d}/fake.onnx"),
    # images
    ("truncated-image", ["predict", "--no-progress", "--checkpoint", "{d}/art", "{d}/trunc.png", "--out", "{o}"], "{d}/trunc.png"),
    ("missing-image", ["predict", "--checkpoint", "{d}/art", "{d}/nope.png", "--out", "{o}"], "{d}/nope.png"),
    ("distill-missing-teacher", ["distill", *SYN, "--teacher", "{d}/nothing", "--model", "unet", "--out", "{o}"],
     "{d}/nothing"),
    ("data-inspect-missing-root", ["data", "inspect", "--dataset", "camvid", "--root", "{d}/nothing", "--out", "{o}"],
     "{d}/nothing"),
]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("argv, needle", [pytest.param(a, n, id=i) for i, a, n in CASES])
def test_bad_input_is_one_line_non_zero_and_changes_nothing(fx, tmp_path, capsys, argv, needle):
    fill = {"d": str(fx), "o": str(tmp_path / "out")}
    args = [a.format(**fill) for a in argv]
    before = _snapshot(fx)
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"distilseg {args[0]}: error: "), lines[0]
    assert needle.format(**fill) in lines[0]
    assert _snapshot(fx) == before


def test_the_table_is_broad():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)
    assert {c[1][0] for c in CASES} >= {"train", "eval", "predict", "export", "distill", "compress", "data"}
