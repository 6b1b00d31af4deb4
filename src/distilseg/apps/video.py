"""Videos and frame folders through a segmenter: an overlay video (and optionally per-frame label maps).

Why PyAV (``av`` on PyPI) rather than OpenCV: its wheels bundle FFmpeg (decoders for every common
container and codec, and the libx264 encoder) with no system FFmpeg to install, it is far lighter than
``opencv-python``, and it exposes the stream's exact frame count, frame rate and timestamps, so the output
has the source's rate (divided by ``--every``) and one frame per processed input frame.

Why this file is long: one frame's whole path (decode, network input, labels, overlay, encode) and the
threads that overlap those stages live together, so that ordering and error handling are read in one place.

Output of ``distilseg predict VIDEO --out OUT``: ``OUT/<stem>_overlay.mp4`` (H.264, yuv420p, the source's
resolution; odd sizes are padded by one edge pixel because yuv420p needs even sizes) with a compact class
legend drawn over the bottom rows, and with ``--save-labels`` ``OUT/<stem>_labels/<frame>.png`` (uint8
class ids at the *source* resolution, named by the *source* frame index so ``--every`` keeps them
traceable). A frame folder is the same with ``--as-video``: its images in name order are the frames
(``--fps``, default 30).

Speed (1080p CamVid clip, INT8 360x640 student, 2 cores: 1.26 -> 22 frames/s end to end; the 1080p work
dominated, see ``benchmarks/video_fps.py`` and ``benchmarks/results/video_fps.json``):

- **Labels at network resolution, nearest upsampling** (``upsample="nearest"``, the default for videos):
  the argmax is taken on the network-resolution logits (e.g. 360x640 for a 1080p frame at
  ``--resize keep-ratio --short-side 360``) and the uint8 label map is upsampled to the frame size with
  nearest neighbour (pixel-centre mapping, PIL ``NEAREST``; an exact 3x3 block repeat for 360p -> 1080p).
  The ``--save-labels`` maps are these upsampled maps, at the source resolution. Single-image ``predict``
  (and ``upsample="bilinear"`` here) instead resizes the float logits bilinearly to the source size before
  the argmax: resizing 11 float channels to 1920x1080 cost more than the network itself. The two label maps
  agree on 98.4 % of the pixels of the benchmark clip, differing almost only along class boundaries.
  Test-time augmentation (which averages probabilities at the source size) and segmenters without the
  ``SegmenterBase`` hooks take the exact ``segmenter.predict`` path.
- **Network input resized on uint8** (``SegmenterBase.network_input``): same antialiased bilinear resize and
  normalization as ``preprocess.image_to_input`` but on the uint8 frame (~5x cheaper at 1080p than on a
  float copy); at most one grey level of difference.
- **Overlay with a palette LUT**: the label map becomes a PIL palette image (the class colours are its
  256-entry LUT), converted to RGB and blended with ``Image.blend`` (C, uint8 in and out; equal to
  ``viz.overlay`` within one grey level). Colours are looked up at network resolution and then
  nearest-upsampled, which equals colouring the upsampled labels. The legend strip is rendered once and
  blended into the bottom rows of each frame exactly as ``viz.add_legend(..., inside=True)`` does.
- **Encoder**: libx264, preset ``ultrafast`` (``veryfast`` cost 3x more CPU), CRF 23, yuv420p,
  ``min(4, cores)`` threads; decoding with ``thread_type="AUTO"``.
- **A three-stage thread pipeline**: a decode thread (decode + RGB + network input), the calling thread
  (network + argmax), an encode thread (upsampling, overlay, legend, H.264 encode, label PNGs), joined by
  small bounded FIFO queues. PyAV, onnxruntime, torch and PIL release the GIL in their heavy calls, so the
  stages overlap; one FIFO per stage keeps the frame order and the exact frame count, and an error in any
  stage stops all three and is raised in the caller (``pipeline=False`` runs the same stages serially).
- **ONNX Runtime threads**: the loader leaves ``intra_op_num_threads`` at 0 (one per physical core, pinned
  to cores) with spinning workers; for a video a CPU session is copied with ``min(4, cores)`` explicit
  threads and spinning off (``_pipeline_session``), since pinned, busy-waiting workers took the cores the
  decode and encode threads need (~17 -> ~21 frames/s). The segmenter's own session is restored afterwards.

``segment_video`` returns per-stage busy seconds (``stages``: decode, preprocess, network, upsample,
overlay, encode, labels); in the pipeline they overlap, so their sum exceeds the wall time.
"""
from __future__ import annotations

