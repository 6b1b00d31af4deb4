"""Same ``--seed`` -> same training run, with augmentation on.

albumentations 2.x draws from its own generators, which ``seed_everything`` does not reach; training seeds
them from the run seed (``num_workers=0``) and per DataLoader worker (``seed_train_worker``).
"""
from __future__ import annotations

import csv
import functools

import lightning.fabric.utilities.seed  # noqa: F401  (imported here, not in each forked worker: seconds each)
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset

from distilseg.cli import main
from distilseg.data import build_train_transform, create_dataset
from distilseg.data.transforms import seed_augmentations
from distilseg.training.datamodule import seed_train_worker


pytestmark = pytest.mark.usefixtures("run_config_check")


def _pair(h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    ds = create_dataset("synthetic", root=None, split="train", transform=None, num_images=1, size=[h, w])
    return ds.load_image(0), ds.load_mask(0)


def _draws(tf, image, mask, n: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    outs = [tf(image=image, mask=mask) for _ in range(n)]
    return [(o["image"], o["mask"]) for o in outs]


def _same(a, b) -> bool:
    return all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


def test_train_transform_same_seed_same_augmentations():
    image, mask = _pair()
    a = _draws(build_train_transform(img_size=(32, 48), seed=3), image, mask)
    b = _draws(build_train_transform(img_size=(32, 48), seed=3), image, mask)
    assert _same(a, b)
    # successive calls still draw new augmentations
    assert any(not torch.equal(a[0][0], x[0]) for x in a[1:])
    # another seed, another sequence
    assert not _same(a, _draws(build_train_transform(img_size=(32, 48), seed=4), image, mask))
    # reseeding restarts the sequence; a [seed, worker, rank] list works as a seed
    tf = build_train_transform(img_size=(32, 48))
    tf.set_random_seed(3)
    assert _same(a, _draws(tf, image, mask))
    tf.set_random_seed([3, 0, 0])
    c = _draws(tf, image, mask)
    tf.set_random_seed([3, 1, 0])
    assert not _same(c, _draws(tf, image, mask))
    # one shared stream for the whole pipeline (albumentations' Compose(seed=) seeds each op identically)
    assert all(t.py_random is tf.compose.py_random for t in tf.compose.transforms)


class _SameImage(Dataset):
    """Every index is the same picture: differences between items come from augmentation only."""

    def __init__(self, n: int) -> None:
        self.image, self.mask = _pair()
        self.transform = build_train_transform(img_size=(32, 48))  # OS-entropy seeded, like training
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.transform(image=self.image, mask=self.mask)["image"]


def _epochs(num_workers: int, seed: int, epochs: int = 2) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    ds = _SameImage(4)
    seed_augmentations(ds, [seed, 0])
    loader = DataLoader(ds, batch_size=1, shuffle=False, num_workers=num_workers,
                        persistent_workers=num_workers > 0,
                        worker_init_fn=functools.partial(seed_train_worker, rank=0) if num_workers else None)
    return [torch.cat(list(loader)) for _ in range(epochs)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_augmentations_reproducible_and_varied(num_workers):
    a, b = _epochs(num_workers, 5), _epochs(num_workers, 5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])  # each epoch draws new augmentations
    assert not torch.equal(a[0], _epochs(num_workers, 6, epochs=1)[0])  # another seed, other augmentations
    if num_workers:  # workers 0 and 1 take items 0 and 1: they must not share one stream
        assert not torch.equal(a[0][0], a[0][1])


def _train(out, num_workers: int, seed: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
    main(["train", "--dataset", "synthetic", "--dataset-args", "num_images=8", "size=[48,64]",
          "--model", "unet", "--model-args", "depth=2", "base_width=4", "--img-size", "32", "48",
          "--epochs", "2", "--batch-size", "4", "--no-progress", "--accelerator", "cpu",
          "--num-workers", str(num_workers), "--seed", str(seed), "--out", str(out)])
    with open(out / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    return rows, load_file(str(out / "best" / "model.safetensors"))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_same_seed_same_training_run(tmp_path, num_workers):
    rows_a, best_a = _train(tmp_path / "a", num_workers, seed=7)
    rows_b, best_b = _train(tmp_path / "b", num_workers, seed=7)
    assert [int(r["epoch"]) for r in rows_a] == [1, 2]
    for key in ("train_loss", "val_loss", "val_mIoU"):
        assert [r[key] for r in rows_a] == [r[key] for r in rows_b], key
    assert best_a.keys() == best_b.keys()
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    if num_workers == 0:
        rows_c, _ = _train(tmp_path / "c", num_workers, seed=8)
        assert [r["train_loss"] for r in rows_c] != [r["train_loss"] for r in rows_a]
