"""Progress output follows where it goes: bars on a terminal, plain lines (one per 10 %, one per epoch) elsewhere."""
from __future__ import annotations

import io

import pytest

from distilseg import progress


def test_line_progress_prints_one_line_per_ten_percent():
    buf = io.StringIO()
    bar = progress.LineProgress(total=50, desc="eval", unit="img", file=buf)
    for _ in range(50):
        bar.update(1)
    bar.close()
    lines = buf.getvalue().splitlines()
    assert [line.split(" img")[0] for line in lines] == [f"eval: {n}/50" for n in range(5, 51, 5)]
    assert "\r" not in buf.getvalue() and lines[-1].startswith("eval: 50/50 img (100%)")


def test_line_progress_big_steps_unknown_total_and_early_stop():
    buf = io.StringIO()
    bar = progress.LineProgress(total=10, desc="x", file=buf)
    bar.update(7)  # one jump over several thresholds: one line
    bar.close()  # stopped early: says where
    assert buf.getvalue().splitlines()[0].startswith("x: 7/10 it (70%)") and len(buf.getvalue().splitlines()) == 2
    buf = io.StringIO()
    items = list(progress.LineProgress(iter(range(250)), desc="frames", unit="frame", file=buf))
    assert items == list(range(250))
    assert [line.split(" frame")[0] for line in buf.getvalue().splitlines()] == ["frames: 100", "frames: 200"]


def test_bars_on_a_terminal_lines_elsewhere(monkeypatch):
    from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
    from tqdm import tqdm

    monkeypatch.setattr(progress, "interactive", lambda: False)
    assert isinstance(progress.progress_bar(total=3), progress.LineProgress)
    cb = progress.training_progress_callback()
    assert isinstance(cb, ProgressBar) and not isinstance(cb, TQDMProgressBar)
    off = progress.progress_bar(total=3, disable=True)  # --no-progress: silent either way
    assert isinstance(off, tqdm) and off.disable
    monkeypatch.setattr(progress, "interactive", lambda: True)
    assert isinstance(progress.progress_bar(total=3), tqdm)
    assert isinstance(progress.training_progress_callback(), TQDMProgressBar)


@pytest.mark.parametrize("stdout_tty,stderr_tty,expected", [(True, True, True), (True, False, False),
                                                            (False, True, False)])
def test_interactive_needs_both_streams_on_a_terminal(monkeypatch, stdout_tty, stderr_tty, expected):
    class Stream(io.StringIO):
        def __init__(self, tty: bool) -> None:
            super().__init__()
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr("sys.stdout", Stream(stdout_tty))
    monkeypatch.setattr("sys.stderr", Stream(stderr_tty))
    assert progress.interactive() is expected
