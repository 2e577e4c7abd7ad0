"""Video prediction: a generated 20-frame clip in, an MP4 of panels out with the same frame count and rate."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

import scenemtl
from scenemtl.cli import main
from scenemtl.engine.video import predict_video
from scenemtl.errors import DataError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    model = scenemtl.create_model("hps", tasks={"semseg": 3, "depth": None}, backbone="test_resnet", head_channels=8)
    return scenemtl.save_pretrained(model, tmp_path_factory.mktemp("model") / "m")


def write_clip(path, frames=20, fps=10, size=(48, 64)):
    rng = np.random.default_rng(0)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_clip(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, stream.average_rate


def test_a_clip_gives_an_mp4_with_the_same_frames_and_rate(folder, tmp_path):
    write_clip(tmp_path / "clip.mp4")
    report = predict_video(folder, tmp_path / "clip.mp4", tmp_path / "out" / "clip.mp4", device="cpu", progress=False, raw=tmp_path / "raw")
    frames, rate = read_clip(tmp_path / "out" / "clip.mp4")
    assert report.frames == len(frames) == 20 and rate == Fraction(10) == report.fps
    # a panel per frame: the input and two task pictures side by side, with a caption strip
    height, width = frames[0].shape[:2]
    assert width == 3 * 64 and height > 48 and report.size == (height, width)
    assert sorted(p.name for p in (tmp_path / "raw" / "depth").iterdir())[-1] == "000019.npy"
    assert np.load(tmp_path / "raw" / "semseg" / "000000.npy").shape == (48, 64)


def test_a_frame_folder_with_video_takes_the_given_rate(folder, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(frames / f"{i:03d}.png")
    assert (
        main(["predict", str(frames), "--video", "--fps", "5", "--checkpoint", str(folder), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    )
    assert "wrote 6 frames at 5 fps" in capsys.readouterr().out
    written, rate = read_clip(tmp_path / "out" / "frames.mp4")
    assert len(written) == 6 and rate == 5


def test_bad_videos_are_named(folder, tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(DataError, match="broken.mp4"):
        predict_video(folder, tmp_path / "broken.mp4", tmp_path / "o.mp4", device="cpu", progress=False)
    with pytest.raises(DataError, match="video not found"):
        predict_video(folder, tmp_path / "missing.mp4", tmp_path / "o.mp4", device="cpu", progress=False)
