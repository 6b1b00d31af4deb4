"""``distilseg predict`` on videos and frame folders (PyAV): frame count, size, label maps, errors."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distilseg.cli import main
from distilseg.artifact import save_artifact
from distilseg.models import create_model

av = pytest.importorskip("av")

K = 3


pytestmark = pytest.mark.usefixtures("run_config_check")


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("unet", K, depth=2, base_width=8)
    config = {"num_classes": K, "class_names": ["road", "car", "sky"],
              "palette": [[128, 64, 128], [0, 0, 142], [70, 130, 180]], "input_size": [32, 48]}
    return save_artifact(tmp_path_factory.mktemp("vid") / "art", model, config)


def _frames(n: int, h: int, w: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        f = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        f[: h // 2] += 120  # bright "sky" over a dark "road", moving a little each frame
        f[:, (4 * i) % w:(4 * i) % w + 10] = 255
        out.append(f)
    return out


def _write_clip(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _decode(path: Path) -> tuple[list[np.ndarray], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = Fraction(stream.average_rate)
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], rate


def test_video_overlay_frame_count_size_and_labels(art: Path, tmp_path: Path) -> None:
    clip = _write_clip(tmp_path / "clip.mp4", _frames(8, 96, 128))
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(art), str(clip), "--out", str(out), "--save-labels",
                 "--no-progress"]) == 0
    frames, rate = _decode(out / "clip_overlay.mp4")
    assert len(frames) == 8 and frames[0].shape == (96, 128, 3) and rate == 10
    labels = sorted((out / "clip_labels").glob("*.png"))
    assert [p.name for p in labels] == [f"{i:06d}.png" for i in range(8)]
    assert Image.open(labels[0]).size == (128, 96) and int(np.asarray(Image.open(labels[0])).max()) < K
    # --every 3: frames 0, 3, 6 at a third of the rate; --no-legend leaves the bottom rows to the overlay
    out2 = tmp_path / "out2"
    assert main(["predict", "--checkpoint", str(art), str(clip), "--out", str(out2), "--save-labels", "--every",
                 "3", "--no-legend", "--no-progress"]) == 0
    frames2, rate2 = _decode(out2 / "clip_overlay.mp4")
    assert len(frames2) == 3 and rate2 == Fraction(10, 3)
    assert sorted(p.name for p in (out2 / "clip_labels").iterdir()) == ["000000.png", "000003.png", "000006.png"]
    legend_rows = np.abs(frames[0][-8:].astype(int) - frames2[0][-8:].astype(int)).mean()
    assert legend_rows > 10  # the legend strip is drawn over the bottom rows


def test_frame_folder_as_video_in_name_order(art: Path, tmp_path: Path) -> None:
    folder = tmp_path / "drive"
    folder.mkdir()
    for i, f in enumerate(_frames(5, 45, 63)):  # odd sizes: padded by one pixel for yuv420p
        Image.fromarray(f).save(folder / f"f{i:03d}.png")
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(art), str(folder), "--as-video", "--fps", "5", "--out", str(out),
                 "--save-labels", "--no-progress"]) == 0
    frames, rate = _decode(out / "drive_overlay.mp4")
    assert len(frames) == 5 and frames[0].shape == (46, 64, 3) and rate == 5
    assert len(list((out / "drive_labels").glob("*.png"))) == 5
    assert not list(out.glob("*_color.png"))  # frames are not written as separate pictures


def test_unreadable_video_is_one_line_error(art: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    assert main(["predict", "--checkpoint", str(art), str(bad), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "broken.mp4" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "broken_overlay.mp4").exists()


def test_video_labels_nearest_vs_exact_and_frame_order(art: Path, tmp_path: Path) -> None:
    """Video labels: argmax at network resolution + nearest upsampling (default), or exactly single-image
    ``predict`` with ``upsample="bilinear"``; the pipeline keeps frame order and count."""
    from distilseg import load
    from distilseg.apps.video import segment_video
    from distilseg.apps.video_io import open_video

    frames = _frames(6, 96, 128)
    for i, f in enumerate(frames):  # a brightness ramp marks each frame's position
        f[:8, :8] = 40 * i
    clip = _write_clip(tmp_path / "clip.mp4", frames)
    seg = load(art)
    seg.set_inference(resize="fixed")
    res = {}
    for mode in ("nearest", "bilinear", "serial"):
        r = segment_video(seg, open_video(clip), tmp_path / mode, "clip", save_labels=True, progress=False,
                          upsample="nearest" if mode == "serial" else mode, batch_size=2, pipeline=mode != "serial")
        assert r["frames"] == 6 and set(r["stages"]) >= {"decode", "network", "overlay", "encode"}
        res[mode] = [np.asarray(Image.open(p)) for p in sorted((tmp_path / mode / "clip_labels").glob("*.png"))]
    exact = seg.predict(_decode(clip)[0], batch_size=2)
    assert all((a == b).all() for a, b in zip(res["bilinear"], exact))
    assert all((a == b).all() for a, b in zip(res["nearest"], res["serial"]))  # threads change nothing
    assert all(a.shape == (96, 128) for a in res["nearest"])
    agree = np.mean([(a == b).mean() for a, b in zip(res["nearest"], res["bilinear"])])
    assert agree > 0.9
    out, _ = _decode(tmp_path / "nearest" / "clip_overlay.mp4")
    corner = [float(f[:6, :6].mean()) for f in out]
    assert len(out) == 6 and corner == sorted(corner) and corner[-1] - corner[0] > 60


def test_label_upsampling_and_overlay_match_reference() -> None:
    from distilseg.apps.video import _Painter, _resize_labels
    from distilseg.viz import add_legend, overlay

    rng = np.random.default_rng(1)
    small = rng.integers(0, K, (12, 20), dtype=np.uint8)
    assert (_resize_labels(small, (36, 60)) == small.repeat(3, 0).repeat(3, 1)).all()
    assert _resize_labels(small, (25, 41)).shape == (25, 41)
    palette = np.array([[128, 64, 128], [0, 0, 142], [70, 130, 180]], dtype=np.uint8)
    frame = rng.integers(0, 256, (36, 60, 3), dtype=np.uint8)
    stages = {"upsample": 0.0, "overlay": 0.0}
    for legend in (False, True):
        got = _Painter(palette, 0.5, ["road", "car", "sky"], legend)(frame, small, stages)
        ref = overlay(frame, small.repeat(3, 0).repeat(3, 1), palette, alpha=0.5)
        if legend:
            ref = add_legend(ref, ["road", "car", "sky"], palette, void=False, inside=True)
        assert got.shape == frame.shape and np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_decode_error_mid_video_stops_pipeline(art: Path, tmp_path: Path) -> None:
    import threading

    from distilseg import load
    from distilseg.apps.video import segment_video
    from distilseg.apps.video_io import FrameSource
    from distilseg.errors import DataError

    def frames():
        for i, f in enumerate(_frames(5, 32, 48)):
            if i == 3:
                raise DataError("clip.mp4: cannot decode frame 4 (test)")
            yield i, f

    before = threading.active_count()
    with pytest.raises(DataError, match="frame 4"):
        segment_video(load(art), FrameSource("clip.mp4", frames, 5, Fraction(10)), tmp_path, "clip", progress=False)
    assert not list(tmp_path.glob("*.mp4")) and threading.active_count() == before
