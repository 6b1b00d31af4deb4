"""Groups of samples (a street, a city, a drive): which group a sample belongs to, and splits by group.

Why: frames of one street are near copies of each other. A validation split that shares streets with the
training split measures memory of those streets, not accuracy on a new one; a user's camera and city are a new
one. So the tools name the groups two splits share (``data overlap``, the warning of ``train``), and a run can
validate on whole groups held out of training (``--holdout``), one fold per group for a leave-one-group-out
estimate (``--holdout each``).

A group is read from each sample's image path relative to the dataset root (``train/0001TP_006690.png``)
with a regular expression: its first capture group (or the whole match, when it has none) names the group.
Each adapter has a default (``SegDataset.group_pattern``): CamVid the sequence prefix, Cityscapes the city,
IDD the drive folder, Oxford-IIIT Pet the breed. ``--group-by REGEX`` overrides it.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from ..errors import DataError, UsageError

__all__ = ["group_pattern", "required_group_pattern", "sample_key", "group_of", "groups_of", "count_groups", "shared_groups",
           "select_groups", "parse_group_list", "check_holdout", "check_group_by", "format_shared", "overlap_warning"]


def group_pattern(ds: Any, regex: str | None = None) -> re.Pattern[str] | None:
    """The compiled grouping of ``ds``: ``regex`` when given, else the adapter's default (None if it has none)."""
    text = regex if regex else getattr(ds, "group_pattern", None)
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        raise UsageError(f"--group-by {text!r}: not a regular expression ({exc})") from exc


def required_group_pattern(ds: Any, regex: str | None = None) -> re.Pattern[str]:
    """``group_pattern`` for ``--holdout``, which cannot go on without one: a dataset without a default grouping
    and no ``--group-by`` is a UsageError naming the dataset."""
    pattern = group_pattern(ds, regex)
    if pattern is None:
        raise UsageError(f"--holdout: dataset {getattr(ds, 'name', '')!r} has no default grouping; "
                         f"give --group-by REGEX")
    return pattern


def sample_key(ds: Any, i: int) -> str:
    """What the grouping reads for sample ``i``: its image path relative to the root, '/'-separated (the
    sample's name when it has no file, as for the built-in synthetic scenes)."""
    sample = ds.samples[i]
    image = getattr(sample, "image", None)
    if image is None:
        return str(sample.name)
    root = getattr(ds, "root", None)
    try:
        return Path(image).relative_to(root).as_posix() if root is not None else Path(image).name
    except ValueError:
        return Path(image).as_posix()


def group_of(pattern: re.Pattern[str], key: str) -> str | None:
    """The group named by ``pattern`` in ``key`` (first capture group, else the whole match); None if no match."""
    m = pattern.search(key)
    if m is None:
        return None
    return m.group(1) if pattern.groups >= 1 and m.group(1) is not None else m.group(0)


def groups_of(ds: Any, pattern: re.Pattern[str]) -> list[str]:
    """The group of every sample of ``ds``, in order; a sample the pattern does not match is a DataError."""
    out = []
    for i in range(len(ds.samples)):
        key = sample_key(ds, i)
        g = group_of(pattern, key)
        if g is None:
            raise DataError(f"{key}: --group-by {pattern.pattern!r} does not match this file name "
                            f"(dataset {getattr(ds, 'name', '')}, split {getattr(ds, 'split', '')!r})")
        out.append(g)
    return out


def count_groups(ds: Any, pattern: re.Pattern[str]) -> Counter[str]:
    return Counter(groups_of(ds, pattern))


def shared_groups(a: Any, b: Any, pattern: re.Pattern[str]) -> dict[str, list[int]]:
    """``{group: [frames in a, frames in b]}`` for every group present in both datasets, sorted by name."""
    ca, cb = count_groups(a, pattern), count_groups(b, pattern)
    return {g: [ca[g], cb[g]] for g in sorted(set(ca) & set(cb))}


def parse_group_list(value: Any, what: str = "--holdout") -> list[str]:
    """``"0001TP"``, ``"0001TP,0006R0"`` or a YAML list -> names (no empty ones, no repeats)."""
    if isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value]
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    else:
        raise UsageError(f"{what} must be group names separated by commas, got {value!r}")
    if not items or any(not v for v in items) or len(set(items)) != len(items):
        raise UsageError(f"{what} must be distinct, non-empty group names separated by commas, got {value!r}")
    return items


def check_holdout(value: Any, what: str = "--holdout") -> str:
    """A ``holdout`` setting checked: group names (a YAML list is joined by commas) or ``each``."""
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{what} must be text, got {value!r}")
    parse_group_list(value, what)
    return value


def check_group_by(value: Any, what: str = "--group-by") -> str:
    """A ``group_by`` setting checked: text that compiles as a regular expression."""
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{what} must be text, got {value!r}")
    try:
        re.compile(value)
    except re.error as exc:
        raise UsageError(f"{what} {value!r}: not a regular expression ({exc})") from exc
    return value


def select_groups(ds: Any, groups: Iterable[str], pattern: re.Pattern[str], keep: bool, what: str = "--holdout"):
    """Keep (``keep``) or drop the samples of ``groups`` in ``ds`` (in place, like ``--skip-bad``); returns ds.

    A group that ``ds`` does not hold is a UsageError listing the groups it has, so a typo never silently
    trains on everything."""
    wanted = list(groups)
    names = groups_of(ds, pattern)
    present = Counter(names)
    missing = [g for g in wanted if g not in present]
    if missing:
        have = ", ".join(f"{g} ({n})" for g, n in sorted(present.items()))
        raise UsageError(f"{what} {','.join(missing)}: no such group in split {getattr(ds, 'split', '')!r} of "
                         f"dataset {getattr(ds, 'name', '')} (groups by {pattern.pattern!r}: {have})")
    chosen = set(wanted)
    ds.samples = [s for s, g in zip(ds.samples, names) if (g in chosen) == keep]
    return ds


def format_shared(shared: dict[str, list[int]], split_a: str, split_b: str) -> str:
    """``0016E5 (204 train / 101 val frames)``, joined by commas."""
    return ", ".join(f"{g} ({na} {split_a} / {nb} {split_b} frames)" for g, (na, nb) in shared.items())


def overlap_warning(shared: dict[str, list[int]], train_split: str, val_split: str) -> str:
    """The one line that ``train`` and ``data overlap`` print when a validation split shares groups."""
    n = len(shared)
    return (f"distilseg: warning: validation split {val_split!r} shares {n} group{'s' if n != 1 else ''} with "
            f"training split {train_split!r}: {format_shared(shared, train_split, val_split)}; its scores measure "
            f"places the model trained on, not new ones (validate on held-out groups with --holdout GROUP)")
