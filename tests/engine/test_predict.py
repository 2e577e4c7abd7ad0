"""Streaming prediction: inputs read as people expect (EXIF, 16-bit, greyscale), one batch at a time,
distinct output names, the same predictions batched or not."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import scenemtl
from scenemtl.data.images import read_rgb
from scenemtl.engine.predict import predict_files, unique_stems
from scenemtl.errors import ConfigError


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = scenemtl.create_model("hps", tasks={"semseg": 3, "depth": None}, backbone="test_resnet", head_channels=8)
    return scenemtl.save_pretrained(model, tmp_path_factory.mktemp("model") / "m")


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    pixels[0, :5] = 255  # a mark in the top-left corner, stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    image = read_rgb(tmp_path / "rotated.jpg")
    assert image.shape == (20, 10, 3)  # displayed portrait
    assert image[:5, -1].mean() > 200 and image[-5:, 0].mean() < 50  # the mark went to the top-right


def test_16_bit_and_greyscale_are_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 8).astype(np.uint16).reshape(8, 64)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    deep = read_rgb(tmp_path / "deep.png")
    assert deep.dtype == np.uint8 and deep.shape == (8, 64, 3)
    np.testing.assert_array_equal(deep[..., 0], np.rint(ramp / 257.0).astype(np.uint8))  # the full range, not 255s
    assert deep[0, 0, 0] == 0 and deep[-1, -1, 0] == 255 and len(np.unique(deep)) > 200
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    assert np.array_equal(read_rgb(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, axis=-1))


def test_output_names_never_collide():
    files = [Path("x/a.jpg"), Path("y/a.jpg"), Path("a.png"), Path("a_1.png"), Path("b.png")]
    stems = unique_stems(files)
    assert len(set(stems)) == len(stems) and stems[0] == "a" and stems[3] == "a_1" and stems[4] == "b"


def test_folder_prediction_writes_every_task_and_batches_give_the_same_outputs(folder, tmp_path):
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(5):  # two sizes, interleaved: batches cut at size changes
        size = (24, 40) if i % 3 else (30, 30)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(inputs / f"img{i}.png")
    Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(inputs / "img0.jpg")  # same stem
    one = predict_files(folder, [inputs], tmp_path / "one", device="cpu", progress=False)
    batched = predict_files(folder, [inputs], tmp_path / "batched", device="cpu", progress=False, batch_size=4)
    assert len(one) == 6 and len({p.name for p in one}) == 6 and [p.name for p in batched] == [p.name for p in one]
    for task in ("semseg", "depth"):
        names = sorted(p.name for p in (tmp_path / "one" / task).glob("*.npy"))
        assert len(names) == 6
        for name in names:
            a, b = np.load(tmp_path / "one" / task / name), np.load(tmp_path / "batched" / task / name)
            np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ConfigError, match="--batch-size"):
        predict_files(folder, [inputs], tmp_path / "x", device="cpu", progress=False, batch_size=0)


def test_memory_does_not_grow_with_the_number_of_images(folder, tmp_path):
    rng = np.random.default_rng(1)

    def peak(count: int) -> int:
        inputs = tmp_path / f"in{count}"
        inputs.mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(inputs / f"{i}.png")
        tracemalloc.start()
        predict_files(folder, [inputs], tmp_path / f"out{count}", device="cpu", progress=False)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(3), peak(36)
    # decoding everything first would hold 36 images of 48 kB at once (1.7 MB over a peak of about 1 MB)
    assert large < 1.5 * small, (small, large)


def test_panels_carry_legible_names_and_keys():
    from scenemtl.engine.predict import Predictor, panel_font_size

    torch.manual_seed(0)
    model = scenemtl.create_model(
        "hps",
        tasks={"semseg": ["sky", "road", "car"], "depth": None, "normals": None, "edge": None},
        backbone="test_resnet",
        head_channels=8,
    )
    predictor = Predictor(model, device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    predictions = predictor(image)
    keys = predictor.keys(predictions)
    # the legend lists the classes in the picture, largest first, by name and palette colour
    ids, counts = np.unique(predictions["semseg"].numpy(), return_counts=True)
    largest = int(ids[counts.argmax()])
    names = [name for name, _ in keys["semseg"].swatches]
    assert names[0] == ["sky", "road", "car"][largest] and set(names) == {["sky", "road", "car"][i] for i in ids}
    # the depth bar is labelled in metres with the map's own range
    depth = predictions["depth"].numpy()
    assert keys["depth"].low == f"{depth.min():.3g} m" and keys["depth"].high == f"{depth.max():.3g} m"
    assert keys["normals"].swatches[0] == ("n = +x", (255, 128, 128)) and keys["edge"].low == "p = 0"
    panel = np.asarray(predictor.panel(image, predictions))
    size = panel_font_size(96)
    assert panel.shape[1] == 5 * 96 and panel.shape[0] > 64 + int(1.5 * size) + 3 * size  # keys under the pictures
    below = panel[int(1.5 * size) + 64 :, 96 : 2 * 96]  # the semseg column's key strip
    colour = np.asarray(keys["semseg"].swatches[0][1], dtype=np.uint8)
    assert (below == colour).all(axis=-1).sum() > 20  # its swatch is drawn
    assert panel_font_size(640) > panel_font_size(64) >= 12
