"""The data of a ``train`` run: class weights, datasets and transforms, the quick check, the ``DataModule``.

Read top to bottom: ``compute_class_weights`` (the loss' weights), ``build_datasets`` (train/val splits with
their transforms), ``quick_check`` (every sample cheaply before step 1), then the samplers, the worker seeding
and ``SegDataModule`` (the loaders Lightning asks for).
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..data import collate_segmentation
from ..data.transforms import seed_augmentations
from ..errors import DataError, UsageError
from .config import TrainConfig

__all__ = ["compute_class_weights", "build_datasets", "quick_check", "UnpaddedShardSampler", "seed_train_worker",
           "SegDataModule"]


def _read_weights_file(path: Path, num_classes: int) -> list[float]:
    if not path.is_file():
        raise UsageError(f"--class-weights {path}: no such file (use none, auto or a JSON/.txt file)")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            values = [float(t) for t in text.replace(",", " ").split()]
    except (ValueError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: class weights must be a list of numbers ({exc})") from exc
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
        raise UsageError(f"{path}: class weights must be a list of numbers")
    if len(values) != num_classes:
        raise UsageError(f"{path}: {len(values)} class weights for a dataset with {num_classes} classes")
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"{path}: class weights must be finite numbers, got {values!r}")
    if any(v < 0 for v in values):
        raise UsageError(f"{path}: class weights must not be negative")
    return [float(v) for v in values]


def compute_class_weights(spec: Any, ds: Any) -> list[float] | None:
    """none -> None; auto -> median frequency balancing (``data.stats``, the one formula); FILE -> its list."""
    if spec is None or str(spec).lower() == "none":
        return None
    k = int(ds.num_classes)
    if str(spec).lower() == "auto":
        from ..data.stats import compute_class_stats

        stats = compute_class_stats(ds, workers=2)
        med = stats["class_weights"]["median_freq"]
        return [float(med[c]) for c in stats["classes"]]
    return _read_weights_file(Path(spec), k)



def build_datasets(cfg: TrainConfig) -> tuple[Any, Any, list[float], list[float]]:
    from .. import data as dmod

    mean, std = list(dmod.IMAGENET_MEAN), list(dmod.IMAGENET_STD)
    h, w = cfg.img_size
    if cfg.augment:
        train_tf = dmod.build_train_transform(img_size=(h, w), mean=mean, std=std, weather=bool(cfg.weather),
                                              photometric=cfg.photometric,
                                              clean_view=getattr(cfg, "teacher_view", "same") == "clean")
    else:
        train_tf = dmod.build_train_transform(
            img_size=(h, w), mean=mean, std=std, scale=(1.0, 1.0), hflip=False, rotate=0, color=False
        )
    eval_tf = dmod.build_eval_transform(img_size=tuple(cfg.input_size), mean=mean, std=std)
    opts = dict(cfg.dataset_args)
    train_split, val_split = cfg.train_split, cfg.val_split
    train_ds = dmod.create_dataset(cfg.dataset, root=cfg.root, split=train_split, transform=train_tf, **opts)
    if cfg.holdout:
        train_ds, val_ds = _hold_out(cfg, train_ds, dmod.create_dataset(
            cfg.dataset, root=cfg.root, split=train_split, transform=eval_tf, **opts))
        return train_ds, val_ds, mean, std
    val_ds = dmod.create_dataset(cfg.dataset, root=cfg.root, split=val_split, transform=eval_tf, **opts)
    if len(train_ds) == 0:
        raise DataError(f"dataset {cfg.dataset} ({cfg.root}): the training split has no samples")
    _warn_shared_groups(cfg, train_ds, val_ds)
    shared = sorted(set(val_split.split("+")) & set(train_split.split("+")))
    if shared:
        print(f"distilseg: note: the validation split {val_split!r} overlaps the training split {train_split!r} "
              f"({'+'.join(shared)}): its scores are no held-out estimate and best/ is chosen on training data "
              f"(with a schedule fixed in advance take last/; --patience stops on training data too)")
    return train_ds, val_ds, mean, std


def _hold_out(cfg: TrainConfig, train_ds: Any, pool: Any) -> tuple[Any, Any]:
    """``--holdout G``: the training split less the frames of G, and those frames as the validation split."""
    from ..data.groups import parse_group_list, required_group_pattern, select_groups

    groups = parse_group_list(cfg.holdout)
    if groups == ["each"]:
        raise UsageError("--holdout each runs one fold per group: it is handled by the train/distill command, "
                         "not by one run (give a group name)")
    pattern = required_group_pattern(train_ds, cfg.group_by)
    select_groups(train_ds, groups, pattern, keep=False)
    select_groups(pool, groups, pattern, keep=True)
    if len(train_ds) == 0:
        raise UsageError(f"--holdout {cfg.holdout}: nothing is left to train on in split {train_ds.split!r}")
    print(f"distilseg: holding out {','.join(groups)} ({len(pool)} frames of split {pool.split!r}) for validation; "
          f"training on the other {len(train_ds)}")
    return train_ds, pool


def _warn_shared_groups(cfg: TrainConfig, train_ds: Any, val_ds: Any) -> None:
    """One line when the validation split holds frames of groups (streets, cities) that training holds too."""
    from ..data.groups import group_pattern, overlap_warning, shared_groups

    pattern = group_pattern(train_ds, cfg.group_by)
    if pattern is None:
        return
    try:
        shared = shared_groups(train_ds, val_ds, pattern)
    except DataError:  # a file name the grouping does not match: no warning rather than a failed run
        return
    if shared:
        print(overlap_warning(shared, train_ds.split, val_ds.split))


def quick_check(ds: Any, skip_bad: bool, substitute: str = "replace", like: Any = None) -> Any:
    """Check every sample cheaply (headers, sizes, modes) and decode a few before the first step, so a
    broken file fails now, naming the file. With ``skip_bad`` the bad ones are left out and listed, and a
    sample that only fails when a worker decodes it is skipped there too (``substitute``: "replace" = the
    next good sample, for training; "ignore" = one that scores nothing, for validation)."""
    if like is not None and int(like.num_classes) != int(ds.num_classes):
        raise DataError(
            f"dataset {ds.name} ({ds.root}): split {like.split!r} has {like.num_classes} classes but split "
            f"{ds.split!r} has {ds.num_classes}; give the class count (num_classes) explicitly"
        )
    from ..data.validate import validate_dataset

    report = validate_dataset(ds, full=False, skip_bad=skip_bad, workers=2)
    bad = getattr(report, "bad", None)
    if bad:  # only with skip_bad: they were removed from ds.samples
        for b in bad:
            print(f"distilseg train: skipped {b.file}: {b.problem}")
        print(f"distilseg train: left out {len(bad)} bad sample(s) of split {ds.split!r} (--skip-bad)")
    if skip_bad:
        ds.on_bad = substitute
    if len(ds) == 0:
        raise DataError(f"dataset {ds.name} split {ds.split!r}: no usable samples left")
    return ds


class UnpaddedShardSampler:
    """Validation indices ``rank, rank + world, ...``: every sample is scored exactly once across processes
    (``DistributedSampler`` pads with duplicates, which would count some images twice)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def seed_train_worker(worker_id: int, rank: int = 0) -> None:
    """DataLoader ``worker_init_fn``: what Lightning's ``pl_worker_init_function`` does (torch, numpy,
    ``random``) plus albumentations' own generators, which nothing else seeds.

    The worker's seed (``torch.initial_seed()`` there = DataLoader base seed + worker id) comes from the
    main process' torch generator, seeded by ``seed_everything``: so it is the same in two runs with the
    same ``--seed``, distinct per worker, and new each time workers start. Mixing in ``rank`` keeps DDP
    processes (same base seed) from repeating each other's augmentations.
    """
    init_worker(worker_id, rank)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        seed_augmentations(info.dataset, [info.seed, worker_id, rank])


