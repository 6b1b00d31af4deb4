"""Registry, folder datasets (index and palette masks), synthetic scenes, __getitem__ and batching."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distilseg.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegDataset,
    collate_segmentation,
    create_dataset,
    get_dataset_info,
    list_datasets,
)
from distilseg.errors import DataError, UsageError


pytestmark = pytest.mark.usefixtures("run_config_check")


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def test_registry_names_info_and_errors(tmp_path: Path) -> None:
    assert list_datasets() == ["camvid", "cityscapes", "folder", "idd", "idd-rgb", "oxford-pet", "synthetic"]
    info = get_dataset_info("camvid")
    assert info["num_classes"] == 11 and info["requires_root"] and info["classes"][0] == "Sky"
    assert get_dataset_info("synthetic")["requires_root"] is False
    assert get_dataset_info("folder")["num_classes"] is None
    with pytest.raises(UsageError, match="unknown dataset 'nope'.*camvid.*synthetic"):
        create_dataset("nope")
    with pytest.raises(UsageError, match="no split 'dev'.*train, val, test"):
        create_dataset("synthetic", split="dev")
    with pytest.raises(UsageError, match="needs a root"):
        create_dataset("camvid")
    with pytest.raises(UsageError, match="does not take option.*level"):
        create_dataset("synthetic", level=2)
    with pytest.raises(DataError, match="expected folders .*trainannot"):
        create_dataset("camvid", root=tmp_path)
    with pytest.raises(DataError, match="leftImg8bit"):
        create_dataset("cityscapes", root=tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        create_dataset("idd", root=tmp_path / "missing")
    with pytest.raises(UsageError, match="level must be 1, 2 or 3"):
        (tmp_path / "leftImg8bit" / "train").mkdir(parents=True)
        create_dataset("idd", root=tmp_path, level=4)


def test_folder_index_masks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(3):
            mask = rng.integers(0, 4, (6, 8)).astype(np.uint8)
            mask[0, 0] = 255
            save(tmp_path / split / "images" / f"im{i}.jpg", rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
            save(tmp_path / split / "masks" / f"im{i}.png", mask)
    ds = create_dataset("folder", root=tmp_path, split="val")
    assert ds.num_classes == 4 and ds.classes == ["class_0", "class_1", "class_2", "class_3"]
    assert ds.palette.shape == (4, 3) and len({tuple(c) for c in ds.palette.tolist()}) == 4
    expected = np.asarray(Image.open(tmp_path / "val" / "masks" / "im1.png"))
    assert np.array_equal(ds.load_mask(1), expected)
    assert ds.load_image(1).shape == (6, 8, 3) and ds.load_image(1).dtype == np.uint8
    ds6 = create_dataset("folder", root=tmp_path, split="val", num_classes=6)
    assert ds6.num_classes == 6
    small = create_dataset("folder", root=tmp_path, split="val", num_classes=2)
    with pytest.raises(DataError, match=r"im0\.png.*values.*3"):
        small.load_mask(0)


def test_folder_palette_masks_csv_and_json(tmp_path: Path) -> None:
    colors = {0: (10, 20, 30), 1: (200, 0, 0), 255: (0, 0, 0)}
    csv_file = tmp_path / "pal.csv"
    csv_file.write_text("id,name,r,g,b\n0,road,10,20,30\n1,car,200,0,0\n255,void,0,0,0\n")
    json_file = tmp_path / "pal.json"
    json_file.write_text(json.dumps([{"id": 0, "name": "road", "color": [10, 20, 30]},
                                     {"id": 1, "name": "car", "color": [200, 0, 0]},
                                     {"id": 255, "name": "void", "color": [0, 0, 0]}]))
    ids = np.array([[0, 1, 255], [1, 1, 0]], dtype=np.uint8)
    color_mask = np.zeros((2, 3, 3), dtype=np.uint8)
    for k, c in colors.items():
        color_mask[ids == k] = c
    data = tmp_path / "data"
    save(data / "images" / "x.png", np.zeros((2, 3, 3), dtype=np.uint8))
    save(data / "masks" / "x.png", color_mask)
    for pal in (csv_file, json_file):
        ds = create_dataset("folder", root=data, split="train", palette=str(pal))
        assert ds.classes == ["road", "car"]
        assert ds.palette.tolist() == [[10, 20, 30], [200, 0, 0]]
        assert ds.load_mask(0).tolist() == ids.tolist()
    bad = tmp_path / "bad.csv"
    bad.write_text("name,color\nroad,1\n")
    with pytest.raises(DataError, match=r"bad\.csv.*id,name,r,g,b"):
        create_dataset("folder", root=data, palette=str(bad))
    with pytest.raises(DataError, match="images/ and masks/"):
        create_dataset("folder", root=tmp_path)


def test_synthetic_is_deterministic_and_covers_classes() -> None:
    a = create_dataset("synthetic", split="train", num_images=12, size=(48, 64), seed=3)
    b = create_dataset("synthetic", split="train", num_images=12, size=(48, 64), seed=3)
    for i in (0, 7):
        assert np.array_equal(a.load_image(i), b.load_image(i))
        assert np.array_equal(a.load_mask(i), b.load_mask(i))
    val = create_dataset("synthetic", split="val", num_images=12, size=(48, 64), seed=3)
    assert not np.array_equal(a.load_image(0), val.load_image(0))
    other_seed = create_dataset("synthetic", split="train", num_images=12, size=(48, 64), seed=4)
    assert not np.array_equal(a.load_mask(0), other_seed.load_mask(0))
    ds = create_dataset("synthetic", split="train", num_images=40)
    assert len(ds) == 40 and ds.num_classes == 7
    assert ds.classes == ["sky", "road", "sidewalk", "building", "vegetation", "car", "person"]
    counts = np.zeros(256, dtype=np.int64)
    for i in range(len(ds)):
        img, mask = ds.load_image(i), ds.load_mask(i)
        assert img.shape == (96, 128, 3) and img.dtype == np.uint8 and mask.shape == (96, 128)
        counts += np.bincount(mask.ravel(), minlength=256)
    assert (counts[:7] > 0).all() and counts[255] > 0
    assert counts[7:255].sum() == 0
    assert counts[255] < 0.02 * counts.sum()
    # not trivial: a class's pixels are not one flat color
    img, mask = ds.load_image(0), ds.load_mask(0)
    assert img[mask == 1].std() > 3
    assert [len(create_dataset("synthetic", split=s)) for s in ("train", "val", "test")] == [160, 40, 40]


def test_getitem_default_transform_and_collate() -> None:
    ds = create_dataset("synthetic", split="val", num_images=3, size=(32, 48))
    assert isinstance(ds, SegDataset)
    item = ds[1]
    assert item["image"].shape == (3, 32, 48) and item["image"].dtype == torch.float32
    assert item["mask"].dtype == torch.long and item["name"] == "synthetic_val_00001" and item["index"] == 1
    raw = torch.from_numpy(ds.load_image(1)).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(item["image"], (raw - mean) / std, atol=1e-6)
    assert torch.equal(item["mask"], torch.from_numpy(ds.load_mask(1)).long())
    batch = collate_segmentation([ds[0], ds[2]])
    assert batch["image"].shape == (2, 3, 32, 48) and batch["mask"].shape == (2, 32, 48)
    assert batch["name"] == ["synthetic_val_00000", "synthetic_val_00002"] and batch["index"].tolist() == [0, 2]
    other = create_dataset("synthetic", split="val", num_images=1, size=(40, 48))[0]
    mixed = collate_segmentation([ds[0], other])
    assert isinstance(mixed["mask"], list) and [m.shape[0] for m in mixed["mask"]] == [32, 40]
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_segmentation)
    assert next(iter(loader))["image"].shape == (3, 3, 32, 48)
