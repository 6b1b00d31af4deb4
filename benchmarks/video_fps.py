"""End-to-end video FPS of ``distilseg predict VIDEO`` with the INT8 ONNX distilled student.

Makes a 1080p clip from CamVid validation frames (upscaled 480x360 -> 1920x1080, H.264), exports
``zoo:camvid-student-kd`` to an INT8 ONNX file at 360x640 (static QDQ, calibrated on CamVid train images;
a fixed size because INT8 quantization of the dynamic-size graph fails in onnxruntime's symbolic shape
inference; 360x640 is exactly the keep-ratio size of a 1080p frame at short side 360),
then times ``distilseg predict CLIP --checkpoint KD_INT8.onnx --resize keep-ratio --short-side 360 --out OUT``:
decode, inference at 360x640, labels to 1080p, overlay + legend, H.264 encode (``apps/video.py``: a
decode -> network -> encode thread pipeline). Besides the end-to-end FPS, the JSON holds the per-stage busy
time per frame reported by ``segment_video`` (the stages overlap, so they add up to more than the wall time)
and the pixel agreement of the video label maps (argmax at network resolution, nearest upsampling) with
single-image ``predict``'s (logits resized bilinearly to 1080p, then argmax) on the first frames. Prints one
JSON object (and writes it with ``--json``). Usage:

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


def agreement(onnx: Path, clip: Path, frames: int, short_side: int, work: Path) -> dict | None:
    """Pixel agreement of the video label maps (network-resolution argmax, nearest upsampling) with
    single-image ``predict``'s (bilinear logits at 1080p, then argmax) on the first ``frames`` frames."""
    if frames <= 0:
        return None
    import itertools

    import numpy as np
    from PIL import Image

    from distilseg import load
    from distilseg.apps.video import segment_video
    from distilseg.apps.video_io import FrameSource, open_video

    seg = load(onnx)
    seg.set_inference(resize="keep-ratio", short_side=short_side)
    src = open_video(clip)
    first = FrameSource(name=src.name, frames=lambda: itertools.islice(src.frames(), frames), total=frames, fps=src.fps)
    maps = {}
    for mode in ("nearest", "bilinear"):
        segment_video(seg, first, work / f"agree_{mode}", "clip", save_labels=True, progress=False, upsample=mode)
        maps[mode] = [np.asarray(Image.open(f)) for f in sorted((work / f"agree_{mode}" / "clip_labels").glob("*.png"))]
    same = sum(int((a == b).sum()) for a, b in zip(maps["nearest"], maps["bilinear"]))
    total = sum(a.size for a in maps["nearest"])
    return {"frames": len(maps["nearest"]), "pixel_agreement": round(same / max(total, 1), 4),
            "size": list(maps["nearest"][0].shape[::-1]) if maps["nearest"] else None}


def profile_serial(onnx: Path, clip: Path, short_side: int, work: Path) -> dict:
    """The video stages one after the other (``segment_video(..., pipeline=False)``): per-stage costs."""
    from distilseg import load
    from distilseg.apps.video import segment_video
    from distilseg.apps.video_io import open_video

    seg = load(onnx)
    seg.set_inference(resize="keep-ratio", short_side=short_side)
    return segment_video(seg, open_video(clip), work / "serial", "clip", progress=False, pipeline=False)


def main(argv: list[str] | None = None) -> int:
    from distilseg.cli import main as cli

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/datasets/camvid", help="CamVid root (val/ frames, train/ calibration)")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--short-side", type=int, default=360)
    p.add_argument("--onnx", default=None, help="reuse this INT8 ONNX file instead of exporting")
    p.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write the JSON result here")
    p.add_argument("--repeat", type=int, default=3, help="run the predict command this many times (median)")
    p.add_argument("--agreement-frames", type=int, default=8,
                   help="frames on which to compare video labels with single-image predict (0: skip)")
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
    import statistics

    import distilseg.apps.video as video

    load_before = os.getloadavg()[0]
    runs: list[dict] = []
    walls: list[float] = []
    segment_video = video.segment_video

    def recording(*a, **kw):  # ``predict`` looks segment_video up at call time: keep its per-stage result
        runs.append(segment_video(*a, **kw))
        return runs[-1]

    video.segment_video = recording
    try:
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            code = cli(cmd)
            walls.append(time.perf_counter() - t0)
            if code:
                return code
    finally:
        video.segment_video = segment_video
    import av

    with av.open(str(out / f"{clip.stem}_overlay.mp4")) as c:
        s = c.streams.video[0]
        decoded = sum(1 for _ in c.decode(s))
        size = [s.codec_context.width, s.codec_context.height]
    median = sorted(runs, key=lambda r: r["fps"])[len(runs) // 2]
    serial = profile_serial(onnx, clip, args.short_side, work)

    def per_frame(r: dict) -> dict:
        return {k: round(1000 * v / max(r["frames"], 1), 1) for k, v in r["stages"].items()}

    result = {
        "command": "distilseg " + " ".join(cmd),
        "input": {"frames": n, "size": [1920, 1080], "source": "CamVid val frames upscaled from 480x360"},
        "model": "zoo:camvid-student-kd, INT8 ONNX (static QDQ, exported at 360x640)",
        "network_input": [args.short_side, round(args.short_side * 16 / 9)],
        "output": {"frames": decoded, "size": size},
        "fps_end_to_end": round(statistics.median(r["fps"] for r in runs), 2),
        "fps_runs": [round(r["fps"], 2) for r in runs],
        "stage_ms_per_frame_pipelined": per_frame(median),
        "stage_ms_per_frame_serial": per_frame(serial),
        "fps_serial": round(serial["fps"], 2),
        "command_wall_s": [round(w, 2) for w in walls],
        "label_agreement_vs_image_predict": agreement(onnx, clip, args.agreement_frames, args.short_side, work),
        "encoder": "libx264 preset ultrafast, crf 23, yuv420p",
        "note": "fps_end_to_end: frames / seconds of the video pipeline as `predict` prints it (decode, "
                "preprocess, network, labels to 1080p, overlay + legend, H.264 encode), median of the runs; "
                "command_wall_s: each whole predict call, model load included (in a fresh process the CLI's "
                "imports add ~1.5 s once: torch and the inference stack; the training stack is not imported). "
                "stage_ms_per_frame_pipelined: busy wall time of each stage of the median run; the stages "
                "overlap in three threads (decode+preprocess | network+argmax | upsample+overlay+encode) and "
                "share 2 cores, so each is stretched and they add up to more than the frame time. "
                "stage_ms_per_frame_serial: the same stages one after the other (pipeline=False): what each "
                "costs. Before this change (serial: float preprocessing at 1080p, logits resized bilinearly "
                "to 1080p then argmax, float overlay, veryfast encode): 1.26 frames/s under load ~7, 2.62 "
                "frames/s with the training paused; per frame decode 18, preprocess 51, network 59, logits "
                "to 1080p 70 + argmax 32, overlay 72, legend 3, encode 52 ms (profiled stage by stage, "
                "training paused, other agents active).",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "load_average_1min_before_run": round(load_before, 2)},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
