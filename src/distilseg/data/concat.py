"""Splits joined into one dataset (``split="train+val"``).

Why: the literature's final CamVid / Cityscapes models train on train+val with a schedule fixed in advance;
a joined split is also what ``data inspect`` should count for such a run. The samples stay the parts' own
``Sample`` objects and every read is delegated to the adapter that listed the sample, so each part decodes
its masks exactly as it would alone, and the joined list can be filtered (``--skip-bad``) like any other.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DataError, UsageError
from .base import SegDataset

__all__ = ["JoinedSplits"]


class JoinedSplits(SegDataset):
    """The samples of ``parts`` (datasets of one adapter, one per split) in order, as one split."""

    def __init__(self, parts: Sequence[SegDataset], transform: Callable[..., dict[str, Any]] | None = None) -> None:
        if len(parts) < 2:
            raise ValueError("JoinedSplits needs at least two parts")
        first = parts[0]
        for other in parts[1:]:
            if list(other.classes) != list(first.classes):
                raise DataError(
                    f"dataset {first.name} ({first.root}): split {other.split!r} has classes {other.classes} but "
                    f"split {first.split!r} has {first.classes}; they cannot be joined"
                )
        seen: dict[tuple[Any, Any], str] = {}
        for p in parts:
            for sample in p.samples:
                key = (sample.image, sample.mask)
                if sample.image is not None and key in seen and seen[key] != p.split:
                    raise UsageError(
                        f"dataset {first.name} ({first.root}): splits {seen[key]!r} and {p.split!r} both hold "
                        f"{sample.image}; joined splits must be distinct files (a folder without split "
                        f"subfolders has one split only)"
                    )
                seen.setdefault(key, p.split)
        split = "+".join(p.split for p in parts)
        super().__init__(first.root, split, transform, first.classes, first.palette)
        self.name = first.name
        self.color_masks = first.color_masks
        self.group_pattern = first.group_pattern
        self.ignore_index = first.ignore_index
        self.parts = list(parts)
        self.samples = [s for p in self.parts for s in p.samples]
        self._index_owners()
        orphans = [m for p in self.parts for m in (getattr(p, "orphan_masks", None) or [])]
        if orphans:
            self.orphan_masks = orphans

    def _index_owners(self) -> None:
        # sample object -> (its adapter, its index there): by identity, so filtering self.samples keeps it valid
        self._owner = {id(s): (p, j) for p in self.parts for j, s in enumerate(p.samples)}

    # DataLoader workers started by spawn (macOS, Windows) get a pickled copy: pickle keeps the samples shared
    # between self.samples and the parts, but their ids change, so the index is rebuilt there.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_owner", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._index_owners()

    def _part(self, i: int) -> tuple[SegDataset, int]:
        return self._owner[id(self.samples[i])]

    def split_of(self, i: int) -> str:
        """The split that sample ``i`` comes from (names may repeat across splits)."""
        return self._part(i)[0].split

    def load_image(self, i: int) -> np.ndarray:
        part, j = self._part(i)
        return part.load_image(j)

    def load_mask(self, i: int) -> np.ndarray:
        part, j = self._part(i)
        return part.load_mask(j)

    def known_problem(self, i: int) -> tuple[str, str] | None:
        part, j = self._part(i)
        return part.known_problem(j)

    def mask_mode_problem(self, mode: str) -> str | None:
        return self.parts[0].mask_mode_problem(mode)