def init_worker(worker_id: int, rank: int = 0) -> None:
    """DataLoader ``worker_init_fn`` of every loader: Lightning's ``pl_worker_init_function``, and none of the
    freed memory a ``--keep-freed-memory`` parent keeps (``host_memory.release_in_worker``)."""
    from lightning.fabric.utilities.seed import pl_worker_init_function

    from .host_memory import release_in_worker

    release_in_worker()
    pl_worker_init_function(worker_id, rank=rank)


class SegDataModule(pl.LightningDataModule):
    """The training and validation loaders of one run (per process under DDP)."""

    def __init__(self, train_ds: Any, val_ds: Any, batch_size: int, num_workers: int, seed: int) -> None:
        super().__init__()
        self.train_ds, self.val_ds = train_ds, val_ds
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)

    def train_dataloader(self) -> DataLoader:
        train_ds, bs, nw = self.train_ds, self.batch_size, self.num_workers
        world, rank = self.trainer.world_size, self.trainer.global_rank
        drop_last = len(train_ds) // world >= bs  # never a batch of 1 for BatchNorm unless data is tiny
        # albumentations keeps its own generators (seed_everything does not reach them): seed them from
        # --seed for num_workers=0; each worker reseeds its copy in seed_train_worker. The stream goes on
        # across epochs, so every epoch still draws new augmentations.
        seed_augmentations(train_ds, [self.seed, rank])
        common = dict(batch_size=bs, num_workers=nw, collate_fn=collate_segmentation,
                      drop_last=drop_last, persistent_workers=nw > 0, pin_memory=False,
                      worker_init_fn=functools.partial(seed_train_worker, rank=rank) if nw > 0 else None)
        if world > 1:
            sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True,
                                         seed=self.seed, drop_last=False)
            return DataLoader(train_ds, sampler=sampler, **common)
        return DataLoader(train_ds, shuffle=True, **common)

    def val_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = UnpaddedShardSampler(len(self.val_ds), rank, world)
        nw = self.num_workers
        return DataLoader(self.val_ds, sampler=sampler, batch_size=self.batch_size, num_workers=nw,
                          collate_fn=collate_segmentation, persistent_workers=nw > 0,
                          worker_init_fn=functools.partial(init_worker, rank=rank) if nw > 0 else None)
