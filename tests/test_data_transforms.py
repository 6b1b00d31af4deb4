"""Train/eval transforms keep image and mask aligned, fill with ignore, and give long masks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from distilseg.data import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform, build_train_transform
from distilseg.errors import UsageError

MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
STD = np.array(IMAGENET_STD, dtype=np.float32)


def block_pair(h: int = 64, w: int = 64, block: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mask of 8x8 blocks with ids 0-9; the image encodes the id (red = 20 * id + 30), so the mask is
    derivable from the image content at every pixel."""
    rng = np.random.default_rng(seed)
    mask = np.kron(rng.integers(0, 10, (h // block, w // block)), np.ones((block, block), dtype=np.int64)).astype(np.uint8)
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[..., 0] = mask * 20 + 30
    image[..., 1] = 255 - image[..., 0]
    return image, mask


def denorm(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy() * STD + MEAN


def interior(m: np.ndarray, r: int = 2) -> np.ndarray:
    """Pixels whose (2r+1)^2 neighbourhood holds one label (away from edges, where linear image
    interpolation blends neighbouring blocks)."""
    pad = np.pad(m, r, constant_values=255)  # the crop border counts as an edge
    same = np.ones(m.shape, dtype=bool)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            same &= pad[dy : dy + m.shape[0], dx : dx + m.shape[1]] == m
    return same & (m != 255)


def test_train_transform_keeps_alignment_under_scale_flip_rotate() -> None:
    image, mask = block_pair(128, 128, block=16)
    tf = build_train_transform(img_size=(48, 56), scale=(0.75, 1.5), hflip=True, rotate=15, color=False)
    tf.compose.set_random_seed(0)
    agree, labeled, ignored, inner_ok, inner = 0, 0, 0, 0, 0
    for _ in range(12):
        out = tf(image=image, mask=mask)
        img, m = out["image"], out["mask"]
        assert img.shape == (3, 48, 56) and img.dtype == torch.float32
        assert m.shape == (48, 56) and m.dtype == torch.long
        m = m.numpy()
        red = denorm(img)[..., 0] * 255
        derived = np.clip(np.round((red - 30) / 20), 0, 255).astype(np.int64)
        valid, core = m != 255, interior(m)
        labeled += valid.sum()
        agree += (derived[valid] == m[valid]).sum()
        inner += core.sum()
        inner_ok += (derived[core] == m[core]).sum()
        ignored += (~valid).sum()
        assert set(np.unique(m)) <= set(range(10)) | {255}  # nearest for masks: no blended ids
    assert inner > 5000 and inner_ok == inner  # away from block edges the mask is exactly the image's id
    assert agree / labeled > 0.9  # edges: image values blend, mask stays nearest
    assert ignored > 0  # rotation / padding filled with 255


def test_padding_fills_mask_with_ignore_and_image_with_zero() -> None:
    image, mask = block_pair()
    tf = build_train_transform(img_size=(64, 64), scale=(0.5, 0.5), hflip=False, rotate=0, color=False)
    out = tf(image=image, mask=mask)
    m = out["mask"].numpy()
    assert (m[:16] == 255).all() and (m[48:] == 255).all() and (m[:, :16] == 255).all() and (m[:, 48:] == 255).all()
    assert np.array_equal(m[16:48, 16:48], mask[::2, ::2])
    raw = denorm(out["image"]) * 255
    assert np.abs(raw[:16]).max() < 0.01  # image fill 0 (black) before normalization


def test_weather_and_color_run() -> None:
    image, mask = block_pair()
    tf = build_train_transform(img_size=(32, 32), weather=True, color=True)
    tf.compose.set_random_seed(1)
    for _ in range(4):
        out = tf(image=image, mask=mask)
        assert out["image"].shape == (3, 32, 32) and out["mask"].dtype == torch.long


def test_eval_transform_resizes_only_the_image() -> None:
    image, mask = block_pair(64, 96)
    out = build_eval_transform(img_size=(32, 48))(image=image, mask=mask)
    assert out["image"].shape == (3, 32, 48)
    assert out["mask"].dtype == torch.long and torch.equal(out["mask"], torch.from_numpy(mask).long())
    native = build_eval_transform()(image=image, mask=mask)
    assert native["image"].shape == (3, 64, 96)
    np.testing.assert_allclose(denorm(native["image"]) * 255, image.astype(np.float32), atol=1e-3)
    with pytest.raises(UsageError, match="img_size"):
        build_eval_transform(img_size=(0, 10))


def test_strong_photometric_augmentation_changes_only_colours_and_is_checked() -> None:
    """`photometric=strong` adds colour jitter, gamma, blur, noise and JPEG; the geometry and mask are untouched,
    and an unknown level is refused by name."""
    import albumentations as A
    import numpy as np
    import pytest

    from distilseg.data.transforms import build_train_transform, photometric_ops
    from distilseg.errors import UsageError

    names = [type(op).__name__ for op in photometric_ops("strong")]
    assert names == ["ColorJitter", "RandomGamma", "OneOf", "GaussNoise", "ImageCompression"]
    assert [type(op).__name__ for op in photometric_ops("mild")] == ["RandomBrightnessContrast"]
    with pytest.raises(UsageError, match="must be one of mild, strong, got 'dusk'"):
        photometric_ops("dusk")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (40, 48), dtype=np.uint8)
    strong = build_train_transform((40, 48), scale=(1.0, 1.0), hflip=False, rotate=0, photometric="strong", seed=3)
    outs = [strong(image=image, mask=mask) for _ in range(8)]
    assert all(np.array_equal(o["mask"].numpy(), mask) for o in outs)  # colour only: the labels stay
    assert len({round(float(o["image"].mean()), 4) for o in outs}) > 1  # it does change the pixels
    assert isinstance(strong.compose, A.Compose)


def test_clean_view_is_the_same_crop_without_the_colour_and_camera_ops() -> None:
    """`clean_view=True` (distill --teacher-view clean): `image_clean` shares the student image's crop and flip
    (its pixels still spell the mask) but not the photometric ops; with no photometric ops the two are equal."""
    rng = np.random.default_rng(1)
    mask = np.tile(np.arange(48, dtype=np.uint8) % 5, (40, 1))  # columns: a flip or a crop moves the labels
    mask[rng.random((40, 48)) < 0.2] = 2  # and rows, for the vertical crop offset
    image = np.repeat(mask[..., None] * 50, 3, axis=2)  # each pixel says its label
    geometric = dict(img_size=(32, 40), scale=(1.0, 1.0), hflip=True, rotate=0)
    plain = build_train_transform(**geometric, color=False, clean_view=True, seed=5)
    for _ in range(6):
        out = plain(image=image, mask=mask)
        assert set(out) == {"image", "image_clean", "mask"}
        assert torch.equal(out["image"], out["image_clean"])
    strong = build_train_transform(**geometric, photometric="strong", weather=True, clean_view=True, seed=5)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    differ = 0
    for _ in range(12):
        out = strong(image=image, mask=mask)
        clean = ((out["image_clean"] * std + mean) * 255).round()
        assert torch.equal(clean, out["mask"].to(clean.dtype).mul(50).expand(3, -1, -1))  # same crop and flip
        differ += not torch.allclose(out["image"], out["image_clean"], atol=1e-3)
    assert differ >= 6  # colour jitter fires with p = 0.8: most student views differ from the clean one
    # seeded: the same seed gives the same pairs again
    a = build_train_transform(**geometric, photometric="strong", clean_view=True, seed=9)
    b = build_train_transform(**geometric, photometric="strong", clean_view=True, seed=9)
    for _ in range(3):
        x, y = a(image=image, mask=mask), b(image=image, mask=mask)
        assert all(torch.equal(x[k], y[k]) for k in ("image", "image_clean", "mask"))
