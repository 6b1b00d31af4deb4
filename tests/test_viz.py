"""Pictures: exact palette colors and blending, valid PNGs, aspect-preserving grids, no pyplot."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distilseg.viz import colorize, default_palette, overlay, palette_lut
from distilseg.viz import save_confusion, save_curves, save_grid, save_legend, save_pareto
from distilseg.viz.pareto import pareto_front

PALETTE = np.array([[255, 0, 0], [0, 128, 0], [10, 20, 30]], dtype=np.uint8)


def _png(path: Path, min_side: int = 50, max_side: int = 4000) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert min_side <= im.width <= max_side and min_side <= im.height <= max_side, im.size
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > 1.0  # something was drawn
    assert not list(path.parent.glob(f".{path.name}.*.tmp"))  # atomic write left no temp file
    return arr


def test_colorize_exact_colors() -> None:
    mask = np.array([[0, 1, 2], [255, 3, 1]], dtype=np.uint8)
    out = colorize(mask, PALETTE)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert out.tolist() == [
        [[255, 0, 0], [0, 128, 0], [10, 20, 30]],
        [[0, 0, 0], [0, 0, 0], [0, 128, 0]],
    ]
    wide = np.array([[-1, 0], [300, 2]], dtype=np.int64)
    assert colorize(wide, PALETTE).tolist() == [[[0, 0, 0], [255, 0, 0]], [[0, 0, 0], [10, 20, 30]]]
    lut = palette_lut(default_palette(256))
    assert lut.shape == (256, 3) and lut[255].tolist() == [0, 0, 0] and lut[1].tolist() == [128, 0, 0]
    with pytest.raises(ValueError):
        colorize(np.zeros((2, 2), dtype=np.float32), PALETTE)


def test_overlay_blending_math() -> None:
    image = np.zeros((1, 3, 3), dtype=np.uint8)
    image[:] = (100, 52, 200)
    mask = np.array([[0, 1, 255]], dtype=np.uint8)
    out = overlay(image, mask, PALETTE, alpha=0.25)
    # 0.75 * (100, 52, 200) + 0.25 * (255, 0, 0) = (138.75, 39, 150) -> (139, 39, 150)
    # 0.75 * (100, 52, 200) + 0.25 * (0, 128, 0) = (75, 71, 150); ignore pixel unchanged
    assert out.tolist() == [[[139, 39, 150], [75, 71, 150], [100, 52, 200]]]
    assert overlay(image, mask, PALETTE, alpha=0.0).tolist() == image.tolist()
    assert overlay(image, mask, PALETTE, alpha=1.0)[0, :2].tolist() == [[255, 0, 0], [0, 128, 0]]
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, np.zeros((2, 3), dtype=np.uint8), PALETTE)
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, mask, PALETTE, alpha=1.5)


def _bbox(arr: np.ndarray, color: tuple[int, int, int]) -> tuple[int, int]:
    ys, xs = np.nonzero(np.all(np.abs(arr.astype(int) - np.array(color)) <= 2, axis=2))
    return ys.max() - ys.min() + 1, xs.max() - xs.min() + 1


def test_grid_cells_keep_aspect(tmp_path: Path) -> None:
    wide = np.zeros((40, 160, 3), dtype=np.uint8)
    wide[:] = (255, 0, 0)
    tall = np.zeros((120, 40, 3), dtype=np.uint8)
    tall[:] = (0, 0, 255)
    gray = np.full((40, 160, 3), 128, dtype=np.uint8)
    path = save_grid(
        [[wide, gray], [tall]], tmp_path / "grid.png", col_titles=["image", "pred"], row_titles=["a", "b"]
    )
    arr = _png(path)
    h, w = _bbox(arr, (255, 0, 0))
    assert w / h == pytest.approx(4.0, rel=0.05)
    h, w = _bbox(arr, (0, 0, 255))
    assert h / w == pytest.approx(3.0, rel=0.05)
    with pytest.raises(ValueError):
        save_grid([], tmp_path / "empty.png")


def test_save_confusion_small_and_large(tmp_path: Path) -> None:
    cm = np.array([[5, 1, 0], [0, 0, 0], [2, 2, 6]])
    _png(save_confusion(cm, ["road", "car", "sky"], tmp_path / "cm.png"))
    big = np.random.default_rng(0).integers(0, 50, (21, 21))
    arr = _png(save_confusion(big, [f"c{i}" for i in range(21)], tmp_path / "cm21.png", normalize=False))
    assert arr.shape[0] > 700  # grows with the class count
    with pytest.raises(ValueError, match="class names"):
        save_confusion(cm, ["a", "b"], tmp_path / "bad.png")


def test_save_curves_legend_pareto(tmp_path: Path) -> None:
    history = [
        {"epoch": 0, "train_loss": 1.0, "val_loss": 1.1, "val_mIoU": 0.2},
        {"epoch": 1, "train_loss": 0.7},
        {"epoch": 2, "train_loss": 0.5, "val_loss": float("nan"), "val_mIoU": 0.4},
    ]
    _png(save_curves(history, tmp_path / "curves.png"))
    _png(save_curves([], tmp_path / "empty_curves.png"))
    legend = _png(save_legend(["road", "car", "sky"], PALETTE, tmp_path / "legend.png"), min_side=20)
    assert np.all(legend == (255, 0, 0), axis=2).any()  # the swatches carry the exact palette colors
    assert np.all(legend == (0, 128, 0), axis=2).any()
    rows = [
        {"name": "teacher", "latency_ms": 20.0, "mIoU": 0.70, "params": 40e6},
        {"name": "student", "latency_ms": 4.0, "mIoU": 0.62, "params": 2e6},
        {"name": "int8", "latency_ms": 2.5, "mIoU": 0.60, "params": 2e6},
        {"name": "failed", "latency_ms": None, "mIoU": 0.5, "params": 1e6},
    ]
    _png(save_pareto(rows, tmp_path / "pareto.png"))


def test_pareto_front() -> None:
    # (latency, mIoU): b dominates d (faster and better); a, b, c trade off
    points = [(2.0, 0.5), (4.0, 0.6), (10.0, 0.7), (5.0, 0.55)]
    assert pareto_front(points) == [0, 1, 2]


def test_no_pyplot_imported() -> None:
    code = (
        "import sys, tempfile, numpy as np\n"
        "from distilseg.viz import save_grid, save_curves\n"
        "d = tempfile.mkdtemp()\n"
        "save_grid([[np.zeros((8, 8, 3), np.uint8)]], d + '/g.png')\n"
        "save_curves([{'epoch': 0, 'train_loss': 1.0}], d + '/c.png')\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
