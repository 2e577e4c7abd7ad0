"""PNG decoding on one core: the decoders ``fileio.read_image`` chooses between, side by side on the same files.

    python benchmarks/png_speed.py [--root NYUD] [--samples 20] [--repeats 5] [--out benchmarks/results/png_speed.md]

``--root`` is a NYUD folder in the ATRC/InvPT PNG layout; without it a photo-like one is generated
(``loader_vs_official.write_photo_nyud``: 480×640 images with sensor noise, normals, region labels,
1-pixel edges). For each folder the decoders read the same bytes (already in memory), alternated file
by file, each on its best of ``--repeats`` passes; every decoder's pixels are checked equal to
libspng's first. Wuffs (``pywuffs``) decodes 8-bit grey and RGB files without transparency in
``fileio``, libspng (``pyspng``) the rest; OpenCV and Pillow are there for scale.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

FOLDERS = {"images": "RGB", "normals": "RGBX", "segmentation": None, "edge": None}


def decoders(mode: str | None) -> dict:
    import cv2
    import pyspng
    from PIL import Image

    from scenemtl import fileio

    def pillow(data: bytes) -> np.ndarray:
        import io

        with Image.open(io.BytesIO(data)) as image:
            wanted = "RGBA" if mode == "RGBX" else mode
            return np.array(image if wanted is None or image.mode == wanted else image.convert(wanted))

    def opencv(data: bytes) -> np.ndarray:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if array.ndim == 3:
            array = cv2.cvtColor(array, cv2.COLOR_BGR2RGBA if mode == "RGBX" else cv2.COLOR_BGR2RGB)
        return array

    return {
        "Wuffs (pywuffs)": lambda data: fileio._read_png_wuffs(data, mode is None, mode),
        "libspng (pyspng)": lambda data: pyspng.load(data, "RGBA") if mode == "RGBX" else pyspng.load(data),
        "OpenCV (libpng)": opencv,
        "Pillow": pillow,
    }


def main() -> None:
    import cv2

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    cv2.setNumThreads(0)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory() as folder:
        if args.root is None:
            from loader_vs_official import write_photo_nyud

            root = write_photo_nyud(Path(folder) / "NYUDv2", args.samples)
        else:
            root = args.root
        rows = []
        for name, mode in FOLDERS.items():
            files = sorted((root / name).glob("*.png"))[: args.samples]
            data = [f.read_bytes() for f in files]
            sides = decoders(mode)
            reference = [sides["libspng (pyspng)"](d) for d in data]
            for side, decode in sides.items():
                for d, want in zip(data, reference):
                    got = decode(d)
                    if got is None or not np.array_equal(got, want):
                        raise SystemExit(f"{side} decodes {name} differently from libspng")
            best = {side: float("inf") for side in sides}
            for _ in range(args.repeats):
                spent = {side: 0.0 for side in sides}
                for d in data:  # alternated file by file: every decoder sees the same machine
                    for side, decode in sides.items():
                        start = time.perf_counter()
                        decode(d)
                        spent[side] += time.perf_counter() - start
                best = {side: min(best[side], spent[side] / len(data)) for side in sides}
            size = f"{reference[0].shape[1]}×{reference[0].shape[0]}" + (f"×{reference[0].shape[2]}" if reference[0].ndim == 3 else "")
            kb = sum(map(len, data)) / len(data) / 1024
            cells = " | ".join(f"{1000 * best[s]:.2f} ms" for s in sides)
            ratio = best["libspng (pyspng)"] / best["Wuffs (pywuffs)"]
            rows.append(f"| {name} ({size}, {kb:.0f} KiB) | {cells} | {ratio:.2f}× |")
    header = "| files | " + " | ".join(sides) + " | Wuffs ÷ libspng speed |\n|---|" + "---|" * (len(sides) + 1)
    import PIL
    import torch

    versions = (
        f"Python {platform.python_version()}, numpy {np.__version__}, OpenCV {cv2.__version__}, Pillow {PIL.__version__}, "
        f"torch {torch.__version__}"
    )
    text = header + "\n" + "\n".join(rows) + "\n"
    print(text)
    if args.out:
        command = "python benchmarks/png_speed.py " + " ".join(a if not a.startswith("/") else "…" for a in sys.argv[1:])
        Path(args.out).write_text(
            f"# PNG decoding, one core\n\n`{command}` on {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}; {versions}); "
            f"best of {args.repeats} passes over {args.samples} files per folder, decoders alternated file by file; "
            "every decoder's pixels equal libspng's.\n\n" + text
        )


if __name__ == "__main__":
    main()
