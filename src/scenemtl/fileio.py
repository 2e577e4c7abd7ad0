"""Reading dataset files: every failure is a DataError that names the file and says what to do.

The loaders of the real releases read through these functions only, so that a truncated PNG, a
missing ``.npy`` or a ``.mat`` without the expected field is reported the same way everywhere
(and ``scenemtl data check`` can list every such problem of a copy).
"""

from __future__ import annotations

import pickle
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from scenemtl.errors import DataError, ScenemtlError

if TYPE_CHECKING:
    import torch

_PIL_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError)


def _missing(path: Path, what: str, fix: str) -> DataError:
    return DataError(f"missing file {path} ({what}); {fix}")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_kind(head: bytes) -> tuple[int, int] | None:
    """``(bit depth, colour type)`` from a PNG's first bytes, ``None`` for any other file."""
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


try:  # libspng: about 1.25× OpenCV's PNG decoding (libpng) on photographs, the same pixels
    import pyspng as _spng
except ImportError:  # pragma: no cover - a dependency; OpenCV decodes when it is missing
    _spng = None

try:  # Wuffs' PNG decoder: about 3× libspng on 8-bit label maps, 1.2× on photographs (benchmarks/png_speed.py)
    from pywuffs import ImageDecoderType as _WuffsType
    from pywuffs import PixelFormat as _WuffsFormat
    from pywuffs.aux import ImageDecoder as _WuffsDecoder
    from pywuffs.aux import ImageDecoderConfig as _WuffsConfig
except ImportError:  # pragma: no cover - a dependency; libspng decodes when it is missing
    _WuffsDecoder = None

_wuffs_decoders = threading.local()  # one decoder per thread and pixel format


def _read_png_wuffs(data: bytes, grey: bool, mode: str | None) -> np.ndarray | None:
    """An 8-bit grey or RGB PNG without transparency through Wuffs (``None``: not decoded here)."""
    if _WuffsDecoder is None or b"tRNS" in data[: data.find(b"IDAT")]:  # transparency: libspng keeps its rules
        return None
    name = "Y" if grey else "RGBA_NONPREMUL" if mode == "RGBX" else "RGB"
    decoders = _wuffs_decoders.__dict__
    if name not in decoders:
        config = _WuffsConfig()
        config.enabled_decoders = [_WuffsType.PNG]
        config.pixel_format = getattr(_WuffsFormat, name)
        decoders[name] = _WuffsDecoder(config)
    result = decoders[name].decode(data)
    if result.error_message:  # libspng or Pillow names the problem
        return None
    array = np.asarray(result.pixbuf)
    return array[..., 0] if grey else array


def _read_png_fast(path: Path, mode: str | None) -> np.ndarray | None:
    """8-bit grey and RGB PNGs through Wuffs (``pywuffs``), libspng (``pyspng``) or OpenCV's decoder, all
    faster than Pillow's and giving the same pixels (PNG is lossless; no gamma or orientation is
    applied); ``None`` for anything else (palette, 16-bit, alpha, or a file none can read), which
    Pillow reads (and reports when broken)."""
    with open(path, "rb") as file:
        data = file.read()
    kind = _png_kind(data[:26])
    if kind not in ((8, 0), (8, 2)) or (kind == (8, 0)) != (mode is None) or mode not in (None, "RGB", "RGBX"):
        return None
    channels = 1 if kind == (8, 0) else 4 if mode == "RGBX" else 3
    array: np.ndarray | None = _read_png_wuffs(data, kind == (8, 0), mode)
    if array is None and _spng is not None:
        try:
            array = _spng.load(data, "RGBA") if mode == "RGBX" else _spng.load(data)
        except Exception:  # libspng's errors are plain RuntimeErrors; Pillow names the problem
            return None
    elif array is None:
        import cv2

        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if array is not None and array.ndim == 3 and array.shape[2] == 3:
            array = cv2.cvtColor(array, cv2.COLOR_BGR2RGBA if mode == "RGBX" else cv2.COLOR_BGR2RGB)
        elif array is not None and array.ndim == 3 and array.shape[2] == 4:  # an RGB file with a tRNS colour
            array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA if mode == "RGBX" else cv2.COLOR_BGRA2RGB)
    if array is None or array.dtype != np.uint8 or array.ndim != (2 if channels == 1 else 3):
        return None
    if array.ndim == 3 and array.shape[2] != channels:
        return None
    return array