import contextlib
import math
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import DataError, UsageError
from .video_io import FrameSource, VideoWriter

__all__ = ["segment_video"]


def _resize_labels(labels: np.ndarray, hw: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour upsampling of a uint8 label map to ``hw`` (pixel-centre mapping, as PIL's NEAREST:
    a 360x640 -> 1080x1920 map is an exact 3x3 block repeat)."""
    from PIL import Image

    h, w = int(hw[0]), int(hw[1])
    if labels.shape[:2] == (h, w):
        return labels
    return np.asarray(Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8)).resize((w, h), Image.NEAREST))


def _save_labels(path: Path, labels: np.ndarray) -> None:
    """A uint8 label map as a grayscale PNG (exact values), written atomically (as ``predict``'s label maps)."""
    from PIL import Image

    from ..io import atomic_write

    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8))
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


class _Painter:
    """Overlay + legend for video frames with a palette LUT and uint8 blending (see the module docstring)."""

    def __init__(self, palette: np.ndarray, alpha: float, names: Sequence[str], legend: bool) -> None:
        pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: len(pal)] = pal
        self.palette = pal
        self.lut = lut.reshape(-1).tolist()  # PIL's 768-entry palette
        self.alpha = float(alpha)
        self.names = list(names)
        self.legend = bool(legend)
        self._strip: tuple[int, np.ndarray] | None = None

    def _legend75(self, width: int) -> np.ndarray:
        if self._strip is None or self._strip[0] != width:
            from ..viz.legend import legend_strip

            strip = legend_strip(self.names, self.palette, width, void=False)
            self._strip = (width, strip.astype(np.float32) * 0.75)
        return self._strip[1]

    def __call__(self, frame: np.ndarray, labels: np.ndarray, stages: dict[str, float]) -> np.ndarray:
        from PIL import Image

        h, w = frame.shape[:2]
        t = time.perf_counter()
        colors = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8))  # "L"
        colors.putpalette(self.lut)  # -> "P": the class colours are the LUT
        colors = colors.convert("RGB")
        if colors.size != (w, h):
            colors = colors.resize((w, h), Image.NEAREST)
        t1 = time.perf_counter()
        stages["upsample"] += t1 - t
        picture = Image.blend(Image.fromarray(frame), colors, self.alpha)
        if self.legend:  # as viz.add_legend(..., inside=True): rint(0.25 * frame + 0.75 * strip) in the bottom rows
            strip75 = self._legend75(w)
            sh = min(strip75.shape[0], h)
            band = np.asarray(picture.crop((0, h - sh, w, h)), dtype=np.float32) * 0.25 + strip75[-sh:]
            picture.paste(Image.fromarray(np.clip(np.rint(band), 0, 255).astype(np.uint8)), (0, h - sh))
        stages["overlay"] += time.perf_counter() - t1
        return np.asarray(picture)


def _fast_options(segmenter: Any, upsample: str) -> Any:
    """The segmenter's inference options when the network-resolution path applies, else None."""
    if upsample == "bilinear":
        return None
    opts = getattr(segmenter, "inference_options", None)
    if opts is None or getattr(opts, "tta", None):  # TTA averages probabilities at the source size
        return None
    if not all(hasattr(segmenter, a) for a in ("network_input", "network_logits")):
        return None
    return opts


_SPINNING = "session.intra_op.allow_spinning"


@contextlib.contextmanager
def _pipeline_session(segmenter: Any) -> Iterator[None]:
    """Run the video with a pipeline-friendly copy of a CPU ONNX Runtime session (the segmenter gets its own
    session back afterwards): an explicit ``intra_op_num_threads`` (``min(4, cores)`` where the loader left
    0 = "one per physical core", which also pins the threads to cores) and idle worker threads that sleep
    instead of spinning (unless the session's creator set spinning). Pinned, busy-waiting workers take the
    cores the decode and encode threads need: 1080p on 2 cores went from ~17 to ~21 frames/s."""
    session, path, quiet = getattr(segmenter, "session", None), getattr(segmenter, "path", None), None
    try:
        if session is not None and path is not None and session.get_providers()[0] == "CPUExecutionProvider":
            import onnxruntime as ort

            opts = session.get_session_options()
            changed = False
            if opts.intra_op_num_threads == 0:
                opts.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
                changed = True
            try:
                opts.get_session_config_entry(_SPINNING)  # set explicitly by whoever made it: keep it
            except Exception:
                opts.add_session_config_entry(_SPINNING, "0")
                changed = True
            if changed:
                quiet = ort.InferenceSession(str(path), sess_options=opts, providers=session.get_providers())
    except Exception:  # not an onnxruntime session after all, or it cannot be rebuilt: keep the original
        quiet = None
    if quiet is None:
        yield
        return
    segmenter.session = quiet
    try:
        yield
    finally:
        segmenter.session = session


