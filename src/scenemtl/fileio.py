"""Reading dataset files: every failure is a DataError that names the file and says what to do.

The loaders of the real releases read through these functions only, so that a truncated PNG, a
missing ``.npy`` or a ``.mat`` without the expected field is reported the same way everywhere
(and ``scenemtl data check`` can list every such problem of a copy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from scenemtl.errors import DataError, ScenemtlError

_PIL_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError)


def _missing(path: Path, what: str, fix: str) -> DataError:
    return DataError(f"missing file {path} ({what}); {fix}")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_kind(path: Path) -> tuple[int, int] | None:
    """``(bit depth, colour type)`` from a PNG's header, ``None`` for any other file."""
    with open(path, "rb") as file:
        head = file.read(26)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _read_png_fast(path: Path, mode: str | None) -> np.ndarray | None:
    """8-bit grey and RGB PNGs through OpenCV's decoder (about 1.4× Pillow's speed, the same pixels:
    PNG is lossless and neither applies gamma or orientation with ``IMREAD_UNCHANGED``); ``None``
    for anything else (palette, 16-bit, alpha, or a file OpenCV cannot read), which Pillow reads."""
    kind = _png_kind(path)
    if kind not in ((8, 0), (8, 2)) or (kind == (8, 0)) != (mode is None) or mode not in (None, "RGB"):
        return None
    import cv2

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint8 or array.ndim != (2 if kind == (8, 0) else 3):
        return None
    if array.ndim == 3:
        if array.shape[2] != 3:
            return None
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    return array


def read_image(path: str | Path, what: str = "image", fix: str = "re-extract it from the release", mode: str | None = "RGB") -> np.ndarray:
    """An image file as a numpy array: ``mode='RGB'`` gives H×W×3 uint8; ``mode=None`` keeps the stored
    values (palette indices of a label PNG, 16-bit depth PNGs)."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, what, fix)
    fast = _read_png_fast(path, mode)
    if fast is not None:
        return fast
    try:
        with Image.open(path) as image:
            image.load()
            if mode is not None and image.mode != mode:
                image = image.convert(mode)
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
