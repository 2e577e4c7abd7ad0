"""Reading user images with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from scenemtl.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB, upright (EXIF orientation applied); a missing or corrupt
    file raises DataError naming it.

    Greyscale becomes three equal channels; 16-bit and 32-bit greyscale are scaled to 8 bits (not
    clipped): ``v / 257`` for 16-bit, float images in [0, 1] times 255. 16-bit colour PNGs are
    read as their high bytes (Pillow's conversion, also a scaling).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb8(ImageOps.exif_transpose(image))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read image {path}: {error}. Replace or remove the file.") from None


def to_rgb8(image: Image.Image) -> np.ndarray:
    """A Pillow image of any mode as H×W×3 uint8 RGB, high bit depths scaled to 8 bits."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image).astype(np.float64)
        full = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) <= 65535 else 4294967295.0
        grey = np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8)
    elif image.mode == "F":
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    else:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    return np.repeat(grey[..., None], 3, axis=-1)


def probe_image(path: str | Path) -> tuple[int, int]:
    """An image's (height, width) from its header alone (no decoding); DataError naming a bad file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read image {path}: {error}. Replace or remove the file.") from None
    return height, width


def list_images(inputs: list[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted list of image files; errors name the bad input."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
            found.extend(files)
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"input not found: {path}")
    return found
