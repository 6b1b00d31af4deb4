"""Video frames in and out: ``open_video`` (PyAV decoding, any container/codec FFmpeg reads), a folder of frames
as a source, and the H.264 writer ``segment_video`` encodes with (see ``video.py`` for the choices)."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import DataError

__all__ = ["VIDEO_EXTENSIONS", "is_video_file", "FrameSource", "open_video", "frame_folder_source", "VideoWriter"]

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
    from ..inference.segmenter import read_image

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


class VideoWriter:
    """H.264 writer into a temporary file, renamed into place on success (a killed run leaves no torn mp4)."""

    def __init__(self, path: Path, fps: Fraction, codec: str = "libx264", preset: str = "ultrafast",
                 crf: int = 23) -> None:
        import av

        self.path = path
        # a name of its own per run: two runs writing the same video must not share (and tear) one file
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.container = av.open(str(self.tmp), mode="w")
        self.stream = self.container.add_stream(codec, rate=fps)
        self.stream.pix_fmt = "yuv420p"
        self.time_base = 1 / Fraction(fps)  # one tick per frame: exact timestamps, no drift
        if codec == "libx264":
            self.stream.options = {"crf": str(int(crf)), "preset": str(preset)}
            self.stream.codec_context.thread_count = max(1, min(4, os.cpu_count() or 1))
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
