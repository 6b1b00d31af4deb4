"""Adapters decode every label value exactly as the official tables say (shared tables and packaged copy)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distilseg.data import create_dataset
from distilseg.data.tables import TABLES_DIR
from distilseg.errors import DataError

TABLES = ("camvid", "cityscapes", "idd", "idd_level3_rgb", "oxford_pet")


pytestmark = pytest.mark.usefixtures("run_config_check")


def rows(folder: Path, name: str) -> list[dict[str, str]]:
    with open(folder / f"{name}.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(params=["shared", "packaged"])
def table_dir(request, shared_labels: Path) -> Path:
    return shared_labels if request.param == "shared" else TABLES_DIR


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def rgb_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", TABLES)
def test_packaged_tables_hold_the_shared_facts(shared_labels: Path, name: str) -> None:
    assert rows(TABLES_DIR, name) == rows(shared_labels, name)


# ------------------------------------------------------------------------------------------ cityscapes
def make_cityscapes(root: Path, values: np.ndarray, kind: str = "labelIds") -> None:
    for split in ("train", "val"):
        stem = "aachen_000000_000019"
        save(root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png", rgb_image(*values.shape))
        save(root / "gtFine" / split / "aachen" / f"{stem}_gtFine_{kind}.png", values)


def test_cityscapes_every_label_id(tmp_path: Path, table_dir: Path) -> None:
    table = rows(table_dir, "cityscapes")
    ids = [int(r["id"]) for r in table if int(r["id"]) >= 0]
    values = np.array([ids + [255]], dtype=np.uint8)  # 255 = license plate (-1) in uint8 files
    make_cityscapes(tmp_path, values)
    ds = create_dataset("cityscapes", root=tmp_path, split="val")
    expected = [int(r["train_id"]) if int(r["train_id"]) >= 0 else 255 for r in table if int(r["id"]) >= 0] + [255]
    assert ds.load_mask(0).tolist() == [expected]
    train = {int(r["train_id"]): r["name"] for r in reversed(table) if 0 <= int(r["train_id"]) < 255}
    assert ds.classes == [train[i] for i in range(19)]
    assert ds.palette[ds.classes.index("road")].tolist() == [128, 64, 128]
    assert ds.samples[0].name == "aachen_000000_000019"
    assert len(ds) == 1 and ds.num_classes == 19


def test_cityscapes_train_ids_and_bad_values(tmp_path: Path) -> None:
    values = np.array([list(range(19)) + [255]], dtype=np.uint8)
    make_cityscapes(tmp_path, values, kind="labelTrainIds")
    ds = create_dataset("cityscapes", root=tmp_path, split="train")  # auto: no labelIds -> trainIds
    assert ds.load_mask(0).tolist() == values.tolist()
    bad = tmp_path / "bad"
    make_cityscapes(bad, np.array([[7, 40, 41]], dtype=np.uint8))
    with pytest.raises(DataError, match=r"_gtFine_labelIds\.png.*40, 41"):
        create_dataset("cityscapes", root=bad, split="train").load_mask(0)


# ------------------------------------------------------------------------------------------------- idd
def level_maps(table_dir: Path) -> dict[int, dict[int, int]]:
    """level3 id -> level L id, checking that the table defines a function."""
    maps: dict[int, dict[int, int]] = {1: {}, 2: {}}
    for r in rows(table_dir, "idd"):
        l3 = int(r["level3_id"])
        for level in (1, 2):
            v = int(r[f"level{level}_id"])
            assert maps[level].setdefault(l3, v) == v, f"level3 {l3} maps to two level{level} ids"
    return maps


def make_idd(root: Path, level3: np.ndarray, extra: dict[int, np.ndarray] | None = None) -> None:
    seq, stem = "201", "frame0029"
    save(root / "leftImg8bit" / "train" / seq / f"{stem}_leftImg8bit.png", rgb_image(*level3.shape))
    save(root / "gtFine" / "train" / seq / f"{stem}_gtFine_labellevel3Ids.png", level3)
    for level, arr in (extra or {}).items():
        save(root / "gtFine" / "train" / seq / f"{stem}_gtFine_labellevel{level}Ids.png", arr)


def test_idd_levels_every_value(tmp_path: Path, table_dir: Path) -> None:
    maps = level_maps(table_dir)  # level3 -> level1/level2 is a function
    assert maps[1][255] == 255 and maps[2][255] == 255
    level3 = np.array([list(range(26)) + [255]], dtype=np.uint8)
    make_idd(tmp_path, level3)
    ds3 = create_dataset("idd", root=tmp_path, split="train")
    assert ds3.num_classes == 26 and ds3.load_mask(0).tolist() == level3.tolist()
    for level in (1, 2):
        ds = create_dataset("idd", root=tmp_path, split="train", level=level)
        assert ds.load_mask(0).tolist() == [[maps[level][v] for v in level3[0].tolist()]]
        assert ds.num_classes == len({v for k, v in maps[level].items() if k != 255})
    assert create_dataset("idd", root=tmp_path, split="train", level=1).num_classes == 7
    assert create_dataset("idd", root=tmp_path, split="train", level=2).num_classes == 16
    # names: each level-3 class names the labels it merges, from idd.csv
    by3: dict[int, list[str]] = {}
    for r in rows(table_dir, "idd"):
        if int(r["level3_id"]) != 255:
            by3.setdefault(int(r["level3_id"]), []).append(r["name"])
    assert ds3.classes == ["/".join(dict.fromkeys(by3[i])) for i in range(26)]
    assert ds3.classes[4] == "person/animal"
    with pytest.raises(DataError, match=r"labellevel3Ids\.png.*26"):
        make_idd(tmp_path / "bad", np.array([[0, 26]], dtype=np.uint8))
        create_dataset("idd", root=tmp_path / "bad", split="train").load_mask(0)


def test_idd_prefers_level_file_when_present(tmp_path: Path) -> None:
    level3 = np.array([[0, 9, 25]], dtype=np.uint8)
    level1 = np.array([[6, 6, 6]], dtype=np.uint8)  # deliberately not what level3 would give
    make_idd(tmp_path, level3, {1: level1})
    ds = create_dataset("idd", root=tmp_path, split="train", level=1)
    assert ds.samples[0].mask.name.endswith("_labellevel1Ids.png")
    assert ds.load_mask(0).tolist() == [[6, 6, 6]]


# --------------------------------------------------------------------------------------------- idd-rgb
def test_idd_rgb_every_color(tmp_path: Path, table_dir: Path) -> None:
    table = rows(table_dir, "idd_level3_rgb")
    colors = np.array([[[int(r["r"]), int(r["g"]), int(r["b"])] for r in table]], dtype=np.uint8)
    for split in ("train", "val"):
        save(tmp_path / split / "images" / "a.jpg", rgb_image(1, len(table)))
        save(tmp_path / split / "rgb_labels" / "a.png", colors)
    ds = create_dataset("idd-rgb", root=tmp_path, split="val")
    assert ds.load_mask(0).tolist() == [[int(r["level3_id"]) for r in table]]
    assert ds.num_classes == 26 and ds.classes[0] == "road"
    assert ds.palette.tolist() == [[int(r["r"]), int(r["g"]), int(r["b"])] for r in table if r["level3_id"] != "255"]


def test_idd_rgb_unknown_color_names_file_color_and_pixel(tmp_path: Path) -> None:
    mask = np.zeros((4, 5, 3), dtype=np.uint8)
    mask[2, 3] = (1, 2, 3)
    save(tmp_path / "train" / "images" / "b.png", rgb_image(4, 5))
    path = save(tmp_path / "train" / "rgb_labels" / "b.png", mask)
    ds = create_dataset("idd-rgb", root=tmp_path, split="train")
    with pytest.raises(DataError) as err:
        ds.load_mask(0)
    msg = str(err.value)
    assert str(path) in msg and "(1, 2, 3)" in msg and "x=3, y=2" in msg


# ------------------------------------------------------------------------------------------ oxford pet
def make_pet(root: Path, n: int = 20) -> list[str]:
    stems = [f"Abyssinian_{i}" for i in range(1, n + 1)]
    tri = np.array([[1, 2, 3]], dtype=np.uint8)
    for s in stems:
        save(root / "images" / f"{s}.jpg", rgb_image(1, 3))
        save(root / "annotations" / "trimaps" / f"{s}.png", tri)
    (root / "annotations" / "trainval.txt").write_text("".join(f"{s} 1 1 1\n" for s in stems[:-2]))
    (root / "annotations" / "test.txt").write_text("".join(f"{s} 1 1 1\n" for s in stems[-2:]))
    return stems


def test_oxford_pet_trimaps_and_splits(tmp_path: Path, table_dir: Path) -> None:
    stems = make_pet(tmp_path)
    table = rows(table_dir, "oxford_pet")
    ds = create_dataset("oxford-pet", root=tmp_path, split="trainval")
    expected = {int(r["trimap_value"]): int(r["train_id"]) for r in table}
    assert ds.load_mask(0).tolist() == [[expected[1], expected[2], expected[3]]] == [[0, 1, 2]]
    assert ds.classes == [r["name"] for r in sorted(table, key=lambda r: int(r["train_id"]))]
    binary = create_dataset("oxford-pet", root=tmp_path, split="trainval", binary=True)
    assert binary.load_mask(0).tolist() == [[0, 1, 255]] and binary.num_classes == 2
    assert [s.name for s in create_dataset("oxford-pet", root=tmp_path, split="test").samples] == stems[-2:]
    train = [s.name for s in create_dataset("oxford-pet", root=tmp_path, split="train").samples]
    val = [s.name for s in create_dataset("oxford-pet", root=tmp_path, split="val").samples]
    assert len(val) == 2 and len(train) == 16 and set(train) | set(val) == set(stems[:-2])
    assert not set(train) & set(val)
    assert val == [s.name for s in create_dataset("oxford-pet", root=tmp_path, split="val").samples]
    other = [s.name for s in create_dataset("oxford-pet", root=tmp_path, split="val", seed=1).samples]
    assert len(other) == 2


# ---------------------------------------------------------------------------------------------- camvid
def make_camvid(root: Path, values: np.ndarray, list_file: bool = True) -> None:
    for split in ("train", "val"):
        names = ["0001TP_006690.png", "0001TP_006720.png"]
        for n in names:
            save(root / split / n, rgb_image(*values.shape))
            save(root / f"{split}annot" / n, values)
        if list_file:
            (root / f"{split}.txt").write_text(
                "".join(f"/SegNet/CamVid/{split}/{n} /SegNet/CamVid/{split}annot/{n}\n" for n in names)
            )


def test_camvid_every_value(tmp_path: Path, table_dir: Path) -> None:
    values = np.array([list(range(12))], dtype=np.uint8)
    make_camvid(tmp_path, values)
    ds = create_dataset("camvid", root=tmp_path, split="train")
    table = rows(table_dir, "camvid")
    expected = [int(r["train_id"]) for r in table]  # 0..10, then Unlabelled -> 255
    assert ds.load_mask(0).tolist() == [expected]
    assert ds.classes == [r["name"] for r in table if r["train_id"] != "255"]
    assert [s.name for s in ds.samples] == ["0001TP_006690", "0001TP_006720"]
    assert ds.samples[0].image == tmp_path / "train" / "0001TP_006690.png"


def test_camvid_without_list_and_bad_value(tmp_path: Path) -> None:
    make_camvid(tmp_path, np.array([[0, 12, 200]], dtype=np.uint8), list_file=False)
    ds = create_dataset("camvid", root=tmp_path, split="val")
    assert len(ds) == 2
    with pytest.raises(DataError) as err:
        ds.load_mask(1)
    assert str(tmp_path / "valannot" / "0001TP_006720.png") in str(err.value)
    assert "12, 200" in str(err.value)
