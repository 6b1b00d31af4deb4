"""Messy real data: no silent wrong results (16-bit and EXIF-rotated images, palette-mode masks,
class counts over all splits, bad samples found at any point, Excel palette files, orphan masks)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distilseg.data import create_dataset, validate_dataset
from distilseg.data.folder import read_palette_file
from distilseg.inference.segmenter import read_image, to_rgb_array
from distilseg.training.datamodule import quick_check
from distilseg.training.train import run_training
from distilseg.errors import DataError
from test_train_support import tiny_cfg

pytestmark = pytest.mark.usefixtures("run_config_check")

RNG = np.random.default_rng(0)


def save(path: Path, arr: np.ndarray | Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
    im.save(path, **kw)
    return path


def rgb(h: int = 8, w: int = 12) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def folder(base: Path, n: int, values: list[int] | None = None, h: int = 8, w: int = 12) -> Path:
    for i in range(n):
        save(base / "images" / f"s{i}.png", rgb(h, w))
        v = values[i] if values else i % 3
        m = np.zeros((h, w), dtype=np.uint8)
        m[: h // 2] = v
        save(base / "masks" / f"s{i}.png", m)
    return base


def camvid(root: Path, n: int = 6, n_val: int = 2, h: int = 16, w: int = 16) -> Path:
    for split, k in (("train", n), ("val", n_val)):
        for i in range(k):
            save(root / split / f"{split}{i}.png", rgb(h, w))
            save(root / f"{split}annot" / f"{split}{i}.png", RNG.integers(0, 12, (h, w)).astype(np.uint8))
    return root


def corrupt_pixels(path: Path) -> None:
    """Damage the PNG pixel data but keep the header and the IEND chunk: only a full decode notices."""
    data = bytearray(path.read_bytes())
    i = data.find(b"IDAT")
    for k in range(i + 20, i + 60):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------------------- 1. 16-bit


def test_16bit_gray_png_is_scaled_not_white_everywhere(tmp_path: Path) -> None:
    gray16 = np.array([[0, 255, 256, 1000], [32768, 40000, 65280, 65535]], dtype=np.uint16)
    img = save(tmp_path / "images" / "a.png", gray16)
    assert Image.open(img).mode in ("I;16", "I")
    save(tmp_path / "masks" / "a.png", np.zeros((2, 4), dtype=np.uint8))
    expected = np.repeat((gray16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2)  # 0 0 1 3 / 128 156 255 255

    ds = create_dataset("folder", root=tmp_path, num_classes=2)
    assert np.array_equal(ds.load_image(0), expected)  # training
    assert validate_dataset(ds, full=True).ok  # data inspect --validate
    assert np.array_equal(read_image(img), expected)  # predict
    with Image.open(img) as im:
        assert np.array_equal(to_rgb_array(im), expected)  # Segmenter.predict on a PIL image


def test_float_image_is_refused_in_one_line(tmp_path: Path) -> None:
    save(tmp_path / "images" / "f.tif", np.full((4, 4), 0.5, dtype=np.float32))
    save(tmp_path / "masks" / "f.png", np.zeros((4, 4), dtype=np.uint8))
    ds = create_dataset("folder", root=tmp_path, num_classes=2)
    with pytest.raises(DataError, match=r"f\.tif: floating-point image") as err:
        ds.load_image(0)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"f\.tif: floating-point image"):
        read_image(tmp_path / "images" / "f.tif")
    with pytest.raises(DataError, match=r"1 bad sample.*f\.tif: floating-point image"):
        validate_dataset(ds, full=False)  # the header check sees the mode


# ------------------------------------------------------------------------------------------ 2. EXIF


def _exif(orientation: int) -> Image.Exif:
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex


def test_exif_orientation_is_applied_everywhere(tmp_path: Path) -> None:
    stored = rgb(4, 6)  # 6 wide, 4 high as stored; orientation 6 = shown turned 90 degrees clockwise
    img = save(tmp_path / "images" / "p.png", stored, exif=_exif(6))
    shown = np.rot90(stored, k=-1)  # 4 wide, 6 high
    mask = np.zeros((6, 4), dtype=np.uint8)
    mask[:, :2] = 1
    save(tmp_path / "masks" / "p.png", mask)  # drawn on the image as displayed

    ds = create_dataset("folder", root=tmp_path, num_classes=2)
    assert np.array_equal(ds.load_image(0), shown)
    assert ds[0]["image"].shape == (3, 6, 4) and ds[0]["mask"].shape == (6, 4)
    assert validate_dataset(ds, full=False).ok and validate_dataset(ds, full=True).ok
    assert np.array_equal(read_image(img), shown)
    with Image.open(img) as im:
        assert np.array_equal(to_rgb_array(im), shown)


@pytest.mark.parametrize("full", [False, True])
def test_mask_drawn_on_unrotated_pixels_names_the_orientation(tmp_path: Path, full: bool) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgb(4, 6)).save(buf, format="JPEG", exif=_exif(8))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "j.jpg").write_bytes(buf.getvalue())
    save(tmp_path / "masks" / "j.png", np.zeros((4, 6), dtype=np.uint8))  # the stored (unrotated) size
    ds = create_dataset("folder", root=tmp_path, num_classes=2)
    with pytest.raises(DataError, match=r"j\.png: .*EXIF orientation tag \(8\)") as err:
        validate_dataset(ds, full=full)
    assert "--skip-bad" in str(err.value)
    with pytest.raises(DataError, match=r"j\.png: mask is 6x4 .* is 4x6 after applying the EXIF orientation"):
        ds[0]


# ----------------------------------------------------------------------------------- 3. P-mode masks


def test_palette_mode_mask_is_decoded_by_color_not_index(tmp_path: Path) -> None:
    pal = tmp_path / "palette.csv"
    pal.write_text("id,name,r,g,b\n0,road,128,64,128\n1,car,0,0,142\n2,sky,70,130,180\n")
    save(tmp_path / "images" / "m.png", rgb(2, 3))
    p = Image.fromarray(np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8), mode="P")
    # the PNG's own palette is in another order: index 0 = sky, 1 = road, 2 = car
    p.putpalette([70, 130, 180, 128, 64, 128, 0, 0, 142] + [0] * (256 * 3 - 9))
    save(tmp_path / "masks" / "m.png", p)
    ds = create_dataset("folder", root=tmp_path, palette=str(pal))
    assert ds.load_mask(0).tolist() == [[2, 0, 1], [1, 0, 2]]
    assert ds.classes == ["road", "car", "sky"]


# ----------------------------------------------------------------------------- 6. class count, values


def test_class_count_is_inferred_over_all_splits(tmp_path: Path) -> None:
    folder(tmp_path / "train", 3, values=[0, 1, 2])
    folder(tmp_path / "val", 2, values=[1, 4])  # class 4 only in val
    train = create_dataset("folder", root=tmp_path, split="train")
    val = create_dataset("folder", root=tmp_path, split="val")
    assert train.num_classes == val.num_classes == 5
    assert quick_check(val, False, like=train) is val


def test_rare_val_class_trains_with_enough_outputs(tmp_path: Path) -> None:
    folder(tmp_path / "train", 4, values=[0, 1, 2, 1], h=16, w=16)
    folder(tmp_path / "val", 2, values=[1, 4], h=16, w=16)
    out = run_training(tiny_cfg(tmp_path / "run", dataset="folder", root=str(tmp_path), dataset_args={},
                                model_args={"depth": 2, "base_width": 4}, img_size=[16, 16], epochs=1,
                                batch_size=2))
    cfg = json.loads((out / "best" / "config.json").read_text())
    assert cfg["num_classes"] == 5 and len(cfg["metrics"]["per_class"]) == 5


def test_mask_value_beyond_num_classes_fails_before_the_first_step(tmp_path: Path) -> None:
    folder(tmp_path / "train", 6, values=[0, 1, 2, 1, 0, 7], h=16, w=16)  # past the first three
    folder(tmp_path / "val", 2, values=[0, 1], h=16, w=16)
    out = tmp_path / "run"
    cfg = tiny_cfg(out, dataset="folder", root=str(tmp_path), dataset_args={"num_classes": 3},
                   model_args={"depth": 2, "base_width": 4}, img_size=[16, 16], epochs=1, batch_size=2)
    with pytest.raises(DataError, match=r"train/masks/s5\.png: mask holds value 7 but the dataset has 3 classes"):
        run_training(cfg)
    assert not (out / "checkpoints" / "last.ckpt").exists()


# ------------------------------------------------------------------------- 11. bad samples past three


def test_color_mask_past_the_first_three_is_caught_by_the_header_check(tmp_path: Path) -> None:
    root = camvid(tmp_path)
    save(root / "trainannot" / "train4.png", rgb(16, 16))
    ds = create_dataset("camvid", root=root, split="train")
    with pytest.raises(DataError, match=r"train4\.png: mask is a color image \(RGB\)"):
        validate_dataset(ds, full=False)


def test_worker_error_reaches_the_user_as_one_line(tmp_path: Path) -> None:
    root = camvid(tmp_path)
    corrupt_pixels(root / "train" / "train4.png")
    ds = create_dataset("camvid", root=root, split="train")
    assert validate_dataset(ds, full=False).ok  # header and end look fine: only decoding finds it
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    with pytest.raises(DataError) as err:
        list(loader)
    msg = str(err.value)
    assert msg.startswith(f"{root / 'train' / 'train4.png'}: cannot read image") and "\n" not in msg
    assert "Traceback" not in msg


def test_skip_bad_skips_samples_that_fail_mid_epoch(tmp_path: Path, capfd) -> None:
    root = camvid(tmp_path, n_val=5)
    corrupt_pixels(root / "train" / "train4.png")
    bad_mask = np.zeros((16, 16), dtype=np.uint8)
    bad_mask[0, 0] = 40  # not a CamVid value: only the decoder sees it
    save(root / "valannot" / "val4.png", bad_mask)
    cfg = tiny_cfg(tmp_path / "run", dataset="camvid", root=str(root), dataset_args={},
                   model_args={"depth": 2, "base_width": 4}, img_size=[16, 16], epochs=1, batch_size=2,
                   num_workers=1)
    with pytest.raises(DataError, match=r"train4\.png: cannot read image"):
        run_training(dict(cfg, out=str(tmp_path / "strict")))
    out = run_training(dict(cfg, skip_bad=True))
    assert (out / "best" / "model.safetensors").is_file()
    err = capfd.readouterr().err
    assert "skipped bad sample train4 of split 'train'" in err
    assert "skipped bad sample val4 of split 'val'" in err and "40" in err


def test_skip_bad_substitutes_in_process(tmp_path: Path) -> None:
    root = camvid(tmp_path, n=4)
    corrupt_pixels(root / "train" / "train1.png")
    ds = create_dataset("camvid", root=root, split="train")
    ds.on_bad = "replace"
    item = ds[1]
    assert item["name"] == "train2" and ds.bad_found.keys() == {1}
    ds.on_bad = "ignore"
    assert bool((ds[1]["mask"] == 255).all())  # scores nothing in validation


# ------------------------------------------------------------------------- 16. palette files, orphans


def test_palette_csv_with_excel_bom_is_accepted(tmp_path: Path) -> None:
    pal = tmp_path / "p.csv"
    pal.write_text("id,name,r,g,b\r\n0,road,128,64,128\r\n1,car,0,0,142\r\n", encoding="utf-8-sig")
    assert pal.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_palette_file(pal) == [(0, "road", (128, 64, 128)), (1, "car", (0, 0, 142))]


def test_palette_parse_error_names_the_line(tmp_path: Path) -> None:
    pal = tmp_path / "p.csv"
    pal.write_text("id,name,r,g,b\n0,road,128,64,128\n1,car,0,x,142\n")
    with pytest.raises(DataError, match=r"p\.csv: line 3: not a palette entry"):
        read_palette_file(pal)
    pal.write_text("id;name;r;g;b\n0;road;1;2;3\n")
    with pytest.raises(DataError, match=r"p\.csv: line 1: not a palette file: .* lacks"):
        read_palette_file(pal)


def test_orphan_mask_is_noted_and_counted(tmp_path: Path, capsys) -> None:
    from distilseg.cli import main

    folder(tmp_path, 2)
    save(tmp_path / "masks" / "lonely.png", np.zeros((8, 12), dtype=np.uint8))
    assert main(["data", "inspect", "--dataset", "folder", "--root", str(tmp_path), "--num-classes", "3",
                 "--num-samples", "0", "--out", str(tmp_path / "st")]) == 0
    captured = capsys.readouterr()
    assert "1 mask(s) without an image, ignored: lonely.png" in captured.err
    assert "1 mask(s) without an image ignored" in captured.out
    stats = json.loads((tmp_path / "st" / "stats.json").read_text())
    assert stats["num_images"] == 2 and stats["orphan_masks"] == [str(tmp_path / "masks" / "lonely.png")]
