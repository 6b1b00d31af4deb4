"""Built-in synthetic road scenes: deterministic by seed, no files, learnable but not trivial.

Why: tests, demos and smoke trainings need a dataset that exists everywhere and has the structure of
a driving scene (horizon, road trapezoid, sidewalks, buildings, trees, cars, people) with texture,
color jitter and noise, so that a model has to learn shapes and context rather than one color per class.
"""
from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .base import Sample, SegDataset
from .base import register_dataset

CLASSES = ["sky", "road", "sidewalk", "building", "vegetation", "car", "person"]
SKY, ROAD, SIDEWALK, BUILDING, VEGETATION, CAR, PERSON = range(7)
PALETTE = np.array(
    [[70, 130, 180], [128, 64, 128], [244, 35, 232], [70, 70, 70], [107, 142, 35], [0, 0, 142], [220, 20, 60]],
    dtype=np.uint8,
)
DEFAULT_COUNTS = {"train": 160, "val": 40, "test": 40}
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
IGNORE = 255


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Blocky low-frequency noise in [-1, 1] (coarse grid repeated up), cheap texture."""
    gh, gw = -(-h // cell) + 1, -(-w // cell) + 1
    coarse = rng.uniform(-1, 1, size=(gh, gw)).astype(np.float32)
    up = np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)
    off_y, off_x = rng.integers(0, cell, size=2)
    return up[off_y : off_y + h, off_x : off_x + w]


def _window(h: int, w: int, y0: float, y1: float, x0: float, x1: float):
    """Clipped integer box -> (slices, local row coords (n,1), local col coords (1,m)) or None if empty."""
    a, b = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)) + 1, h)
    c, d = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)) + 1, w)
    if a >= b or c >= d:
        return None
    ys = np.arange(a, b, dtype=np.float32)[:, None]
    xs = np.arange(c, d, dtype=np.float32)[None, :]
    return (slice(a, b), slice(c, d)), ys, xs


def render_scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (image HxWx3 uint8, mask HxW uint8 with ids 0-6 and a few 255 at object borders).

    Objects are drawn inside their bounding boxes only, so one 96x128 scene takes about a millisecond.
    """
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    mask = np.full((h, w), SKY, dtype=np.uint8)

    horizon = int(h * rng.uniform(0.35, 0.55))
    vp = w * rng.uniform(0.35, 0.65)
    below = ys >= horizon
    t = np.clip((ys - horizon) / max(h - horizon, 1), 0.0, 1.0)  # 0 at horizon, 1 at the bottom
    half_k, walk_k = w * rng.uniform(0.3, 0.5), w * rng.uniform(0.12, 0.25)
    half = t * half_k + 1.0
    walk = t * walk_k
    adx = np.abs(xs - vp)
    road = below & (adx < half)
    sidewalk = below & (adx < half + walk) & ~road
    mask[horizon:] = VEGETATION  # grass verge by default
    mask[sidewalk] = SIDEWALK
    mask[road] = ROAD

    obj_color = np.zeros((h, w, 3), dtype=np.float32)
    has_color = np.zeros((h, w), dtype=bool)
    windows = np.zeros((h, w), dtype=bool)
    ignore = np.zeros((h, w), dtype=bool)

    # buildings: blocks standing on the horizon on both sides
    for _ in range(int(rng.integers(2, 6))):
        bw = int(w * rng.uniform(0.1, 0.3))
        x0 = int(rng.uniform(0, vp - bw * 0.5)) if rng.random() < 0.5 else int(rng.uniform(vp, w - bw * 0.5))
        top, base = int(horizon - h * rng.uniform(0.1, 0.4)), horizon + int(h * 0.02)
        py, px = int(rng.integers(5, 9)), int(rng.integers(5, 10))
        box = _window(h, w, top, base - 1, x0, x0 + bw - 1)
        if box is None:
            continue
        sl, ly, lx = box
        mask[sl] = BUILDING
        has_color[sl] = False
        ignore[sl] = False
        win = ((ly - top) % py >= py // 2) & ((lx - x0) % px >= px // 2) & (ly < base - 2)
        windows[sl] = win

    # trees: ellipse blobs near the horizon
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = rng.uniform(0, w), horizon - rng.uniform(0, h * 0.2)
        ry, rx = h * rng.uniform(0.06, 0.15), w * rng.uniform(0.04, 0.1)
        if abs(cx - vp) < w * 0.12:
            continue
        box = _window(h, w, cy - ry, min(cy + ry, horizon + 2), cx - rx, cx + rx)
        if box is None:
            continue
        sl, ly, lx = box
        blob = (((ly - cy) / ry) ** 2 + ((lx - cx) / rx) ** 2 < 1.0) & (ly < horizon + 3)
        mask[sl][blob] = VEGETATION

    # cars on the road, far ones first so that near ones cover them
    wheels = np.zeros((h, w), dtype=bool)
    for ct in sorted(rng.uniform(0.15, 0.95, size=int(rng.integers(1, 4)))):
        cy = horizon + ct * (h - horizon)
        scale = 0.15 + ct
        cw, ch = w * 0.12 * scale, h * 0.09 * scale
        cx = vp + rng.uniform(-0.6, 0.6) * (ct * w * 0.35)
        r = max(ch * 0.22, 1.0)
        color = rng.uniform(20, 235, size=3).astype(np.float32)
        box = _window(h, w, cy - ch * 1.6, cy + r, cx - cw / 2, cx + cw / 2)
        if box is None:
            continue
        sl, ly, lx = box
        body = (np.abs(lx - cx) < cw / 2) & (ly < cy) & (ly > cy - ch)
        roof = (np.abs(lx - cx) < cw * 0.3) & (ly <= cy - ch) & (ly > cy - ch * 1.6)
        wh = (((lx - (cx - cw * 0.3)) ** 2 + (ly - cy) ** 2) < r * r) | (((lx - (cx + cw * 0.3)) ** 2 + (ly - cy) ** 2) < r * r)
        shape = body | roof | wh
        mask[sl][shape] = CAR
        obj_color[sl][shape] = color
        has_color[sl] |= shape
        wheels[sl] = (wheels[sl] & ~shape) | wh
        ignore[sl] &= ~shape
        if rng.random() < 0.5:  # ambiguous border pixels: ignore
            inner = (np.abs(lx - cx) < cw / 2 - 1) & (ly < cy - 1) & (ly > cy - ch + 1)
            ignore[sl] |= body & ~inner

    # persons: thin upright shapes on the sidewalks
    for _ in range(int(rng.integers(0, 4))):
        pt = rng.uniform(0.2, 0.9)
        py = horizon + pt * (h - horizon)
        side = -1 if rng.random() < 0.5 else 1
        px = vp + side * (pt * half_k + rng.uniform(0.1, 0.9) * max(pt * walk_k, 2))
        ph = h * (0.08 + 0.25 * pt)
        pw = max(ph * 0.18, 1.5)
        color = rng.uniform(30, 220, size=3).astype(np.float32)
        box = _window(h, w, py - ph * 0.88 - pw, py, px - pw, px + pw)
        if box is None:
            continue
        sl, ly, lx = box
        torso = (np.abs(lx - px) < pw / 2) & (ly < py) & (ly > py - ph * 0.8)
        head = ((lx - px) ** 2 + (ly - (py - ph * 0.88)) ** 2) < (pw * 0.55) ** 2
        shape = torso | head
        mask[sl][shape] = PERSON
        obj_color[sl][shape] = color
        has_color[sl] |= shape
        wheels[sl] &= ~shape
        ignore[sl] &= ~shape

    # colors: per-image jitter of each class color, textures, details, noise
    base = np.array(
        [[120, 170, 230], [90, 90, 95], [170, 160, 150], [150, 110, 90], [60, 130, 50], [0, 0, 0], [0, 0, 0]],
        dtype=np.float32,
    )
    base += rng.uniform(-25, 25, size=base.shape).astype(np.float32)
    amp_c = np.array([0, 10, 8, 15, 30, 0, 0], dtype=np.float32)
    amp_f = np.array([0, 6, 4, 5, 12, 0, 0], dtype=np.float32)
    tex = _smooth_noise(rng, h, w, int(rng.integers(3, 7)))
    fine = rng.random((h, w), dtype=np.float32) - np.float32(0.5)
    # planar (3, H, W) float image: per-channel LUT gathers and broadcast writes are much cheaper than HWC
    img = np.take(np.ascontiguousarray(base.T), mask, axis=1)
    img += np.take(amp_c, mask) * tex + np.take(amp_f, mask) * fine * np.float32(3.0)
    img += (mask == SKY) * (ys * np.float32(60.0 / max(horizon, 1)))
    yi, xi = np.arange(h)[:, None], np.arange(w)[None, :]
    tiles = ((yi % 4) == 0) | ((xi % 6) == 0)
    img -= ((mask == SIDEWALK) & tiles) * np.float32(25)
    dark = np.float32(rng.uniform(20, 60)) + np.array([0, 5, 15], dtype=np.float32)[:, None, None]
    np.copyto(img, dark, where=windows & (mask == BUILDING))
    lane = (mask == ROAD) & (adx < 0.04 * half + 0.5) & (((yi - horizon) // max(h // 16, 2)) % 2 == 0)
    np.copyto(img, np.float32(230 + rng.uniform(-15, 15)), where=lane)
    np.copyto(img, obj_color.transpose(2, 0, 1), where=has_color)
    np.copyto(img, np.float32(15), where=wheels & (mask == CAR))
    img += (rng.random((h, w), dtype=np.float32) - np.float32(0.5)) * np.float32(12)
    img *= np.float32(rng.uniform(0.8, 1.2))  # global exposure
    mask[ignore] = IGNORE
    np.clip(img, 0, 255, out=img)
    return np.ascontiguousarray(img.transpose(1, 2, 0)).astype(np.uint8), mask


@register_dataset
class SyntheticScenes(SegDataset):
    name = "synthetic"
    description = "Built-in synthetic road scenes (7 classes, no files, deterministic by seed)"
    requires_root = False
    options = ("num_images", "size", "seed")
    option_types = {"num_images": "count", "size": "size", "seed": "count"}

    @staticmethod
    def default_classes() -> tuple[list[str], np.ndarray]:
        return list(CLASSES), PALETTE.copy()

    def __init__(self, root=None, split="train", transform=None, num_images: int | None = None,
                 size: tuple[int, int] | list[int] = (96, 128), seed: int = 0) -> None:
        super().__init__(root, split, transform, CLASSES, PALETTE)
        n = DEFAULT_COUNTS[split] if num_images is None else int(num_images)
        try:
            hh, ww = (int(v) for v in size)
        except (TypeError, ValueError):
            raise UsageError(f"synthetic: size must be (H, W), not {size!r}") from None
        if n < 0 or hh < 16 or ww < 16:
            raise UsageError(f"synthetic: need num_images >= 0 and size >= 16x16, got {n} and {size}")
        self.size = (hh, ww)
        self.seed = int(seed)
        self.samples = [Sample(None, None, f"synthetic_{split}_{i:05d}") for i in range(n)]
        self._cache: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None

    def scene(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(image, mask) for index ``i``; the seed is (seed, split, i), so splits never repeat each other."""
        cache = self._cache  # one read: other threads may replace it meanwhile
        if cache is not None and cache[0] == i:
            return cache[1]
        if not 0 <= i < len(self.samples):
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, SPLIT_IDS[self.split], i])
        pair = render_scene(rng, *self.size)
        self._cache = (i, pair)
        return pair

    def load_image(self, i: int) -> np.ndarray:
        return self.scene(i)[0].copy()

    def load_mask(self, i: int) -> np.ndarray:
        return self.scene(i)[1].copy()
