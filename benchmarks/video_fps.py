"""End-to-end video FPS of ``distilseg predict VIDEO`` with the INT8 ONNX distilled student.

Makes a 1080p clip from CamVid validation frames (upscaled 480x360 -> 1920x1080, H.264), exports
``zoo:camvid-student-kd`` to an INT8 ONNX file at 360x640 (static QDQ, calibrated on CamVid train images;
a fixed size because INT8 quantization of the dynamic-size graph fails in onnxruntime's symbolic shape
inference; 360x640 is exactly the keep-ratio size of a 1080p frame at short side 360),
then times ``distilseg predict CLIP --checkpoint KD_INT8.onnx --resize keep-ratio --short-side 360 --out OUT``:
decode, inference at 360x640, logits resized to 1080p, overlay + legend, H.264 encode. Prints one JSON object
(and writes it with ``--json``). Usage:

    python benchmarks/video_fps.py --root ../shared/datasets/camvid [--frames 60] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def make_clip(frames_dir: Path, path: Path, n: int, fps: int = 30, size=(1920, 1080)) -> int:
    import av
    import numpy as np
    from PIL import Image

    files = sorted(frames_dir.glob("*.png"))[:n]
    if not files:
        raise SystemExit(f"no PNG frames in {frames_dir}")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for f in files:
            frame = np.asarray(Image.open(f).convert("RGB").resize(size, Image.BICUBIC))
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return len(files)


def main(argv: list[str] | None = None) -> int:
    from distilseg.cli import main as cli

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/datasets/camvid", help="CamVid root (val/ frames, train/ calibration)")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--short-side", type=int, default=360)
    p.add_argument("--onnx", default=None, help="reuse this INT8 ONNX file instead of exporting")
    p.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write the JSON result here")
    args = p.parse_args(argv)

    work = Path(args.work or tempfile.mkdtemp(prefix="video_fps_"))
    work.mkdir(parents=True, exist_ok=True)
    clip = work / "camvid_1080p.mp4"
    n = make_clip(Path(args.root) / "val", clip, args.frames)
    onnx = Path(args.onnx) if args.onnx else work / "camvid_student_kd_int8.onnx"
    if not onnx.is_file():
        code = cli(["export", "--checkpoint", "zoo:camvid-student-kd", "--out", str(onnx), "--img-size", str(args.short_side), str(round(args.short_side * 16 / 9)), "--int8",
                    "--calibration-dataset", "camvid", "--calibration-root", args.root,
                    "--calibration-images", "32", "--check-images", "2"])
        if code:
            return code
    out = work / "out"
    cmd = ["predict", str(clip), "--checkpoint", str(onnx), "--resize", "keep-ratio", "--short-side",
           str(args.short_side), "--out", str(out)]
    t0 = time.perf_counter()
    code = cli(cmd)
    wall = time.perf_counter() - t0
    if code:
        return code
    import av

    with av.open(str(out / f"{clip.stem}_overlay.mp4")) as c:
        s = c.streams.video[0]
        decoded = sum(1 for _ in c.decode(s))
        size = [s.codec_context.width, s.codec_context.height]
    result = {
        "command": "distilseg " + " ".join(cmd),
        "input": {"frames": n, "size": [1920, 1080], "source": "CamVid val frames upscaled from 480x360"},
        "model": "zoo:camvid-student-kd, INT8 ONNX (static QDQ, exported at 360x640)",
        "network_input": [args.short_side, round(args.short_side * 16 / 9)],
        "output": {"frames": decoded, "size": size},
        "wall_s": round(wall, 2),
        "fps_end_to_end": round(decoded / wall, 2),
        "note": "wall time of the whole predict command: model load, decode, inference, 1080p logits resize, "
                "overlay + legend, H.264 encode",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
