"""Every numeric flag of every command, found by walking the parsers ``distilseg.cli`` builds, given ``nan``,
``inf``, ``-1`` and ``0``: the command either refuses in one line (no traceback) or accepts the value and reaches
its work. The work itself is replaced by a stop (``_Reached``), so no training, export or benchmark runs.

A non-finite value must never reach the work. ``-1`` must not either, except for the flags listed in
``NEGATIVE_OK`` (none today). ``0`` may, where it means something (``--check-images 0``: no check)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from distilseg.cli import build_parser, main

NEGATIVE_OK: set[tuple[str, str]] = set()


class _Reached(Exception):
    """The command accepted its arguments and started its work."""


def _stop(*args, **kwargs):
    raise _Reached()


# the first call of each command's work, after its arguments are checked
WORK = [
    ("distilseg.training.train", "run_training"),  # train, distill, demo
    ("distilseg.apps.evaluate", "evaluate_model"),  # eval
    ("distilseg.apps.predict", "_write_outputs"),  # predict (images)
    ("distilseg.distill.compress.Compressor", "run"),  # compress
    ("distilseg.export.sources", "load_torch_model"),  # export
    ("distilseg.export.bench", "_resolve"),  # bench
    ("distilseg.data.stats", "compute_class_stats"),  # data inspect
    ("distilseg.data.overlap", "split_overlap"),  # data overlap
    ("distilseg.models.commands", "describe_models"),  # models
]


def numeric_flags() -> list[tuple[tuple[str, ...], str, int]]:
    """(command path, flag, nargs count) for every int / float option of every command."""
    found = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for action in parser._actions:  # noqa: SLF001 - argparse has no public walk
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))
            elif action.type in (int, float) and action.option_strings:
                count = action.nargs if isinstance(action.nargs, int) else 1
                found.append((path, action.option_strings[0], count))

    walk(build_parser(), ())
    return found


def _base(command: tuple[str, ...], art: Path, image: Path, out: Path) -> list[str]:
    syn = ["--dataset", "synthetic", "--dataset-args", "num_images=2", "size=[32,48]"]
    bases = {
        ("train",): ["train", *syn, "--model", "unet", "--out", str(out)],
        ("distill",): ["distill", *syn, "--teacher", str(art), "--model", "unet", "--out", str(out)],
        ("eval",): ["eval", *syn, "--checkpoint", str(art), "--no-progress", "--out", str(out)],
        ("predict",): ["predict", "--checkpoint", str(art), str(image), "--no-progress", "--out", str(out)],
        ("demo",): ["demo", "--out", str(out)],
        ("compress",): ["compress", "--dataset", "synthetic", "--out", str(out)],
        ("export",): ["export", "--checkpoint", str(art), "--out", str(out / "m.onnx")],
        ("bench",): ["bench", "--model", "unet", "--img-size", "32", "48"],
        ("data", "inspect"): ["data", "inspect", "--dataset", "synthetic", "--out", str(out)],
        ("data", "overlap"): ["data", "overlap", "--dataset", "synthetic", "--splits", "train", "val",
                              "--out", str(out)],
        ("models",): ["models"],
    }
    return list(bases[command])


FLAGS = numeric_flags()
VALUES = ("nan", "inf", "-1", "0")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    import numpy as np
    from PIL import Image

    from distilseg.artifact import save_artifact
    from distilseg.models import create_model

    d = tmp_path_factory.mktemp("flags")
    model = create_model("unet", 7, depth=2, base_width=4)
    art = save_artifact(d / "art", model, {"num_classes": 7, "input_size": [32, 48], "dataset": "synthetic"})
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(d / "img.png")
    return art, d / "img.png"


def test_every_command_with_numbers_is_walked():
    commands = {path for path, _, _ in FLAGS}
    assert commands >= {("train",), ("distill",), ("eval",), ("predict",), ("export",), ("bench",), ("compress",),
                        ("data", "inspect")}
    assert len(FLAGS) >= 60


@pytest.mark.parametrize("command, flag, count", [pytest.param(*f, id=" ".join([*f[0], f[1]])) for f in FLAGS])
def test_numeric_flag_refuses_in_one_line_or_reaches_the_work(inputs, tmp_path, capsys, monkeypatch, command, flag,
                                                             count):
    import importlib

    for module, name in WORK:
        owner: object
        if module.endswith(".Compressor"):
            owner = getattr(importlib.import_module(module.rsplit(".", 1)[0]), "Compressor")
        else:
            owner = importlib.import_module(module)
        monkeypatch.setattr(owner, name, _stop)
    art, image = inputs
    problems = []
    for value in VALUES:
        argv = _base(command, art, image, tmp_path / f"out{value}")
        # a pair flag (H W) gets the value once, next to a good one: each side is checked
        argv += [flag, *([value] + ["32"] * (count - 1))]
        capsys.readouterr()
        try:
            code = main(argv)
        except _Reached:
            if value in ("nan", "inf") or (value == "-1" and (" ".join(command), flag) not in NEGATIVE_OK):
                problems.append(f"{flag} {value}: accepted, the work started")
            continue
        except SystemExit as exc:  # argparse: an int flag given 'nan'
            code = exc.code
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        if "Traceback" in err or code == 0 or len(lines) != 1 or ": error: " not in lines[0]:
            problems.append(f"{flag} {value}: exit {code}, stderr {lines}")
    assert not problems, "; ".join(problems)
