"""Video prediction: a clip (or a folder of frames) in, an MP4 of side-by-side panels out, frame by frame.

Frames are decoded, predicted and encoded one at a time through PyAV (FFmpeg), so memory stays
constant whatever the length; the output keeps the input's frame rate (a frame folder takes
``fps``). Each output frame is the panel ``scenemtl predict`` writes for an image (input, then
every task's picture); with ``raw`` the per-frame predictions are also saved as
``<raw>/<task>/<frame>.npy``. Needs the ``video`` extra: ``pip install 'scenemtl[video]'``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from scenemtl.data.images import list_images, read_rgb
from scenemtl.config import Config
from scenemtl.engine.logging import progress as progress_bar
from scenemtl.errors import ConfigError, DataError

#: file suffixes ``scenemtl predict`` treats as videos
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class VideoReport:
    """What ``predict_video`` wrote."""

    path: Path
    frames: int
    fps: Fraction
    size: tuple[int, int]


def _av():
    try:
        import av
    except ImportError:
        raise ConfigError("video prediction needs PyAV: pip install 'scenemtl[video]'") from None
    return av


def is_video(path: str | Path) -> bool:
    """Whether ``path`` is a video file by its suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _frames(source: Path, fps: float | None) -> tuple[Iterator[np.ndarray], Fraction, int | None]:
    """The frames of a video file or a frame folder (sorted names) as H×W×3 uint8, the rate, the count if known."""
    if source.is_dir():
        files = list_images([source])
        rate = Fraction(fps if fps is not None else 25).limit_denominator(1001)
        return (read_rgb(path) for path in files), rate, len(files)
    if not source.is_file():
        raise DataError(f"video not found: {source}")
    av = _av()
    try:
        container = av.open(str(source))
        stream = container.streams.video[0]
    except (av.error.FFmpegError, IndexError, OSError) as error:
        raise DataError(f"cannot read video {source}: {error}. Replace or remove the file.") from None
    rate = stream.average_rate or stream.guessed_rate or Fraction(fps or 25)
    if fps is not None:
        rate = Fraction(fps).limit_denominator(1001)

    def decode() -> Iterator[np.ndarray]:
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as error:
            raise DataError(f"cannot decode video {source}: {error}") from None
        finally:
            container.close()

    return decode(), Fraction(rate), stream.frames or None


def predict_video(
    model: str | Path | torch.nn.Module,
    source: str | Path,
    out: str | Path,
    device: str = "auto",
    progress: bool = True,
    config: Config | None = None,
    fps: float | None = None,
    raw: str | Path | None = None,
) -> VideoReport:
    """Predict every frame of ``source`` and write ``out`` (an MP4 of panels); see the module docstring."""
    from scenemtl.engine.predict import Predictor, prediction_array

    av = _av()
    frames, rate, total = _frames(Path(source), fps)
    predictor = Predictor(model, device, config)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    container = av.open(str(out), mode="w")
    stream = None
    count, size = 0, (0, 0)
    bar = progress_bar(total=total, desc="video", disable=not progress, unit="frame")
    try:
        for count, frame in enumerate(frames, start=1):
            predictions = predictor(frame)
            panel = np.asarray(predictor.panel(frame, predictions))
            panel = np.pad(panel, ((0, panel.shape[0] % 2), (0, panel.shape[1] % 2), (0, 0)), mode="edge")  # yuv420p
            if stream is None:
                stream = container.add_stream(codec, rate=rate)
                stream.height, stream.width = panel.shape[:2]
                stream.pix_fmt = "yuv420p"
                size = panel.shape[:2]
            for packet in stream.encode(av.VideoFrame.from_ndarray(panel, format="rgb24")):
                container.mux(packet)
            if raw is not None:
                for name, prediction in predictions.items():
                    folder = Path(raw) / name
                    folder.mkdir(parents=True, exist_ok=True)
                    np.save(folder / f"{count - 1:06d}.npy", prediction_array(prediction))
            bar.update(1)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    finally:
        container.close()
        bar.close()
        if stream is None:
            out.unlink(missing_ok=True)
    if stream is None:
        raise DataError(f"{source} has no frames")
    return VideoReport(out, count, rate, (int(size[0]), int(size[1])))
