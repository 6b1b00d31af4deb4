"""``--resume`` continues the same run or refuses: the resolved settings against the run's ``OUT/config.yaml``.

Why: the checkpoint carries the model's weights, the optimizer's and the schedule's state, and the data order;
a resumed run with another model, dataset, loss or schedule would mix two runs in one ``history.csv`` (or fail
deep inside the checkpoint loader) while ``config.yaml`` recorded settings that never applied. So every setting
must match the saved one, except those that only say how long, how fast or how verbosely to go on
(``RESUME_MAY_CHANGE``). The comparison runs before anything is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .. import safe_yaml
from ..errors import UsageError
from ..io import plain_data

__all__ = ["RESUME_MAY_CHANGE", "check_resume_settings"]

# Settings a resumed run may change: how long (epochs, patience), how it reads data and reports (workers,
# progress bar, validation cadence and size, resume-state cadence, skipping unreadable samples), how it uses
# memory (the same steps either way) and where it runs. The teacher of a distillation run is checked against
# its own record (OUT/distill.json).
RESUME_MAY_CHANGE = ("epochs", "patience", "num_workers", "progress", "val_every", "limit_val_batches",
                     "checkpoint_every_steps", "skip_bad", "grad_checkpointing", "keep_freed_memory", "accelerator",
                     "resume", "out", "teacher")


def check_resume_settings(cfg: dict[str, Any], out: str | Path) -> None:
    """A one-line ``UsageError`` naming every setting of ``cfg`` that differs from ``OUT/config.yaml``
    (other than ``RESUME_MAY_CHANGE``). A run without a saved config.yaml has nothing to compare."""
    path = Path(out) / "config.yaml"
    if not path.is_file():
        return
    try:
        saved = safe_yaml.load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: the run's saved settings cannot be read ({exc}); cannot check --resume") from exc
    if not isinstance(saved, dict):
        raise UsageError(f"{path}: the run's saved settings are not a mapping; cannot check --resume")
    differ = [key for key in cfg if key in saved and key not in RESUME_MAY_CHANGE
              and plain_data(cfg[key]) != plain_data(saved[key])]
    if differ:
        shown = "; ".join(f"{key}: saved {plain_data(saved[key])!r}, now {plain_data(cfg[key])!r}" for key in differ)
        raise UsageError(
            f"--resume: {out} is a run with other settings ({shown}); resume with the saved ones "
            f"(--config {path}) or choose another --out. Only {', '.join(RESUME_MAY_CHANGE[:-3])} may change "
            f"on resume"
        )
