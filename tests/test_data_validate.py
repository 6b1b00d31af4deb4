"""Validation catches broken files (quick and full mode) and names them; skip_bad drops them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distilseg.data import create_dataset, validate_dataset
from distilseg.errors import DataError


pytestmark = pytest.mark.usefixtures("run_config_check")


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def camvid(root: Path, n: int = 5, h: int = 12, w: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        save(root / "train" / f"f{i}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        save(root / "trainannot" / f"f{i}.png", rng.integers(0, 12, (h, w)).astype(np.uint8))
    return root


def truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_clean_dataset_passes_both_modes(tmp_path: Path) -> None:
    ds = create_dataset("camvid", root=camvid(tmp_path), split="train")
    for full in (True, False):
        report = validate_dataset(ds, full=full)
        assert report.ok and report.checked == 5 and report.bad == []
    assert validate_dataset(create_dataset("synthetic", split="val", num_images=3)).ok


@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize("which", ["train", "trainannot"])
def test_truncated_png_anywhere_is_caught(tmp_path: Path, full: bool, which: str) -> None:
    root = camvid(tmp_path)
    bad = root / which / "f4.png"  # last sample: the quick mode decodes only the first few
    truncate(bad)
    ds = create_dataset("camvid", root=root, split="train")
    with pytest.raises(DataError) as err:
        validate_dataset(ds, full=full)
    assert str(bad) in str(err.value) and "truncated" in str(err.value) and "--skip-bad" in str(err.value)


def test_truncated_jpeg_is_caught_quick(tmp_path: Path) -> None:
    root = tmp_path
    for i in range(4):
        save(root / "images" / f"a{i}.jpg", np.full((16, 16, 3), 90 + i, dtype=np.uint8))
        save(root / "masks" / f"a{i}.png", np.zeros((16, 16), dtype=np.uint8))
    truncate(root / "images" / "a3.jpg", 0.8)
    ds = create_dataset("folder", root=root, num_classes=2)
    with pytest.raises(DataError, match=r"a3\.jpg.*truncated"):
        validate_dataset(ds, full=False)


@pytest.mark.parametrize("full", [True, False])
def test_wrong_size_mask(tmp_path: Path, full: bool) -> None:
    root = camvid(tmp_path)
    save(root / "trainannot" / "f3.png", np.zeros((12, 15), dtype=np.uint8))
    ds = create_dataset("camvid", root=root, split="train")
    with pytest.raises(DataError, match=r"trainannot/f3\.png: mask is 15x12.*16x12"):
        validate_dataset(ds, full=full)


def test_bad_mask_value_and_skip_bad(tmp_path: Path) -> None:
    root = camvid(tmp_path)
    save(root / "trainannot" / "f2.png", np.full((12, 16), 40, dtype=np.uint8))
    ds = create_dataset("camvid", root=root, split="train")
    with pytest.raises(DataError, match=r"trainannot/f2\.png: mask holds values .*40"):
        validate_dataset(ds, full=True)
    report = validate_dataset(ds, full=True, skip_bad=True)
    assert [b.name for b in report.bad] == ["f2"] and report.removed == 1
    assert [s.name for s in ds.samples] == ["f0", "f1", "f3", "f4"]
    assert validate_dataset(ds, full=True).ok


def test_missing_mask_file(tmp_path: Path) -> None:
    root = camvid(tmp_path)
    ds = create_dataset("camvid", root=root, split="train")
    (root / "trainannot" / "f1.png").unlink()
    with pytest.raises(DataError, match=r"trainannot/f1\.png.*not found"):
        validate_dataset(ds, full=False)


def test_empty_split_and_wrong_root(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    (tmp_path / "valannot").mkdir()
    ds = create_dataset("camvid", root=tmp_path, split="val")
    with pytest.raises(DataError, match=f"{tmp_path}.*split 'val'.*empty"):
        validate_dataset(ds, full=False)
    with pytest.raises(DataError, match=f"{tmp_path}: not a CamVid.*{tmp_path / 'trainannot'}"):
        create_dataset("camvid", root=tmp_path, split="train")


@pytest.mark.parametrize("full", [True, False])
def test_unreadable_image(tmp_path: Path, full: bool) -> None:
    root = camvid(tmp_path)
    bad = root / "train" / "f3.png"
    bad.write_bytes(b"not an image at all" * 10)
    ds = create_dataset("camvid", root=root, split="train")
    with pytest.raises(DataError) as err:
        validate_dataset(ds, full=full)
    assert str(bad) in str(err.value)
    assert "cannot read image" in str(load_error(ds, 3))


def load_error(ds, i: int) -> DataError:
    with pytest.raises(DataError) as err:
        ds.load_image(i)
    return err.value