def lookup(stored: np.ndarray, table: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``table[stored]`` for a uint8 array and a 256-entry table, through OpenCV's ``LUT`` (exactly
    ``np.take(table, stored)``, about 20× faster; int64 tables go through int32 when their values
    fit). ``out``: a C-contiguous array of the result's shape and dtype to write into."""
    import cv2

    if stored.dtype == np.uint8 and table.shape == (256,):
        if table.dtype == np.int64 and -(2**31) <= table.min() and table.max() < 2**31:
            result = cv2.LUT(stored, table.astype(np.int32)).astype(np.int64)
        elif table.dtype in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64):
            if out is not None:
                cv2.LUT(stored if stored.flags.c_contiguous else np.ascontiguousarray(stored), table, dst=out)
                return out
            result = cv2.LUT(stored, table)
        else:
            result = np.take(table, stored)
    else:
        result = np.take(table, stored)
    if out is None:
        return result
    out[...] = result
    return out


class Stored:
    """A target (or image) as 8-bit values plus the lookup tables that decode them, pixel by pixel.

    A loader may hand the training transform its targets in this form
    (``DenseDataset.stored_sample``): the zoom and crop then pick pixels from the compact stored
    bytes, the flip mirrors them (a task's change of values under the flip, such as negating the
    x of normals, is a change of its tables) and the padding records the box that holds data.
    ``decode()`` gives exactly the values of decoding first, since each output value depends on
    its stored value alone, and the training loader can leave the decoding to the device
    (``data.decode_on_device``). ``Normalize`` stores a uint8 image the same way.

    * ``array``: H×W or H×W×C uint8;
    * ``tables``: one 256-entry table per channel (channel ``c`` of the result is
      ``tables[c][array[..., c]]``); an H×W×4 array may have three (its fourth byte only makes
      each pixel one 32-bit word, which resamples fastest: ``read_image(mode="RGBX")``);
    * ``channel_axis``: an H×W array gives ``[1,H,W]`` (else ``[H,W]``); H×W×C gives ``[C,H,W]``
      (C the number of tables);
    * ``box``: ``(top, left, height, width)`` of the pixels that hold data (``None``: all); the
      others decode to ``fill`` (padding).
    """

    __slots__ = ("array", "tables", "channel_axis", "box", "fill")

    def __init__(
        self,
        array: np.ndarray,
        tables: list[np.ndarray],
        channel_axis: bool = False,
        box: tuple[int, int, int, int] | None = None,
        fill: float = 0.0,
    ) -> None:
        channels = 1 if array.ndim == 2 else array.shape[2]
        if array.dtype != np.uint8 or array.ndim not in (2, 3) or not (len(tables) == channels or (channels, len(tables)) == (4, 3)):
            raise ValueError(f"Stored takes an H×W or H×W×C uint8 array and one table per channel, got {array.dtype} {array.shape}")
        self.array, self.tables, self.channel_axis, self.box, self.fill = array, tables, channel_axis, box, fill

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the decoded tensor."""
        height, width = self.array.shape[:2]
        if self.array.ndim == 3:
            return (len(self.tables), height, width)
        return (1, height, width) if self.channel_axis else (height, width)

    def _like(self, array: np.ndarray, tables: list[np.ndarray] | None = None, box=None) -> Stored:
        return Stored(array, self.tables if tables is None else tables, self.channel_axis, box, self.fill)

    def take(self, rows: np.ndarray, cols: np.ndarray) -> Stored:
        """Nearest resampling: output pixel ``(i, j)`` is stored pixel ``(rows[i], cols[j])`` (before padding)."""
        if self.box is not None:
            raise ValueError("a padded Stored value cannot be resampled")
        array = self.array
        if array.ndim == 3 and array.shape[2] in (3, 4):  # whole pixels as one 32-bit word each
            import cv2

            words = np.ascontiguousarray(array) if array.shape[2] == 4 else cv2.cvtColor(array, cv2.COLOR_RGB2RGBA)
            picked = np.take(np.take(words.view(np.uint32)[..., 0], rows, axis=0), cols, axis=1)
            picked = picked.view(np.uint8).reshape(len(rows), len(cols), 4)[..., : array.shape[2]]
        else:
            picked = np.take(np.take(array, rows, axis=0), cols, axis=1)
        return self._like(picked)

    def flip(self, negate: tuple[int, ...] = ()) -> Stored:
        """Mirrored left–right, the channels in ``negate`` changing sign.

        A compact copy (OpenCV's flip), not a view: numpy copies a reversed view of interleaved
        bytes element by element, about 60× slower, and the batch copies it again."""
        import cv2

        tables = [-t if c in negate else t for c, t in enumerate(self.tables)]
        box = self.box
        if box is not None:
            top, left, height, width = box
            box = (top, self.array.shape[1] - left - width, height, width)
        channels = 1 if self.array.ndim == 2 else self.array.shape[2]
        if channels <= 4:
            flipped = cv2.flip(np.ascontiguousarray(self.array), 1).reshape(self.array.shape)
        else:
            flipped = np.ascontiguousarray(self.array[:, ::-1])
        return self._like(flipped, tables, box)

    def pad(self, borders: tuple[int, int, int, int], fill: float) -> Stored:
        """Padded by ``(left, right, top, bottom)`` pixels that decode to ``fill``."""
        if self.box is not None:
            raise ValueError("a Stored value is padded once")
        left, right, top, bottom = borders
        height, width = self.array.shape[:2]
        widths = ((top, bottom), (left, right)) + (((0, 0),) if self.array.ndim == 3 else ())
        return Stored(np.pad(self.array, widths), self.tables, self.channel_axis, (top, left, height, width), fill)

    def decode(self) -> torch.Tensor:
        """The values in the data contract (a new tensor)."""
        import torch

        if self.array.ndim == 2:
            values = lookup(self.array, self.tables[0])[None]
        else:
            import cv2

            height, width, channels = self.array.shape
            values = np.empty((len(self.tables), height, width), dtype=np.result_type(*self.tables))
            planes = cv2.split(np.ascontiguousarray(self.array)) if channels <= 4 else [self.array[..., c] for c in range(channels)]
            for channel, table in enumerate(self.tables):
                lookup(planes[channel], table, out=values[channel])
        if self.box is not None:
            fill_outside(values, self.box, self.fill)
        tensor = torch.from_numpy(values)
        return tensor if self.array.ndim == 3 or self.channel_axis else tensor[0]


def fill_outside(values, box: tuple[int, int, int, int], fill: float) -> None:
    """Set the pixels of ``values`` (``[..., H, W]``, numpy or torch) outside ``box`` to ``fill``, in place."""
    top, left, height, width = box
    values[..., :top, :] = fill
    values[..., top + height :, :] = fill
    values[..., :, :left] = fill
    values[..., :, left + width :] = fill


def decode_stored(sample: dict) -> dict:
    """``sample`` with every ``Stored`` value decoded into its tensor (in place)."""
    for key, value in sample.items():
        if isinstance(value, Stored):
            sample[key] = value.decode()
    return sample


def read_image(path: str | Path, what: str = "image", fix: str = "re-extract it from the release", mode: str | None = "RGB") -> np.ndarray:
    """An image file as a numpy array: ``mode='RGB'`` gives H×W×3 uint8; ``mode='RGBX'`` H×W×4, RGB and
    a fourth byte to be ignored (whole pixels as 32-bit words, for ``Stored``); ``mode=None`` keeps
    the stored values (palette indices of a label PNG, 16-bit depth PNGs)."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, what, fix)
    fast = _read_png_fast(path, mode)
    if fast is not None:
        return fast
    try:
        with Image.open(path) as image:
            image.load()
            wanted = "RGBA" if mode == "RGBX" else mode
            if wanted is not None and image.mode != wanted:
                image = image.convert(wanted)
            return np.array(image)
    except _PIL_ERRORS as error:
        raise DataError(f"cannot read {what} {path}: {error}. The file is corrupt or truncated; {fix}") from None


def read_label_png(path: str | Path, what: str = "label map", fix: str = "re-extract it from the release") -> np.ndarray:
    """A single-channel label PNG as stored (palette indices or grey values), H×W."""
    array = read_image(path, what, fix, mode=None)
    if array.ndim != 2:
        raise DataError(f"{path}: a {what} must have one channel, found shape {array.shape}; {fix}")
    return array


def read_npy(path: str | Path, what: str = "array", fix: str = "re-extract it from the release") -> np.ndarray:
    """``np.load`` without pickles."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, what, fix)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"cannot read {what} {path}: {error}; {fix}") from None


def read_torch(
    path: str | Path, what: str = "PyTorch file", fix: str = "re-extract it from the release", error: type[ScenemtlError] = DataError
) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors, numbers, strings and plain containers only.

    A file that needs other pickled objects is refused with a sentence on how to convert it (never
    with advice to turn the check off); any other failure names the file. ``error`` is the
    exception type raised (``CheckpointError`` for checkpoints).
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise error(f"missing file {path} ({what}); {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as failure:  # torch raises several types for corrupt or unsafe files
        message = str(failure)
        if isinstance(failure, pickle.UnpicklingError) or "weights_only" in message or "Weights only" in message:
            raise error(
                f"{path} ({what}) holds pickled Python objects other than tensors, numbers, strings and plain "
                "containers, which could run code when read, so scenemtl does not read it. Convert it where you "
                "trust its origin: load it there and save only its tensors and plain dicts/lists (torch.save), "
                f"or the data as JSON; {fix}"
            ) from None
        first = message.splitlines()[0] if message else type(failure).__name__
        raise error(f"cannot read {what} {path}: {first}. The file is corrupt or truncated; {fix}") from None


def read_mat(path: str | Path, what: str = ".mat file", fix: str = "re-extract it from the release") -> dict[str, Any]:
    """A MATLAB (v5) file as scipy reads it, structs as nested ``mat_struct`` objects."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    if not path.is_file():
        raise _missing(path, what, fix)
    try:
        return loadmat(path, struct_as_record=False, squeeze_me=True)
    except (MatReadError, ValueError, OSError, TypeError, NotImplementedError, IndexError, EOFError) as error:
        raise DataError(f"cannot read {what} {path}: {error}; {fix}") from None


def read_json(path: str | Path, what: str = "JSON file", fix: str = "re-extract it from the release") -> Any:
    """A JSON file."""
    import json

    path = Path(path)
    if not path.is_file():
        raise _missing(path, what, fix)
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as error:
        raise DataError(f"cannot read {what} {path}: {error}; {fix}") from None


def read_split(path: str | Path, fix: str = "re-extract it from the release") -> list[str]:
    """A split list: one id per line (blank lines and surrounding spaces ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing split file {path}; {fix}")
    try:
        ids = [line.strip() for line in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read split file {path}: {error}; {fix}") from None
    ids = [i for i in ids if i]
    if not ids:
        raise DataError(f"split file {path} lists no ids; {fix}")
    return ids


def require_folder(path: str | Path, what: str, fix: str) -> Path:
    """A folder that must exist."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"no folder {path} ({what}); {fix}")
    return path


def read_png_opencv(path: str | Path, what: str, fix: str, anydepth: bool = False) -> np.ndarray:
    """A PNG through OpenCV, for what Pillow cannot read: 16-bit colour PNGs (Pillow keeps their high
    byte). ``anydepth=False``: the stored channels (``IMREAD_UNCHANGED``), reordered to the file's
    RGB(A) order; ``anydepth=True``: OpenCV's one-channel reading (``IMREAD_ANYDEPTH``, colour
    turned grey with its own weights), as the seeds read 16-bit depth PNGs."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise _missing(path, what, fix)
    array = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH if anydepth else cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DataError(f"cannot read {what} {path}: OpenCV could not decode it. The file is corrupt or truncated; {fix}")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return array


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: any other class or function is refused, never called."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3 (a text-to-bytes codec, nothing else)
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks to run {module}.{name}, which plain data never needs")
        return super().find_class(module, name)


def read_array_pickle(path: str | Path, what: str, fix: str) -> Any:
    """A pickle of plain containers and numpy arrays (Python 2 ones too, as latin-1), read without running code:
    a file that asks for anything else is refused with a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file {path} ({what}); {fix}")
    try:
        with path.open("rb") as file:
            return ArrayUnpickler(file, encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise DataError(f"{path} ({what}) is not read: {error}; {fix}") from None
    except (EOFError, ValueError, TypeError, AttributeError) as error:
        raise DataError(f"{path} ({what}) is not a readable pickle of arrays ({error}); {fix}") from None
