"""``split="train+val"``: joined splits read each sample through its own adapter, survive --skip-bad filtering,
and ``train --train-split train+val`` trains on both (the final-model protocol)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distilseg.cli import main
from distilseg.data import create_dataset
from distilseg.data.validate import validate_dataset
from distilseg.errors import DataError, UsageError


pytestmark = pytest.mark.usefixtures("run_config_check")


def _folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(root / split / "images" / f"{split}{i}.png")
            Image.fromarray(rng.integers(0, 3, (6, 8)).astype(np.uint8)).save(root / split / "masks" / f"{split}{i}.png")


def test_joined_synthetic_splits_are_the_parts_in_order():
    train = create_dataset("synthetic", split="train", num_images=3, size=[32, 32])
    val = create_dataset("synthetic", split="val", num_images=3, size=[32, 32])
    both = create_dataset("synthetic", split="train+val", num_images=3, size=[32, 32])  # options reach each part
    assert both.split == "train+val" and len(both) == 6 and both.num_classes == train.num_classes
    assert [s.name for s in both.samples] == [s.name for s in train.samples] + [s.name for s in val.samples]
    for i, (part, j) in enumerate([(train, 0), (train, 1), (train, 2), (val, 0), (val, 1), (val, 2)]):
        assert np.array_equal(both.load_image(i), part.load_image(j))
        assert np.array_equal(both.load_mask(i), part.load_mask(j))
    item = both[4]
    assert item["name"] == val.samples[1].name and item["index"] == 4
    assert torch.equal(item["mask"], torch.from_numpy(val.load_mask(1)).long())


def test_joined_folder_splits_keep_their_files_after_skip_bad(tmp_path):
    _folder(tmp_path)
    bad = tmp_path / "train" / "images" / "train1.png"
    bad.write_bytes(bad.read_bytes()[:-20])  # truncated: the quick check finds it
    both = create_dataset("folder", root=tmp_path, split="train+val")
    assert len(both) == 5
    report = validate_dataset(both, full=False, skip_bad=True, workers=1)
    assert [b.file for b in report.bad] == [str(bad)]
    assert [s.name for s in both.samples] == ["train0", "train2", "val0", "val1"]
    # index 1 is now train2, index 3 is val1: each read goes to the file of that sample, also in a copy sent to
    # a DataLoader worker started by spawn (pickled: the objects' ids change)
    copy = pickle.loads(pickle.dumps(both))
    for i, (split, name) in enumerate([("train", "train0"), ("train", "train2"), ("val", "val0"), ("val", "val1")]):
        want = np.asarray(Image.open(tmp_path / split / "masks" / f"{name}.png"))
        for ds in (both, copy):
            assert np.array_equal(ds.load_mask(i), want), name
            assert ds[i]["name"] == name


def test_joined_split_errors(tmp_path):
    with pytest.raises(UsageError, match="distinct split names"):
        create_dataset("synthetic", split="train+train")
    with pytest.raises(UsageError, match="distinct split names"):
        create_dataset("synthetic", split="train+")
    with pytest.raises(UsageError, match="no split 'dev'"):
        create_dataset("synthetic", split="train+dev")
    _folder(tmp_path)
    (tmp_path / "val" / "masks" / "val0.png").unlink()
    with pytest.raises(DataError):
        create_dataset("folder", root=tmp_path, split="train+val")
    # a folder without split subfolders serves the same files as every split: joining would count them twice
    flat = tmp_path / "flat"
    for i in range(2):
        (flat / "images").mkdir(parents=True, exist_ok=True)
        (flat / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(flat / "images" / f"{i}.png")
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(flat / "masks" / f"{i}.png")
    assert len(create_dataset("folder", root=flat, split="train")) == 2
    with pytest.raises(UsageError, match="splits 'train' and 'val' both hold .*0.png"):
        create_dataset("folder", root=flat, split="train+val")


def test_inspect_joined_splits_keeps_each_split_apart(tmp_path, capsys):
    import json

    _folder(tmp_path)
    for split in ("train", "val"):  # the same file name in both splits, and an orphan mask in val
        Image.fromarray(np.full((6, 8, 3), 7, np.uint8)).save(tmp_path / split / "images" / "same.png")
        Image.fromarray(np.full((6, 8), 1 if split == "train" else 2, np.uint8)).save(tmp_path / split / "masks" / "same.png")
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "val" / "masks" / "orphan.png")
    out = tmp_path / "inspect"
    assert main(["data", "inspect", "--dataset", "folder", "--root", str(tmp_path), "--split", "train+val",
                 "--out", str(out), "--dump-masks", "--num-samples", "0"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["num_images"] == 7
    assert stats["orphan_masks"] == [str(tmp_path / "val" / "masks" / "orphan.png")]
    assert np.asarray(Image.open(out / "masks" / "train" / "same.png")).max() == 1
    assert np.asarray(Image.open(out / "masks" / "val" / "same.png")).max() == 2
    assert len(list((out / "masks").rglob("*.png"))) == 7


def test_train_on_train_plus_val(tmp_path, capsys):
    out = tmp_path / "run"
    code = main([
        "train", "--dataset", "synthetic", "--dataset-args", "num_images=3", "size=[32,32]",
        "--train-split", "train+val", "--val-split", "val+test",
        "--model", "unet", "--model-args", "depth=2", "base_width=4", "--img-size", "32", "32",
        "--epochs", "1", "--batch-size", "2", "--no-augment", "--no-progress", "--accelerator", "cpu",
        "--out", str(out),
    ])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "the validation split 'val+test' overlaps the training split 'train+val' (val)" in captured.out
    # 6 training images in batches of 2: three steps (the train split alone gives one: 3 images, last dropped)
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 3
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train_split"] == "train+val" and saved["val_split"] == "val+test"
    # validation ran on val+test: each of its 6 images scored once (supports = its non-void pixels)
    import json

    metrics = json.loads((out / "best" / "config.json").read_text())["metrics"]
    val_test = create_dataset("synthetic", split="val+test", num_images=3, size=[32, 32])
    scored = sum(int((val_test.load_mask(i) != 255).sum()) for i in range(len(val_test)))
    assert sum(c["support"] for c in metrics["per_class"]) == scored > 5 * 32 * 32
