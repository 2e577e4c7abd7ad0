"""Reading dataset files: the fast PNG paths (Wuffs, libspng, OpenCV) give Pillow's pixels; what they cannot read goes to Pillow."""

import numpy as np
import pytest
from PIL import Image

from scenemtl import fileio as io
from scenemtl.errors import DataError


def _pillow(path, mode):
    with Image.open(path) as image:
        return np.array(image if mode is None else image.convert(mode))


def _only(monkeypatch, decoder):
    """Leave ``decoder`` the first fast path (the ones before it missing)."""
    if decoder == "wuffs":
        assert io._WuffsDecoder is not None, "pywuffs is a dependency"
        return
    monkeypatch.setattr(io, "_WuffsDecoder", None)
    if decoder == "opencv":
        monkeypatch.setattr(io, "_spng", None)
    else:
        assert io._spng is not None, "pyspng is a dependency"


@pytest.mark.parametrize("decoder", ["wuffs", "libspng", "opencv"])
@pytest.mark.parametrize("kind", ["rgb", "grey", "rgba", "palette", "grey16", "rgb-transparent", "grey-transparent"])
def test_every_png_kind_reads_as_pillow_reads_it(tmp_path, monkeypatch, kind, decoder):
    _only(monkeypatch, decoder)
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
    elif kind == "rgb-transparent":  # a tRNS colour: Wuffs leaves these files to libspng
        array = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
        Image.fromarray(array).save(path, transparency=tuple(int(v) for v in array[0, 0]))
    elif kind == "grey-transparent":
        array = rng.integers(0, 256, (13, 17), dtype=np.uint8)
        Image.fromarray(array, mode="L").save(path, transparency=int(array[0, 0]))
    else:
        Image.fromarray(rng.integers(0, 65536, (13, 17), dtype=np.uint16)).save(path)
    fast = {"rgb": (8, 2), "grey": (8, 0), "rgb-transparent": (8, 2), "grey-transparent": (8, 0)}.get(kind)
    assert (io._png_kind(path.read_bytes()[:26]) == fast) if fast else True
    for mode in ("RGB", None):
        if kind == "grey16" and mode == "RGB":
            continue
        got = io.read_image(path, mode=mode)
        want = _pillow(path, mode)
        assert got.dtype == want.dtype and np.array_equal(got, want), (kind, mode)
    if kind in ("rgb", "palette", "rgba", "rgb-transparent"):  # RGB plus a fourth byte to ignore (pixels as 32-bit words)
        words = io.read_image(path, mode="RGBX")
        assert words.shape == (13, 17, 4) and np.array_equal(words[..., :3], _pillow(path, "RGB")), kind
    # the fast path is the one taken for 8-bit grey and RGB files (and only for them); Wuffs without transparency
    grey = kind.startswith("grey") and kind != "grey16"
    assert (io._read_png_fast(path, None if grey else "RGB") is not None) == (fast is not None)
    if decoder == "wuffs":
        data = path.read_bytes()
        decoded = io._read_png_wuffs(data, grey, None if grey else "RGB") if fast else None
        assert (decoded is not None) == (kind in ("rgb", "grey"))
        if decoded is not None:
            assert np.array_equal(decoded, _pillow(path, None if grey else "RGB"))
            words = io._read_png_wuffs(data, grey, "RGBX")
            assert grey or (words.shape == (13, 17, 4) and np.array_equal(words[..., :3], decoded))


@pytest.mark.parametrize("decoder", ["wuffs", "libspng", "opencv"])
def test_a_truncated_png_is_an_error_naming_the_file(tmp_path, monkeypatch, decoder):
    _only(monkeypatch, decoder)
    path = tmp_path / "cut.png"
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8) + 7).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match="cut.png"):
        io.read_image(path, "test image")
