"""``scenemtl serve CHECKPOINT``: a web demo (gradio) that shows every task's prediction of an uploaded image or video.

An image gives one picture per task with its key under it (class legend, depth colour bar in
metres, the normals' axis colours) and a ``.npz`` of the raw predictions to download; a video
gives the MP4 of panels ``scenemtl predict`` writes. Needs the ``serve`` extra:
``pip install 'scenemtl[serve]'``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scenemtl.config import Config
from scenemtl.errors import ConfigError


def _gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo
    try:
        import gradio
    except ImportError:
        raise ConfigError("scenemtl serve needs gradio: pip install 'scenemtl[serve]'") from None
    return gradio


def build_app(model: str | Path | torch.nn.Module, device: str = "auto", config: Config | None = None) -> Any:
    """The gradio ``Blocks`` app for ``model`` (a checkpoint or a model from ``scenemtl.load_model``)."""
    from scenemtl.engine.predict import Predictor, panel_font_size, prediction_array
    from scenemtl.engine.video import predict_video
    from scenemtl.tasks.colors import draw_key

    gr = _gradio()
    predictor = Predictor(model, device, config)
    tasks = list(predictor.tasks)
    outputs_dir = Path(tempfile.mkdtemp(prefix="scenemtl-serve-"))

    def predict_image(image: np.ndarray | None) -> list[Any]:
        if image is None:
            raise gr.Error("upload an image first")
        image = np.ascontiguousarray(image[..., :3].astype(np.uint8))
        predictions = predictor(image)
        pictures, keys = predictor.pictures(predictions), predictor.keys(predictions)
        shown = []
        for name in tasks:
            key = keys[name]
            strip = draw_key(key, image.shape[1], panel_font_size(image.shape[1])) if key is not None else None
            shown.append(pictures[name] if strip is None else np.concatenate([pictures[name], strip]))
        raw = outputs_dir / f"predictions_{len(list(outputs_dir.iterdir()))}.npz"
        np.savez_compressed(raw, **{name: prediction_array(value) for name, value in predictions.items()})
        return [*shown, str(raw)]

    def predict_clip(video: str | None) -> str:
        if not video:
            raise gr.Error("upload a video first")
        out = outputs_dir / f"{Path(video).stem}_panels.mp4"
        predict_video(predictor.model, video, out, device=str(predictor.device), progress=False)
        return str(out)

    meta = predictor.meta
    title = f"scenemtl: {meta.config.model.arch} on {meta.config.model.backbone.name}"
    with gr.Blocks(title=title) as app:
        gr.Markdown(f"## {title}\nTasks: {', '.join(tasks)}. Upload an image (any size) or a video.")
        with gr.Tab("Image"):
            image = gr.Image(type="numpy", label="image", elem_id="input-image")
            button = gr.Button("Predict", elem_id="predict")
            with gr.Row():
                shown = [gr.Image(label=name, elem_id=f"task-{name}", interactive=False) for name in tasks]
            raw = gr.File(label="raw predictions (.npz: one array per task)", elem_id="raw")
            button.click(predict_image, inputs=image, outputs=[*shown, raw])
        with gr.Tab("Video"):
            video = gr.Video(label="video", elem_id="input-video")
            video_button = gr.Button("Predict video", elem_id="predict-video")
            panels = gr.Video(label="panels", elem_id="panels-video", interactive=False)
            video_button.click(predict_clip, inputs=video, outputs=panels)
    app.scenemtl_outputs = outputs_dir
    return app


def serve(
    model: str | Path | torch.nn.Module, host: str = "127.0.0.1", port: int = 7860, device: str = "auto", config: Config | None = None
) -> None:
    """Run the demo at ``http://host:port`` until interrupted (loopback only unless ``host`` says otherwise)."""
    build_app(model, device, config).launch(server_name=host, server_port=port, share=False)