_END = object()


class _Stopped(Exception):
    """Another stage failed (or the caller was interrupted): leave quietly."""


def _put(q: "queue.Queue", item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            pass


def _get(q: "queue.Queue", stop: threading.Event) -> Any:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                raise _Stopped from None


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
    upsample: str = "nearest",
    preset: str = "ultrafast",
    crf: int = 23,
    pipeline: bool = True,
) -> dict[str, Any]:
    """Segment every ``every``-th frame of ``source``; write ``<stem>_overlay.mp4`` (and label maps).

    ``upsample``: ``"nearest"`` (default) takes the argmax at network resolution and upsamples the label
    map (fast); ``"bilinear"`` resizes the logits to the frame size first, exactly as single-image
    ``predict``. ``pipeline=False`` runs the stages one after the other in this thread (for profiling).
    Returns ``{"video", "frames", "seconds", "fps", "labels", "stages"}``; ``fps`` is end to end (decode,
    inference, drawing, encode); ``stages`` are per-stage busy seconds (overlapping when pipelined).
    """
    import torch
    from ..progress import progress_bar

    if int(every) < 1:
        raise UsageError(f"--every must be a positive integer, got {every}")
    if int(batch_size) < 1:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")
    if upsample not in ("nearest", "bilinear"):
        raise UsageError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")
    every, batch_size = int(every), int(batch_size)
    fast = _fast_options(segmenter, upsample)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    label_dir = out_dir / f"{stem}_labels"
    if save_labels:
        label_dir.mkdir(parents=True, exist_ok=True)
    painter = _Painter(segmenter.palette, alpha, segmenter.class_names, legend)
    out_fps = source.fps / every
    writer = VideoWriter(out_dir / f"{stem}_overlay.mp4", out_fps, codec=codec, preset=preset, crf=crf)
    total = None if source.total is None else math.ceil(source.total / every)
    bar = progress_bar(total=total, desc=f"predict {Path(source.name).name}", unit="frame", disable=not progress)
    stages = {k: 0.0 for k in ("decode", "preprocess", "network", "upsample", "overlay", "encode", "labels")}
    first_size: list[tuple[int, ...]] = []

    # ---- the three stages (each called from one thread only) --------------------------------------
    read = [0]  # frames decoded so far

    def decoded() -> Iterator[tuple[int, np.ndarray, Any]]:
        """Stage 1: the frames to segment (+ their network input on the fast path)."""
        frames = source.frames()
        try:
            while True:
                t = time.perf_counter()
                try:
                    index, frame = next(frames)
                except StopIteration:
                    return
                read[0] = index + 1
                stages["decode"] += time.perf_counter() - t
                if index % every:
                    continue
                x = None
                if fast is not None:
                    t = time.perf_counter()
                    with torch.inference_mode():
                        x = segmenter.network_input(frame, fast)
                    stages["preprocess"] += time.perf_counter() - t
                yield index, frame, x
        finally:
            getattr(frames, "close", lambda: None)()

    def infer(batch: list[tuple[int, np.ndarray, Any]]) -> list[np.ndarray]:
        """Stage 2: one uint8 label map per frame (network resolution on the fast path)."""
        for index, frame, _ in batch:
            if first_size and frame.shape[:2] != first_size[0]:
                raise DataError(f"{source.name}: frame {index} is {frame.shape[1]}x{frame.shape[0]} but the "
                                f"first was {first_size[0][1]}x{first_size[0][0]}; a video needs one frame size")
            first_size[:] = [frame.shape[:2]]
        t = time.perf_counter()
        if fast is None:  # exact path: logits resized to the frame, then the argmax
            preds = segmenter.predict([f for _, f, _ in batch], batch_size=len(batch))
            stages["network"] += time.perf_counter() - t
            return [np.asarray(p, dtype=np.uint8) for p in preds]
        labels: list[Any] = [None] * len(batch)
        groups: dict[tuple, list[int]] = {}
        for i, (_, _, x) in enumerate(batch):
            groups.setdefault(tuple(x.shape), []).append(i)
        with torch.inference_mode():
            for idx in groups.values():
                name = f"{source.name} frame {batch[idx[0]][0]}"
                logits = segmenter.network_logits(torch.cat([batch[i][2] for i in idx]), fast, name)
                maps = logits.max(1).indices.to(torch.uint8).cpu().numpy()  # the first maximum, as argmax
                for j, i in enumerate(idx):
                    labels[i] = maps[j]
        stages["network"] += time.perf_counter() - t
        return labels

    def emit(index: int, frame: np.ndarray, labels: np.ndarray) -> None:
        """Stage 3: overlay + legend, H.264, the label PNG."""
        picture = painter(frame, labels, stages)
        t = time.perf_counter()
        writer.write(picture)
        stages["encode"] += time.perf_counter() - t
        if save_labels:
            t = time.perf_counter()
            _save_labels(label_dir / f"{index:06d}.png", _resize_labels(labels, frame.shape[:2]))
            stages["labels"] += time.perf_counter() - t
        bar.update(1)

    def batches(items: Iterator[tuple[int, np.ndarray, Any]]) -> Iterator[list[tuple[int, np.ndarray, Any]]]:
        batch: list[tuple[int, np.ndarray, Any]] = []
        for item in items:
            batch.append(item)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    # ---- run them: one after the other, or overlapped in three threads ------------------------------
    stop = threading.Event()
    errors: list[BaseException] = []
    q_in: queue.Queue = queue.Queue(maxsize=max(2, batch_size))
    q_out: queue.Queue = queue.Queue(maxsize=max(2, batch_size))

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except _Stopped:
                pass
            except BaseException as exc:  # handed to the caller's thread
                errors.append(exc)
                stop.set()
        return run

    def decode_thread() -> None:
        for item in decoded():
            _put(q_in, item, stop)
        _put(q_in, _END, stop)

    def encode_thread() -> None:
        while True:
            item = _get(q_out, stop)
            if item is _END:
                return
            emit(*item)

    def queued() -> Iterator[tuple[int, np.ndarray, Any]]:
        while True:
            item = _get(q_in, stop)
            if item is _END:
                return
            yield item

    threads = [threading.Thread(target=guarded(decode_thread), name="video-decode", daemon=True),
               threading.Thread(target=guarded(encode_thread), name="video-encode", daemon=True)]
    ok = False
    t0 = time.perf_counter()
    cleanup = contextlib.ExitStack()
    try:
        cleanup.enter_context(_pipeline_session(segmenter))
        if not pipeline:
            for batch in batches(decoded()):
                for (index, frame, _), labels in zip(batch, infer(batch)):
                    emit(index, frame, labels)
        else:
            for th in threads:
                th.start()
            try:  # this thread: the network
                for batch in batches(queued()):
                    for (index, frame, _), labels in zip(batch, infer(batch)):
                        _put(q_out, (index, frame, labels), stop)
                _put(q_out, _END, stop)
                threads[1].join()
            except _Stopped:
                pass
            if errors:
                raise errors[0]
        if writer.count == 0:
            raise DataError(f"{source.name}: no frames to segment")
        if source.total and read[0] < source.total:
            print(f"warning: {source.name}: decoding ended after {read[0]} of the {source.total} frames the file "
                  f"announces (a truncated or damaged file?); the output holds those {read[0]}", file=sys.stderr)
        ok = True
    finally:
        stop.set()
        for th in threads:
            if th.is_alive():
                th.join()
        bar.close()
        cleanup.close()
        writer.close(ok)
    seconds = time.perf_counter() - t0
    return {"video": str(writer.path), "frames": writer.count, "seconds": seconds,
            "fps": writer.count / seconds if seconds > 0 else float("inf"),
            "labels": str(label_dir) if save_labels else None, "decoded": read[0], "announced": source.total,
            "stages": {k: round(v, 4) for k, v in stages.items()}}
