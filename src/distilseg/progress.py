"""Progress output made for where it goes: live bars on a terminal, plain lines in a log file.

Why: a bar redraws itself with a carriage return several times a second. On a terminal that is what a user
wants; in a log file, a CI console or ``| tee`` every redraw is kept, and a few minutes of training leave tens of
kilobytes of ``\\r`` noise. When stdout or stderr is not a terminal, the same call sites print one line per
``step`` percent instead (and Lightning trainings one line per epoch, see :func:`training_progress_callback`).
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TextIO

__all__ = ["interactive", "progress_bar", "LineProgress", "training_progress_callback"]


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams (pytest capture, redirected objects)
        return False


def interactive() -> bool:
    """True when both stdout and stderr are terminals: the only case where live bars are drawn."""
    return _isatty(sys.stdout) and _isatty(sys.stderr)


class LineProgress:
    """The part of tqdm's interface that distilseg uses, printing one plain line every ``step`` percent.

    With an unknown total it prints every ``every`` items instead. Lines go to ``file`` (stderr by default).
    """

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", file: TextIO | None = None, step: float = 10.0, every: int = 100) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.unit = unit
        self.file = file
        self.step = float(step)
        self.every = int(every)
        self.n = 0
        self._next = self._threshold(1)
        self._start = time.perf_counter()
        self._closed = False

    def _threshold(self, k: int) -> float:
        if self.total:
            return self.total * min(100.0, k * self.step) / 100.0
        return float(k * self.every)

    def _line(self) -> None:
        elapsed = time.perf_counter() - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        pct = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        head = f"{self.desc}: " if self.desc else ""
        print(f"{head}{done} {self.unit}{pct}, {elapsed:.1f} s, {rate:.1f} {self.unit}/s",
              file=self.file or sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        if self.n >= self._next:
            self._line()
            k = 1
            while self._threshold(k) <= self.n and (not self.total or self._threshold(k) < self.total):
                k += 1
            self._next = self._threshold(k) if not self.total or self.n < self.total else float("inf")

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:  # tqdm compatibility: nothing to redraw
        return None

    def close(self) -> None:
        if not self._closed and self.n and self.total and self.n < self.total:
            self._line()  # a loop that ended early still says where it stopped
        self._closed = True

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LineProgress without an iterable cannot be iterated")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 disable: bool = False, file: TextIO | None = None) -> Any:
    """A tqdm bar on a terminal, a :class:`LineProgress` elsewhere, a silent tqdm when ``disable``."""
    from tqdm import tqdm

    if disable or interactive():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=file or sys.stderr)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, file=file)


def _epoch_lines_class() -> type:
    from lightning.pytorch.callbacks import Checkpoint, ProgressBar

    class EpochLines(ProgressBar, Checkpoint):
        """Lightning progress for logs: one line per epoch (losses, val mIoU, seconds), no redraws.

        A ``ProgressBar``, so that Lightning does not add its own TQDM bar as well; a ``Checkpoint`` only for
        the hook order: Lightning runs checkpoint callbacks' ``on_train_epoch_end`` after the module's own, when
        the epoch's train loss is final (it saves nothing).
        """

        def __init__(self) -> None:
            super().__init__()
            self._enabled = True
            self._t0 = 0.0

        def disable(self) -> None:
            self._enabled = False

        def enable(self) -> None:
            self._enabled = True

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if not self._enabled or not trainer.is_global_zero or trainer.sanity_checking:
                return
            parts = [f"epoch {int(trainer.current_epoch) + 1}/{trainer.max_epochs}"]
            loss = getattr(pl_module, "epoch_train_loss", None)
            if loss is not None:
                parts.append(f"train_loss {float(loss):.4f}")
            val = getattr(pl_module, "last_val", None) or {}
            vloss = getattr(pl_module, "epoch_val_loss", None)
            if val and vloss is not None:
                parts.append(f"val_loss {float(vloss):.4f}")
            if val.get("mIoU") is not None:
                parts.append(f"val_mIoU {float(val['mIoU']):.4f}")
            parts.append(f"{time.perf_counter() - self._t0:.1f} s")
            print(", ".join(parts), file=sys.stderr, flush=True)

    return EpochLines


def training_progress_callback(refresh_rate: int = 1) -> Any:
    """Lightning's TQDM bar on a terminal; elsewhere a callback printing one line per epoch."""
    if interactive():
        from lightning.pytorch.callbacks import TQDMProgressBar

        return TQDMProgressBar(refresh_rate=refresh_rate)
    return _epoch_lines_class()()
