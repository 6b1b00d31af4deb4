"""Hostile input, the next round, table-driven like ``test_bad_inputs.py``: names that collide with the user's
files, ``--resume`` with changed settings, values that arrive by other doors (dataset options, ONNX sidecars
and foreign graphs, YAML), sizes that would exhaust memory, inputs that cannot be read whole, paths that climb
out of a dataset root. Each case: the expected exit code, exactly one ``distilseg CMD: error:`` line naming
the file or the setting, no traceback, and every file the user had before unchanged (checksums and mtimes)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from distilseg.cli import main

pytestmark = pytest.mark.usefixtures("run_config_check")

SYN = ["--dataset", "synthetic", "--dataset-args", "num_images=4", "size=[32,48]"]
TRAIN = ["train", *SYN, "--model", "unet", "--model-args", "depth=2", "base_width=4", "--img-size", "32", "48",
         "--batch-size", "2", "--epochs", "1", "--limit-train-batches", "1", "--num-workers", "0",
         "--accelerator", "cpu", "--no-progress", "--no-augment"]
EVAL = ["eval", *SYN, "--no-progress"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _artifact(folder: Path, num_classes: int = 7, **change) -> Path:
    from distilseg.artifact import save_artifact
    from distilseg.data import create_dataset
    from distilseg.models import create_model

    ds = create_dataset("synthetic", split="val", num_images=2, size=[32, 48])
    model = create_model("unet", num_classes, depth=2, base_width=4)
    save_artifact(folder, model, {
        "num_classes": num_classes, "class_names": [f"c{i}" for i in range(num_classes)],
        "palette": ds.palette.tolist()[:num_classes], "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225], "input_size": [32, 48], "ignore_index": 255, "dataset": "synthetic"})
    if change:
        conf = json.loads((folder / "config.json").read_text())
        conf.update(change)
        (folder / "config.json").write_text(json.dumps(conf))
    return folder


def _edit_json(path: Path, **change) -> None:
    data = json.loads(path.read_text())
    data.update(change)
    path.write_text(json.dumps(data))


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb to any decoder)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + width // 8) * 4, 9)  # a few rows; the header is what counts
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _foreign_onnx(path: Path, model, channels: int = 3) -> None:
    import torch

    torch.onnx.export(model.eval(), torch.randn(1, channels, 32, 48), str(path), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False)


def _folder_dataset(root: Path, names: list[str], mask_size: tuple[int, int] = (32, 48)) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(root / "images" / name)
        Image.fromarray(rng.integers(0, 3, mask_size, dtype=np.uint8)).save(root / "masks" / (Path(name).stem + ".png"))
    return root


YAMLS = {
    "dup_key.yaml": "dataset: synthetic\nmodel: unet\nlr: 0.1\nepochs: 2\nlr: 0.2\n",
    "dargs_text.yaml": "dataset: synthetic\nmodel: unet\ndataset_args: {num_images: abc}\n",
}


def _alias_bomb() -> str:
    text = 'dataset: synthetic\nmodel: unet\nmodel_args:\n  a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    prev = "a"
    for name in "bcdefghi":
        text += f"  {name}: &{name} [{','.join(['*' + prev] * 9)}]\n"
        prev = name
    return text


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Path:
    """Every input the cases use, built once (a finished export, a resumable run, datasets, videos)."""
    import torch
    from PIL import Image

    d = tmp_path_factory.mktemp("inputs")
    for name, text in YAMLS.items():
        (d / name).write_text(text)
    (d / "bomb.yaml").write_text(_alias_bomb())
    assert len((d / "bomb.yaml").read_bytes()) < 700
    art = _artifact(d / "art")
    _artifact(d / "art_huge_size", input_size=[100000, 100000])
    _artifact(d / "art_wide", model_args={"depth": 2, "base_width": 1000000})
    _artifact(d / "art_ens", architecture="ensemble",
              model_args={"members": [{"architecture": "unet", "model_args": {"depth": 2, "base_width": 4}}] * 400})
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(d / "good.png")
    _png_header_only(d / "bomb.png", 20000, 20000)
    pages = [Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)) for _ in range(3)]
    pages[0].save(d / "pages.tif", save_all=True, append_images=pages[1:])
    (d / "nan_weights.txt").write_text("1 1 nan 1 1 1 1\n")
    # user files next to export targets
    (d / "notes").mkdir()
    (d / "notes" / "report.json").write_text('{"my": "notes"}\n')
    # a finished export, then the files beside it: the sidecar is its own
    assert main(["export", "--checkpoint", str(art), "--out", str(d / "exp" / "model.onnx"), "--check-images", "1"]) == 0
    # sidecars with bad values, each next to a copy of the good graph
    for name, change in {"pal300": {"palette": [[0, 0, 300]] * 7}, "meanabc": {"mean": "abc"},
                         "k9": {"num_classes": 9, "class_names": [f"c{i}" for i in range(9)],
                                "palette": [[0, 0, 0]] * 9},
                         "k0": {"num_classes": 0}}.items():
        shutil.copy(d / "exp" / "model.onnx", d / f"{name}.onnx")
        shutil.copy(d / "exp" / "model.json", d / f"{name}.json")
        _edit_json(d / f"{name}.json", **change)
    classifier = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    _foreign_onnx(d / "classifier.onnx", classifier)
    _foreign_onnx(d / "rgba.onnx", torch.nn.Conv2d(4, 7, 1), channels=4)
    # datasets
    _folder_dataset(d / "fold", ["s0.png", "s1.png"])
    _folder_dataset(d / "twins", ["s0.png", "s1.png"])
    Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(d / "twins" / "images" / "s0.jpg")
    _folder_dataset(d / "loopdata", ["s0.png"])
    os.symlink("l.png", d / "loopdata" / "images" / "l.png")
    (d / "loopfolder").mkdir()
    shutil.copy(d / "good.png", d / "loopfolder" / "a.png")
    os.symlink("l.png", d / "loopfolder" / "l.png")
    cam = d / "camvid"
    for sub in ("train", "trainannot"):
        (cam / sub).mkdir(parents=True)
    shutil.copy(d / "good.png", cam / "train" / "a.png")
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(cam / "trainannot" / "a.png")
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(d / "outside.png")  # what '..' would reach
    (cam / "train.txt").write_text("/x/train/a.png /x/trainannot/a.png\n/x/../outside.png /x/../outside.png\n")
    # a resumable run (its state kept)
    assert main([*TRAIN, "--checkpoint-every-steps", "1", "--out", str(d / "run")]) == 0
    assert (d / "run" / "checkpoints" / "last.ckpt").is_file()
    return d


# (id, argv with {d} = the inputs folder and {o} = a fresh output path, exit code, text the error line must hold)
CASES = [
    # 1. nothing the user had is lost: names that collide
    ("export-sidecar-over-user-json", ["export", "--checkpoint", "{d}/art", "--out", "{d}/notes/report.onnx"], 2,
     "{d}/notes/report.json already exists and is not the sidecar of an earlier distilseg-onnx export"),
    ("export-over-artifact-config", ["export", "--checkpoint", "{d}/art", "--out", "{d}/art/config.onnx"], 2,
     "{d}/art/config.json already exists and is not the sidecar"),
    ("export-failing-check-keeps-old", ["export", "--checkpoint", "{d}/art", "--out", "{d}/exp/model.onnx",
                                        "--check-images", "1", "--tolerance", "0"], 1,
     "{d}/exp/model.onnx: the exported fp32 model disagrees with PyTorch"),
    ("inspect-dump-masks-into-root", ["data", "inspect", "--dataset", "folder", "--root", "{d}/fold", "--dump-masks",
                                      "--out", "{d}/fold"], 2, "{d}/fold/masks exists"),
    # 2. --resume continues the same run or refuses
    ("resume-changed-model", [*TRAIN[:-10], "--model-args", "depth=3", "base_width=4", *TRAIN[-10:], "--resume",
                              "--out", "{d}/run"], 2, "model_args: saved {{'depth': 2, 'base_width': 4}}"),
    ("resume-changed-lr", [*TRAIN, "--lr", "0.5", "--resume", "--out", "{d}/run"], 2, "lr: saved 0.001, now 0.5"),
    ("resume-other-dataset", [*TRAIN[:1], "--dataset", "folder", "--root", "{d}/fold", *TRAIN[6:], "--resume",
                              "--out", "{d}/run"], 2, "dataset: saved 'synthetic', now 'folder'"),
    # 3. every value checked where it enters
    ("tta-nan-scale", ["predict", "--checkpoint", "{d}/art", "{d}/good.png", "--tta", "scales=nan", "--out", "{o}"], 2,
     "scales=nan"),
    ("kd-nan-temperature", ["distill", *SYN, "--teacher", "{d}/art", "--model", "unet", "--kd", "logits@T=nan",
                            "--out", "{o}"], 2, "--kd: logits@T must be a finite number"),
    ("kd-nan-weight", ["distill", *SYN, "--teacher", "{d}/art", "--model", "unet", "--kd", "logits:nan",
                       "--out", "{o}"], 2, "must be a finite number"),
    ("hard-weight-nan", ["distill", *SYN, "--teacher", "{d}/art", "--model", "unet", "--hard-weight", "nan",
                         "--out", "{o}"], 2, "--hard-weight must be a finite number, got nan"),
    ("class-weights-nan", [*TRAIN, "--class-weights", "{d}/nan_weights.txt", "--out", "{o}"], 2,
     "{d}/nan_weights.txt: class weights must be finite numbers"),
    ("dataset-args-text", [*EVAL[:1], "--dataset", "synthetic", "--dataset-args", "num_images=abc",
                           "--checkpoint", "{d}/art", "--out", "{o}"], 2,
     "dataset 'synthetic': option num_images must be a non-negative integer, got 'abc'"),
    ("dataset-args-list", [*TRAIN[:1], "--dataset", "synthetic", "--dataset-args", "num_images=[16]", *TRAIN[6:],
                           "--out", "{o}"], 2, "option num_images must be a non-negative integer, got [16]"),
    ("dataset-args-yaml", ["train", "--config", "{d}/dargs_text.yaml", "--out", "{o}"], 2,
     "option num_images must be a non-negative integer, got 'abc'"),
    ("sidecar-palette-300", ["predict", "--checkpoint", "{d}/pal300.onnx", "{d}/good.png", "--out", "{o}"], 1,
     "{d}/pal300.json: palette must be"),
    ("sidecar-mean-text", ["predict", "--checkpoint", "{d}/meanabc.onnx", "{d}/good.png", "--out", "{o}"], 1,
     "{d}/meanabc.json: mean must be a list of 3 numbers"),
    ("sidecar-class-count", ["predict", "--checkpoint", "{d}/k9.onnx", "{d}/good.png", "--out", "{o}"], 1,
     "{d}/k9.json: num_classes is 9 but k9.onnx outputs 7 classes"),
    ("sidecar-zero-classes", ["predict", "--checkpoint", "{d}/k0.onnx", "{d}/good.png", "--out", "{o}"], 1,
     "{d}/k0.json: num_classes must be a positive integer"),
    ("onnx-classifier", ["predict", "--checkpoint", "{d}/classifier.onnx", "{d}/good.png", "--out", "{o}"], 1,
     "{d}/classifier.onnx: the graph's output has shape [1, 4]"),
    ("onnx-four-channels", ["predict", "--checkpoint", "{d}/rgba.onnx", "{d}/good.png", "--out", "{o}"], 1,
     "{d}/rgba.onnx: the graph's input has shape [1, 4, 32, 48]"),
    ("yaml-duplicate-key", ["train", "--config", "{d}/dup_key.yaml", "--out", "{o}"], 2,
     "{d}/dup_key.yaml: invalid YAML (duplicate key 'lr' on lines 3 and 5)"),
    ("yaml-alias-bomb", ["train", "--config", "{d}/bomb.yaml", "--out", "{o}"], 2,
     "{d}/bomb.yaml: invalid YAML (aliases expand to more than"),
    # 4. sizes bounded before allocation
    ("img-size-huge", [*TRAIN, "--img-size", "30000", "30000", "--out", "{o}"], 2,
     "--img-size [30000, 30000]: each side must be at most 8192"),
    ("artifact-input-size-huge", [*EVAL, "--checkpoint", "{d}/art_huge_size", "--out", "{o}"], 1,
     "{d}/art_huge_size/config.json: input_size must be two positive integers [H, W] of at most 8192"),
    ("artifact-base-width-huge", [*EVAL, "--checkpoint", "{d}/art_wide", "--out", "{o}"], 1,
     "{d}/art_wide/config.json: architecture 'unet' with these model_args has"),
    ("ensemble-400-members", [*EVAL, "--checkpoint", "{d}/art_ens", "--out", "{o}"], 1,
     "members must be a list of at most 16 models, got 400 members"),
    ("png-decompression-bomb", ["predict", "--checkpoint", "{d}/art", "{d}/bomb.png", "--out", "{o}"], 1,
     "{d}/bomb.png: not an image"),
    # 5. inputs read whole or refused
    ("multi-page-tiff", ["predict", "--checkpoint", "{d}/art", "{d}/pages.tif", "--out", "{o}"], 1,
     "{d}/pages.tif: holds 3 pictures"),
    ("looping-link-in-dataset", ["data", "inspect", "--dataset", "folder", "--root", "{d}/loopdata", "--out", "{o}"], 1,
     "{d}/loopdata/images/l.png: cannot be read"),
    ("looping-link-in-predict-folder", ["predict", "--checkpoint", "{d}/art", "{d}/loopfolder", "--out", "{o}"], 1,
     "{d}/loopfolder/l.png: cannot be read"),
    ("two-images-one-stem", ["data", "inspect", "--dataset", "folder", "--root", "{d}/twins", "--out", "{o}"], 1,
     "share the name 's0'"),
    ("eval-negative-samples", [*EVAL, "--checkpoint", "{d}/art", "--samples", "-1", "--out", "{o}"], 2,
     "--samples must be 0 (no samples.png) or more, got -1"),
    # 6. paths stay inside the dataset root
    ("camvid-list-climbs-out", ["data", "inspect", "--dataset", "camvid", "--root", "{d}/camvid", "--out", "{o}"], 1,
     "{d}/camvid/train.txt:2: '/x/../outside.png' does not end in FOLDER/FILE inside the dataset root"),
]


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    found = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != ".lock":
            found[str(p.relative_to(folder))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return found


def run_case(fx: Path, tmp_path: Path, capsys, argv: list[str]) -> tuple[int, list[str], dict, dict]:
    fill = {"d": str(fx), "o": str(tmp_path / "out")}
    args = [a.format(**fill) for a in argv]
    before = _snapshot(fx)
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [line for line in err.splitlines() if line.strip()], before, _snapshot(fx)


@pytest.mark.parametrize("argv, code, needle", [pytest.param(a, c, n, id=i) for i, a, c, n in CASES])
def test_hostile_input_is_one_line_and_changes_nothing(fx, tmp_path, capsys, argv, code, needle):
    got, lines, before, after = run_case(fx, tmp_path, capsys, argv)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"distilseg {argv[0]}: error: "), lines[0]
    assert needle.format(d=fx) in lines[0], lines[0]
    assert got == code, lines[0]
    assert after == before  # nothing the user had changed: checksums and modification times


def test_the_table_covers_every_section():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)
    assert {c[1][0] for c in CASES} >= {"train", "eval", "predict", "export", "distill", "data"}


# ---- what the table cannot say: outcomes that must succeed, with the right words --------------------------------
def test_export_over_its_own_earlier_export_replaces_both_files(fx, tmp_path):
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(fx / "art"), "--out", str(out), "--check-images", "0"]) == 0
    first = json.loads(out.with_suffix(".json").read_text())
    assert main(["export", "--checkpoint", str(fx / "art"), "--out", str(out), "--check-images", "1"]) == 0
    again = json.loads(out.with_suffix(".json").read_text())
    assert first.get("check") is None and again["check"]["num_images"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export-")]  # no staging left behind


def test_resume_may_change_epochs_and_workers(fx, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fx / "run", run)
    argv = [*TRAIN, "--out", str(run), "--resume", "--epochs", "2", "--num-workers", "0"]
    assert main(argv) == 0
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2


def test_resume_refusal_leaves_the_run_record(fx, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fx / "run", run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**saved, "out": str(run)}, sort_keys=False))  # the run, moved
    before = _snapshot(run)
    assert main([*TRAIN, "--lr", "0.5", "--gamma", "0.5", "--resume", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "lr: saved 0.001, now 0.5" in err and "gamma: saved 0.9, now 0.5" in err
    assert "may change on resume" in err and "epochs" in err
    assert _snapshot(run) == before


def test_video_writers_of_one_output_use_their_own_temporary_files(tmp_path):
    from fractions import Fraction

    from distilseg.apps.video_io import VideoWriter as _Writer, open_video

    target = tmp_path / "clip_overlay.mp4"
    a, b = _Writer(target, Fraction(10)), _Writer(target, Fraction(10))
    assert a.tmp != b.tmp
    frame = np.zeros((32, 48, 3), np.uint8)
    for _ in range(3):
        a.write(frame)
        b.write(frame + 100)
    a.close(True)
    b.close(True)
    assert sum(1 for _ in open_video(target).frames()) == 3
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_truncated_video_warns_how_many_frames_were_read(tmp_path, capsys):
    import av

    clip = tmp_path / "clip.mkv"
    with av.open(str(clip), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.height, s.width, s.pix_fmt = 32, 48, "yuv420p"
        for i in range(20):
            f = av.VideoFrame.from_ndarray(np.full((32, 48, 3), i * 10, np.uint8), format="rgb24")
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    from distilseg.apps.video import segment_video
    from distilseg.apps.video_io import FrameSource, open_video
    from distilseg.inference.segmenter import load

    source = open_video(clip)
    full = sum(1 for _ in source.frames())
    assert full == 20
    cut = FrameSource(name=str(clip), frames=lambda: ((i, f) for i, f in source.frames() if i < 5), total=20,
                      fps=source.fps)
    art = _artifact(tmp_path / "art")
    result = segment_video(load(str(art)), cut, tmp_path / "out", "clip", progress=False)
    err = capsys.readouterr().err
    assert result["frames"] == 5
    assert "decoding ended after 5 of the 20 frames" in err


def test_recursive_glob_over_looping_links_ends(tmp_path):
    from PIL import Image

    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "a" / "x.png")
    for name in ("l1", "l2", "l3"):  # each level triples the paths a link-following glob walks
        os.symlink(".", tmp_path / name)
    code = ("import sys; from distilseg.apps.predict import expand_inputs; "
            f"print(len(expand_inputs([{str(tmp_path / '**' / '*.png')!r}])))")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC}, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


def test_decompression_bomb_is_skipped_with_skip_bad(fx, tmp_path, capsys):
    assert main(["predict", "--checkpoint", str(fx / "art"), str(fx / "good.png"), str(fx / "bomb.png"),
                 "--skip-bad", "--no-progress", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{fx / 'bomb.png'}" in err
    assert (tmp_path / "good_color.png").is_file()


def test_inspect_reports_image_sizes_not_mask_sizes(tmp_path, capsys):
    root = _folder_dataset(tmp_path / "d", ["s0.png"], mask_size=(16, 24))
    assert main(["data", "inspect", "--dataset", "folder", "--root", str(root), "--num-samples", "0",
                 "--out", str(tmp_path / "o")]) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["image_sizes"] == {"32x48": 1}


def test_inspect_may_dump_masks_again_over_its_own_output(tmp_path):
    root = _folder_dataset(tmp_path / "d", ["s0.png"])
    argv = ["data", "inspect", "--dataset", "folder", "--root", str(root), "--dump-masks", "--num-samples", "0",
            "--out", str(tmp_path / "o")]
    assert main(argv) == 0 and main(argv) == 0
    assert (tmp_path / "o" / "masks" / "s0.png").is_file()


def test_eval_samples_zero_does_not_claim_samples_png(fx, tmp_path, capsys):
    assert main([*EVAL, "--checkpoint", str(fx / "art"), "--samples", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "samples.png" not in out.splitlines()[-1] and not (tmp_path / "samples.png").exists()


def test_yaml_merge_keys_may_be_overridden():
    from distilseg import safe_yaml

    assert safe_yaml.load("b: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 5\n")["d"] == {"x": 5, "y": 2}
