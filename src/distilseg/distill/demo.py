"""``distilseg demo``: the toolkit's main job in a few CPU minutes, on built-in synthetic road scenes.

Why: a new user (or CI) sees what distilseg is for without downloading anything: a teacher is trained, a small
student is trained without and then with distillation from it, the distilled student is quantized to INT8, and
one report compares the four (accuracy, size, latency) with the Pareto plot and example predictions. It runs the
same pipeline as ``distilseg compress`` (stages, skipping, report), with small settings of its own, chosen so that
the whole demo stays within 5 minutes on 2 CPU cores. It ends with a bundled model (``zoo:camvid-student-kd``)
predicting a synthetic frame through ``distilseg predict``: the path a user takes with a ready-made model.
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import UsageError
from ..io import atomic_write_json

__all__ = ["DEMO_SETTINGS", "ZOO_MODEL", "demo_settings", "run_demo", "register_demo"]

ZOO_MODEL = "zoo:camvid-student-kd"
ZOO_FRAME_SIZE = (360, 480)  # the bundled models' input size
NUM_SAMPLES = 4  # rows of the image / ground truth / predictions grid

# Every key of a compress run (see distill/compress_settings.py), sized for the demo: a U-Net teacher (7.9M is
# too slow here; depth 3, width 16: 0.49M), a 21k-parameter lite_student as the student.
DEMO_SETTINGS: dict[str, Any] = {
    "preset": "demo",
    "dataset": "synthetic",
    "root": None,
    "dataset_args": {},
    "teacher": None,
    "teacher_model": "unet",
    "teacher_args": {"depth": 3, "base_width": 16},
    "student_model": "lite_student",
    "student_args": {"stem_channels": 8, "stage_channels": [16, 32], "decoder_channels": 16,
                     "stage3_dilations": [2, 4, 8]},
    "img_size": [96, 128],
    "teacher_epochs": 10,
    "epochs": 8,
    "batch_size": 8,
    "lr": 0.002,
    "scheduler": "cosine",
    "augment": False,
    "kd": "cwd@T=4:3,logits@T=2:1",
    "hard_weight": 1.0,
    "calibration_images": 32,
    "bench_runs": 20,
    "bench_warmup": 3,
    "eval_batch_size": 8,
    "precision": "32",
    "accelerator": "cpu",
    "num_workers": 0,
    "seed": 42,
    "threads": None,
    "ort_fp32": False,
}


def demo_settings(overrides: dict[str, Any] | None = None, epochs: int | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """The demo's compress settings with ``overrides`` on top; ``epochs`` sets every training stage's epochs."""
    s = copy.deepcopy(DEMO_SETTINGS)
    s.update(copy.deepcopy(overrides or {}))
    if epochs is not None:
        if epochs < 1:
            raise UsageError(f"--epochs must be a positive integer, got {epochs}")
        s["epochs"] = s["teacher_epochs"] = int(epochs)
    s["progress"] = bool(progress)
    return s


def _sample_grid(out: Path, comp: Any, settings: dict[str, Any]) -> Path:
    """Image | ground truth | teacher | student | KD student | INT8 KD student on the first validation images,
    with the class legend under the grid."""
    from ..inference.segmenter import load
    from ..viz import colorize, save_grid

    val = comp._eval_dataset()
    names, palette = list(val.classes), np.asarray(val.palette, dtype=np.uint8)
    idx = list(range(min(NUM_SAMPLES, len(val))))
    images = [val.load_image(i) for i in idx]
    truths = [val.load_mask(i) for i in idx]
    columns = [(label, load(ckpt).predict(images)) for _, label, ckpt, _ in comp._row_sources()]
    rows = [[img, colorize(gt, palette)] + [colorize(preds[k], palette) for _, preds in columns]
            for k, (img, gt) in enumerate(zip(images, truths))]
    return save_grid(rows, out / "samples.png", col_titles=["image", "ground truth"] + [c for c, _ in columns],
                     cell_width_in=2.2, legend=(names, palette))


def _zoo_prediction(out: Path, seed: int) -> tuple[str, list[Path]]:
    """Render one synthetic road frame at the bundled models' size and run ``distilseg predict`` on it with
    ``zoo:camvid-student-kd``; returns the command line and the pictures it wrote."""
    from PIL import Image

    from ..data.synthetic import render_scene
    from ..apps.predict import register_predict

    folder = out / "zoo_predict"
    folder.mkdir(parents=True, exist_ok=True)
    image, _ = render_scene(np.random.default_rng(seed), *ZOO_FRAME_SIZE)
    frame = folder / "synthetic_frame.png"
    Image.fromarray(image).save(frame)
    argv = ["predict", "--checkpoint", ZOO_MODEL, str(frame), "--legend", "--no-progress", "--out", str(folder)]
    parser = argparse.ArgumentParser(prog="distilseg")
    register_predict(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    args.func(args)
    return shlex.join(["distilseg", *argv]), [folder / "synthetic_frame_overlay.png"]


def run_demo(out: str | Path, epochs: int | None = None, progress: bool = True,
             settings: dict[str, Any] | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Teacher -> student -> KD student -> INT8 on synthetic scenes, report, then a bundled model's prediction.

    ``settings`` overrides keys of :data:`DEMO_SETTINGS` (smaller models or data for tests). Finished stages are
    reused when the demo runs again on the same folder. Returns the run's summary (``DIR/demo.json``).
    """
    from ..io import ensure_output_dir
    from .compress import Compressor
    from .report import write_reports

    out = ensure_output_dir(Path(out), create=False)
    s = demo_settings(settings, epochs, progress)
    t0 = time.perf_counter()
    comp = Compressor(out, s, log=log)
    summary = comp.run()
    samples = _sample_grid(out, comp, s)
    command, pictures = _zoo_prediction(out, int(s["seed"]))
    sections = [
        ("Image, ground truth and predictions",
         f"The first {NUM_SAMPLES} validation scenes, with the prediction of each model above. Colors: the legend "
         "under the grid (black: void, not scored).", samples),
        ("A bundled model",
         f"`{ZOO_MODEL}` (trained on CamVid road scenes, 11 classes) on a synthetic frame at "
         f"{ZOO_FRAME_SIZE[0]}x{ZOO_FRAME_SIZE[1]}, through the same command a user runs: `{command}`. "
         "It has never seen synthetic scenes; on real footage use it the same way.", pictures[0]),
    ]
    title = "distilseg demo: teacher, student, distilled student, INT8"
    write_reports(out, summary, out / "pareto.png", title=title, sections=sections)
    result = {
        "seconds": round(time.perf_counter() - t0, 1),
        "stages": summary["stages"],
        "settings": summary["settings"],
        "rows": [{k: r.get(k) for k in ("name", "label", "architecture", "params", "size_mb", "latency_ms", "mIoU")}
                 for r in summary["rows"]],
        "zoo_predict": {"command": command, "outputs": [str(p.relative_to(out)) for p in pictures]},
        "report": ["report.md", "report.html", "pareto.png", "samples.png"],
    }
    atomic_write_json(out / "demo.json", json.loads(json.dumps(result, default=str)))
    return result


def _run(args: argparse.Namespace) -> int:
    result = run_demo(args.out, epochs=args.epochs, progress=not args.no_progress)
    from .report import format_rows_markdown

    print(format_rows_markdown(result["rows"]))
    print(f"distilseg demo: done in {result['seconds']:.0f} s; report: {Path(args.out) / 'report.html'} "
          f"(and report.md)")
    return 0


def register_demo(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="the main job on synthetic data in a few CPU minutes: teacher, student, KD student, INT8, report",
        description="On the built-in synthetic road scenes (CPU, nothing downloaded): train a teacher, train a small "
        "student without distillation, distill the same student from the teacher, quantize it to INT8 (ONNX), "
        "evaluate and time all four, and write DIR/report.md and DIR/report.html (table, Pareto plot, "
        "image / ground truth / prediction grid). Then run `distilseg predict` with the bundled "
        f"{ZOO_MODEL} on a synthetic frame. Running it again on the same DIR reuses finished stages.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs of every training stage (default: teacher {DEMO_SETTINGS['teacher_epochs']}, "
                        f"students {DEMO_SETTINGS['epochs']})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    p.set_defaults(func=_run)
    return p
