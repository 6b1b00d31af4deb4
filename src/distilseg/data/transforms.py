"""Training and evaluation transforms (albumentations 2.x) returning ``image`` float 3xHxW, ``mask`` long HxW.

Why a wrapper class: albumentations' ToTensorV2 keeps the mask's uint8 dtype; losses need long targets,
and the wrapper stays picklable for DataLoader workers.

Randomness: albumentations 2.x draws from its OWN generators (a ``numpy.random.Generator`` and a
``random.Random`` per transform, seeded from OS entropy when ``Compose(seed=None)``), so
``seed_everything``/``np.random.seed``/``random.seed`` do not make augmentations reproducible.
``SegTransform.set_random_seed`` (and ``seed_augmentations`` for a dataset) give the whole pipeline one
seeded stream; training seeds it per DataLoader worker (see ``training/train.py``).
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from ..checks import size_pair
from ..errors import UsageError
from .base import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD


def _size(img_size: Sequence[int] | int, what: str) -> tuple[int, int]:
    return size_pair(img_size, f"{what}: img_size")  # type: ignore[return-value]


class SegTransform:
    """Callable ``(image=HxWx3 uint8, mask=HxW uint8) -> {"image": FloatTensor, "mask": LongTensor}``.

    With ``student_only`` and ``finish`` (a clean teacher view, see ``build_train_transform``): ``compose`` is the
    geometric part, ``student_only`` the colour and camera part and ``finish`` the normalization; the sample
    also holds ``"image_clean"``, the same crop without the ``student_only`` ops."""

    def __init__(self, compose: A.Compose, mask_compose: bool = True, student_only: A.Compose | None = None,
                 finish: A.Compose | None = None) -> None:
        self.compose = compose
        self.mask_compose = mask_compose
        self.student_only = student_only
        self.finish = finish

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None, **_: Any) -> dict[str, Any]:
        if self.student_only is not None and self.finish is not None:
            out = self.compose(image=image) if mask is None else self.compose(image=image, mask=mask)
            clean = out["image"]
            sample = {"image": self.finish(image=self.student_only(image=clean)["image"])["image"],
                      "image_clean": self.finish(image=clean)["image"]}
            if mask is not None:
                sample["mask"] = _long_mask(out["mask"])
            return sample
        if mask is None:
            return {"image": self.compose(image=image)["image"]}
        if self.mask_compose:
            out = self.compose(image=image, mask=mask)
            m = out["mask"]
        else:  # eval: image only; the mask keeps its native size for exact scoring
            out = self.compose(image=image)
            m = mask
        return {"image": out["image"], "mask": _long_mask(m)}

    def set_random_seed(self, seed: int | Sequence[int]) -> None:
        """Make the augmentations a deterministic function of ``seed`` (an int or a sequence of ints,
        e.g. ``[base_seed, worker_id, rank]``); successive calls still draw new augmentations.

        Why not ``A.Compose(seed=...)``/``Compose.set_random_seed``: albumentations 2.0 gives EVERY
        transform its own generator seeded with the same value, so their draws coincide (the flip, the
        rotation and the color jitter would fire together). One shared stream keeps them independent.
        """
        entropy = [int(v) & 0xFFFF_FFFF_FFFF_FFFF for v in ([seed] if isinstance(seed, int) else seed)]
        ss = np.random.SeedSequence(entropy)
        composes = [c for c in (self.compose, self.student_only) if c is not None]
        for compose, (np_ss, py_ss) in zip(composes, (ss.spawn(2) for _ in composes)):
            py_seed = int.from_bytes(py_ss.generate_state(4, dtype=np.uint64).tobytes(), "little")
            compose.set_random_state(np.random.default_rng(np_ss), random.Random(py_seed))

    def __repr__(self) -> str:
        return f"SegTransform({self.compose!r})"


def _long_mask(mask: Any) -> torch.Tensor:
    """A mask (numpy array or tensor) as a long tensor, the dtype losses and metrics take."""
    m = mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(mask))
    return m.long()


def seed_augmentations(dataset: Any, seed: int | Sequence[int]) -> int:
    """Seed every seedable transform reachable from ``dataset`` (its ``transform``, and through
    ``Subset.dataset``/``ConcatDataset.datasets``); returns how many were seeded."""
    seen: set[int] = set()
    count = 0
    stack = [dataset]
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        tf = getattr(obj, "transform", None)
        if tf is not None and callable(getattr(tf, "set_random_seed", None)) and id(tf) not in seen:
            seen.add(id(tf))
            tf.set_random_seed(seed)
            count += 1
        stack.append(getattr(obj, "dataset", None))
        stack.extend(getattr(obj, "datasets", None) or ())
    return count


def build_train_transform(
    img_size: Sequence[int] | int = (512, 512),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale: tuple[float, float] = (0.5, 2.0),
    hflip: bool = True,
    rotate: float = 10,
    color: bool = True,
    weather: bool = False,
    seed: int | Sequence[int] | None = None,
    photometric: str = "mild",
    clean_view: bool = False,
) -> SegTransform:
    """Random scale, pad (mask fill 255) + random crop to ``img_size``, flip, rotation, color, weather.

    ``photometric`` (with ``color``): ``mild`` = brightness and contrast +-20 %; ``strong`` = what a new camera,
    hour or city changes: colour jitter (down to 40 % brightness, as at dusk), gamma, blur, sensor noise and JPEG
    artefacts (see :func:`photometric_ops`). ``seed`` (see ``SegTransform.set_random_seed``) makes the sequence of
    augmentations reproducible; ``None`` seeds from OS entropy (albumentations' default).

    ``clean_view``: each sample also holds ``"image_clean"``, the same crop, flip and rotation without the colour,
    camera and weather ops. Distillation with ``--teacher-view clean`` gives it to the teacher: its targets come
    from the image as filmed, and the student learns to give them on the degraded one.
    """
    h, w = _size(img_size, "build_train_transform")
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi:
        raise UsageError(f"build_train_transform: scale must be 0 < low <= high, not {scale!r}")
    ops: list[Any] = []
    if (lo, hi) != (1.0, 1.0):
        ops.append(A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR,
                                 mask_interpolation=cv2.INTER_NEAREST_EXACT, p=1.0))
    ops += [
        A.PadIfNeeded(min_height=h, min_width=w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX),
        A.RandomCrop(height=h, width=w),
    ]
    if hflip:
        ops.append(A.HorizontalFlip(p=0.5))
    if rotate:
        ops.append(A.Rotate(limit=(-float(rotate), float(rotate)), interpolation=cv2.INTER_LINEAR,
                            mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT,
                            fill=0, fill_mask=IGNORE_INDEX, p=0.5))
    appearance: list[Any] = photometric_ops(photometric) if color else []
    if weather:
        appearance.append(A.OneOf([
            A.RandomFog(fog_coef_range=(0.1, 0.3), alpha_coef=0.08, p=1.0),
            A.RandomSunFlare(flare_roi=(0, 0, 1, 0.5), src_radius=max(8, int(0.2 * max(h, w))), p=1.0),
        ], p=0.2))
    finish = [A.Normalize(mean=tuple(mean), std=tuple(std)), ToTensorV2()]
    if clean_view:
        tf = SegTransform(A.Compose(ops), student_only=A.Compose(appearance), finish=A.Compose(finish))
    else:
        tf = SegTransform(A.Compose(ops + appearance + finish))
    if seed is not None:
        tf.set_random_seed(seed)
    return tf


PHOTOMETRIC = ("mild", "strong")


def photometric_ops(level: str) -> list[Any]:
    """The colour and camera augmentations of one ``photometric`` level (see ``build_train_transform``)."""
    if level == "mild":
        return [A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5)]
    if level == "strong":
        return [
            A.ColorJitter(brightness=(0.4, 1.3), contrast=(0.6, 1.4), saturation=(0.5, 1.5), hue=(-0.05, 0.05),
                          p=0.8),
            A.RandomGamma(gamma_limit=(60, 160), p=0.5),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5), p=1.0), A.MotionBlur(blur_limit=(3, 7), p=1.0)], p=0.2),
            A.GaussNoise(std_range=(0.01, 0.06), p=0.2),
            A.ImageCompression(quality_range=(30, 90), p=0.3),
        ]
    raise UsageError(f"photometric augmentation must be one of {', '.join(PHOTOMETRIC)}, got {level!r}")


class EvalTransform:
    """Callable ``(image=HxWx3 uint8, mask=HxW) -> {"image": FloatTensor 3xhxw, "mask": LongTensor HxW}``.

    Why not albumentations here: validation during training must see exactly the input that
    ``distilseg eval`` / ``predict`` / the ONNX check give the network, so that a checkpoint's recorded
    val mIoU is what ``eval`` reports. This calls the same function (``distilseg.inference.preprocess.image_to_input``:
    /255, bilinear antialiased ``F.interpolate``, then normalize). The mask is never resized.
    """

    def __init__(self, img_size: tuple[int, int] | None, mean: Sequence[float], std: Sequence[float]) -> None:
        from ..inference.preprocess import normalization_tensors

        self.img_size = img_size
        self.mean, self.std = normalization_tensors(mean, std)

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None, **_: Any) -> dict[str, Any]:
        from ..inference.preprocess import image_to_input

        x = image_to_input(np.asarray(image), self.img_size, self.mean, self.std)[0].contiguous()
        if mask is None:
            return {"image": x}
        return {"image": x, "mask": _long_mask(mask)}

    def __repr__(self) -> str:
        return f"EvalTransform(img_size={self.img_size})"


def build_eval_transform(
    img_size: Sequence[int] | int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> EvalTransform:
    """Resize ONLY the image (when ``img_size`` is given), normalize, to tensor; the mask stays native.

    Same preprocessing as ``distilseg eval`` / ``predict`` (``preprocess.image_to_input``)."""
    size = _size(img_size, "build_eval_transform") if img_size is not None else None
    return EvalTransform(size, mean, std)
