"""Prediction throughput: PyTorch eager vs ONNX Runtime on the CPU, images/s and video frames/s, side by side.

    python benchmarks/predict_speed.py [--size 448 576] [--images 8] [--frames 8] [--threads 2] [--out FILE.md]

hps (ResNet-50, NYUD's four tasks, ``head_channels`` 256, ``decoder_stride`` 4: configs/nyud/hps.yaml)
and invpt (ViT-S/16 at the input size, InvPT's released decoder widths; ViT-L as in the paper is
too slow for a CPU benchmark) with random weights. Per row: the model is built, exported to ONNX
(``scenemtl export``'s path, parity checked), one pass warms each runtime up, then ``images``
single-image passes are timed and images/s reported; the video row runs ``scenemtl predict`` on a
generated clip of ``frames`` frames (decode, predict, panel, encode) with the eager model. An
architecture ONNX cannot express gets the exporter's reason in its row.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

MODELS = {
    "hps": {"backbone": "resnet50", "options": {"head_channels": 256, "decoder_stride": 4}},
    "invpt": {"backbone": "vit_small_patch16_384", "options": {"embed_dim": 512, "pred_channels": 64}},
}


def build(arch: str, size: tuple[int, int]):
    import scenemtl

    spec = MODELS[arch]
    options = dict(spec["options"])
    if arch == "invpt":
        options["img_size"] = list(size)
    torch.manual_seed(0)
    model = scenemtl.create_model(arch, tasks=["semseg", "depth", "normals", "edge"], dataset="nyud", backbone=spec["backbone"], **options)
    return model.eval()


def images_per_second(run, count: int) -> float:
    run()  # warm-up
    start = time.perf_counter()
    for _ in range(count):
        run()
    return count / (time.perf_counter() - start)


def measure(arch: str, size: tuple[int, int], images: int, frames: int, tmp: Path) -> dict:
    import av

    from scenemtl.engine.onnx_export import export_onnx
    from scenemtl.engine.video import predict_video
    from scenemtl.errors import ScenemtlError

    model = build(arch, size)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        eager = images_per_second(lambda: model(x), images)
    row = {"arch": arch, "eager": eager, "onnx": None, "note": ""}
    try:
        report = export_onnx(model, tmp / f"{arch}.onnx", size=size)
        import onnxruntime

        session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
        feed = {"image": x.numpy()}
        row["onnx"] = images_per_second(lambda: session.run(None, feed), images)
        row["note"] = f"max abs diff {max(report.max_abs_diff.values()):.1e}" + ("" if report.dynamic else ", fixed size")
    except ScenemtlError as error:
        row["note"] = str(error).split(": ", 1)[-1][:90]
    clip = tmp / "clip.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(clip), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    start = time.perf_counter()
    predict_video(model, clip, tmp / "out.mp4", device="cpu", progress=False)
    row["video"] = frames / (time.perf_counter() - start)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[448, 576])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--archs", nargs="+", default=list(MODELS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = (args.size[0], args.size[1])
    lines = [
        f"Prediction throughput at {size[0]}×{size[1]}, batch 1, {args.threads} CPU threads, random weights "
        f"(`python benchmarks/predict_speed.py`)",
        "",
        "| model | PyTorch eager images/s | ONNX Runtime images/s | ORT / eager | video frames/s (eager, decode + panel + encode) | note |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            row = measure(arch, size, args.images, args.frames, Path(tmp))
            onnx = f"{row['onnx']:.2f}" if row["onnx"] else "–"
            ratio = f"{row['onnx'] / row['eager']:.2f}×" if row["onnx"] else "–"
            name = f"{arch} ({MODELS[arch]['backbone']})"
            lines.append(f"| {name} | {row['eager']:.2f} | {onnx} | {ratio} | {row['video']:.2f} | {row['note']} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
