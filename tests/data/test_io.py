"""Reading dataset files: the fast PNG paths (libspng, OpenCV) give Pillow's pixels; what they cannot read goes to Pillow."""

import numpy as np
import pytest
from PIL import Image

from scenemtl import fileio as io
from scenemtl.errors import DataError


def _pillow(path, mode):
    with Image.open(path) as image:
        return np.array(image if mode is None else image.convert(mode))


@pytest.mark.parametrize("decoder", ["libspng", "opencv"])
@pytest.mark.parametrize("kind", ["rgb", "grey", "rgba", "palette", "grey16"])
def test_every_png_kind_reads_as_pillow_reads_it(tmp_path, monkeypatch, kind, decoder):
    if decoder == "opencv":
        monkeypatch.setattr(io, "_spng", None)
    else:
        assert io._spng is not None, "pyspng is a dependency"
    rng = np.random.default_rng(0)
    path = tmp_path / f"{kind}.png"
    if kind == "rgb":
        Image.fromarray(rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)).save(path)
    elif kind == "grey":
        Image.fromarray(rng.integers(0, 256, (13, 17), dtype=np.uint8), mode="L").save(path)
    elif kind == "rgba":
        Image.fromarray(rng.integers(0, 256, (13, 17, 4), dtype=np.uint8)).save(path)
    elif kind == "palette":
        image = Image.fromarray(rng.integers(0, 21, (13, 17), dtype=np.uint8), mode="P")
        image.putpalette(list(rng.integers(0, 256, 768)))
        image.save(path)
    else:
        Image.fromarray(rng.integers(0, 65536, (13, 17), dtype=np.uint16)).save(path)
    fast = {"rgb": (8, 2), "grey": (8, 0)}.get(kind)
    assert (io._png_kind(path.read_bytes()[:26]) == fast) if fast else True
    for mode in ("RGB", None):
        if kind == "grey16" and mode == "RGB":
            continue
        got = io.read_image(path, mode=mode)
        want = _pillow(path, mode)
        assert got.dtype == want.dtype and np.array_equal(got, want), (kind, mode)
    if kind in ("rgb", "palette", "rgba"):  # RGB plus a fourth byte to ignore (pixels as 32-bit words)
        words = io.read_image(path, mode="RGBX")
        assert words.shape == (13, 17, 4) and np.array_equal(words[..., :3], _pillow(path, "RGB")), kind
    # the fast path is the one taken for 8-bit grey and RGB files (and only for them)
    assert (io._read_png_fast(path, None if kind == "grey" else "RGB") is not None) == (fast is not None)


@pytest.mark.parametrize("decoder", ["libspng", "opencv"])
def test_a_truncated_png_is_an_error_naming_the_file(tmp_path, monkeypatch, decoder):
    if decoder == "opencv":
        monkeypatch.setattr(io, "_spng", None)
    path = tmp_path / "cut.png"
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8) + 7).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match="cut.png"):
        io.read_image(path, "test image")
