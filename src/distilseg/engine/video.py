"""Videos and frame folders through a segmenter: an overlay video (and optionally per-frame label maps).

Why PyAV (``av`` on PyPI) rather than OpenCV: its wheels bundle FFmpeg (decoders for every common
container and codec, and the libx264 encoder) with no system FFmpeg to install, it is far lighter than
``opencv-python``, and it exposes the stream's exact frame count, frame rate and timestamps, so the output
has the source's rate (divided by ``--every``) and one frame per processed input frame.

Output of ``distilseg predict VIDEO --out OUT``: ``OUT/<stem>_overlay.mp4`` (H.264, yuv420p, the source's
resolution; odd sizes are padded by one edge pixel because yuv420p needs even sizes) with a compact class
legend drawn over the bottom rows, and with ``--save-labels`` ``OUT/<stem>_labels/<frame>.png`` (uint8
class ids, named by the *source* frame index so ``--every`` keeps them traceable). A frame folder is the
same with ``--as-video``: its images in name order are the frames (``--fps``, default 30).
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import DataError, UsageError

__all__ = ["VIDEO_EXTENSIONS", "is_video_file", "FrameSource", "open_video", "frame_folder_source", "segment_video"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class FrameSource:
    """Frames as HxWx3 uint8 RGB with their source index; ``total`` is None when the container does not say."""

    name: str
    frames: Callable[[], Iterator[tuple[int, np.ndarray]]]
    total: int | None
    fps: Fraction


def _av_error_types() -> tuple[type[BaseException], ...]:
    import av

    types: list[type[BaseException]] = [OSError, ValueError]
    for attr in ("FFmpegError", "AVError"):
        t = getattr(getattr(av, "error", av), attr, None) or getattr(av, attr, None)
        if isinstance(t, type):
            types.append(t)
    return tuple(types)


def open_video(path: str | os.PathLike) -> FrameSource:
    """Open a video file with PyAV; a missing, unreadable or stream-less file is a one-line ``DataError``."""
    import av

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such video file")
    errors = _av_error_types()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: holds no video stream")
            stream = container.streams.video[0]
            total = int(stream.frames) or None
            fps = Fraction(stream.average_rate or stream.guessed_rate or 30)
    except DataError:
        raise
    except errors as exc:
        raise DataError(f"{path}: not a readable video ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        index = -1
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for index, frame in enumerate(container.decode(stream)):
                    yield index, frame.to_ndarray(format="rgb24")
        except errors as exc:
            raise DataError(f"{path}: cannot decode frame {index + 1} ({exc})") from exc

    return FrameSource(name=str(path), frames=frames, total=total, fps=fps)


def frame_folder_source(files: Sequence[Path], fps: float = 30.0, name: str = "frames") -> FrameSource:
    """Image files (already in the wanted order) as the frames of one video."""
    from .segmenter import read_image

    files = list(files)

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        for i, f in enumerate(files):
            yield i, read_image(f)

    return FrameSource(name=name, frames=frames, total=len(files), fps=Fraction(fps).limit_denominator(1001))


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: repeat the last row/column when a side is odd."""
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frame


class _Writer:
    """H.264 writer into a temporary file, renamed into place on success (a killed run leaves no torn mp4)."""

    def __init__(self, path: Path, fps: Fraction, codec: str = "libx264") -> None:
        import av

        self.path = path
        self.tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        self.container = av.open(str(self.tmp), mode="w")
        self.stream = self.container.add_stream(codec, rate=fps)
        self.stream.pix_fmt = "yuv420p"
        self.time_base = 1 / Fraction(fps)  # one tick per frame: exact timestamps, no drift
        if codec == "libx264":
            self.stream.options = {"crf": "20", "preset": "veryfast"}
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        import av

        frame = _even(frame)
        if self.count == 0:
            self.stream.height, self.stream.width = frame.shape[:2]
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.count
        vf.time_base = self.time_base
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
        self.count += 1

    def close(self, ok: bool) -> None:
        try:
            if ok and self.count:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()
        if ok and self.count:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def segment_video(
    segmenter: Any,
    source: FrameSource,
    out_dir: str | os.PathLike,
    stem: str,
    every: int = 1,
    save_labels: bool = False,
    alpha: float = 0.5,
    legend: bool = True,
    batch_size: int = 4,
    progress: bool = True,
    codec: str = "libx264",
) -> dict[str, Any]:
    """Segment every ``every``-th frame of ``source``; write ``<stem>_overlay.mp4`` (and label maps).

    Returns ``{"video", "frames", "seconds", "fps", "labels"}``; ``fps`` is end to end (decode, inference,
    drawing, encode).
    """
    from tqdm import tqdm

    from ..viz import add_legend, overlay
    from .predict import save_png

    if int(every) < 1:
        raise UsageError(f"--every must be a positive integer, got {every}")
    if int(batch_size) < 1:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    label_dir = out_dir / f"{stem}_labels"
    if save_labels:
        label_dir.mkdir(parents=True, exist_ok=True)
    palette = np.asarray(segmenter.palette, dtype=np.uint8)
    names = segmenter.class_names
    out_fps = source.fps / int(every)
    writer = _Writer(out_dir / f"{stem}_overlay.mp4", out_fps, codec=codec)
    total = None if source.total is None else math.ceil(source.total / int(every))
    bar = tqdm(total=total, desc=f"predict {Path(source.name).name}", unit="frame", disable=not progress,
               file=sys.stderr)
    ok = False
    first_size: list[tuple[int, ...]] = []
    t0 = time.perf_counter()

    def flush(batch: list[tuple[int, np.ndarray]]) -> None:
        preds = segmenter.predict([f for _, f in batch], batch_size=len(batch))
        for (index, frame), pred in zip(batch, preds):
            if first_size and frame.shape[:2] != first_size[0]:
                raise DataError(f"{source.name}: frame {index} is {frame.shape[1]}x{frame.shape[0]} but the first "
                                f"was {first_size[0][1]}x{first_size[0][0]}; a video needs one frame size")
            first_size[:] = [frame.shape[:2]]
            picture = overlay(frame, pred, palette, alpha=alpha)
            if legend:
                picture = add_legend(picture, names, palette, void=False, inside=True)
            writer.write(picture)
            if save_labels:
                save_png(label_dir / f"{index:06d}.png", pred.astype(np.uint8))
        bar.update(len(batch))

    try:
        batch: list[tuple[int, np.ndarray]] = []
        for index, frame in source.frames():
            if index % int(every):
                continue
            batch.append((index, frame))
            if len(batch) == int(batch_size):
                flush(batch)
                batch = []
        if batch:
            flush(batch)
        if writer.count == 0:
            raise DataError(f"{source.name}: no frames to segment")
        ok = True
    finally:
        bar.close()
        writer.close(ok)
    seconds = time.perf_counter() - t0
    return {"video": str(writer.path), "frames": writer.count, "seconds": seconds,
            "fps": writer.count / seconds if seconds > 0 else float("inf"),
            "labels": str(label_dir) if save_labels else None}
