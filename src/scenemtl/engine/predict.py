"""Prediction on arbitrary images from a checkpoint alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from scenemtl.data.images import list_images, read_rgb
from scenemtl.config import Config
from scenemtl.engine.builder import select_device
from scenemtl.engine.checkpoint import resolve
from scenemtl.engine.loading import load_model
from scenemtl.errors import CheckpointError
from scenemtl.models.official import is_official_file
from scenemtl.engine.evaluate import autocast
from scenemtl.engine.logging import progress as progress_bar
from scenemtl.tasks import Task

#: inputs are padded to a multiple of this (the coarsest stride of the usual backbones)
SIZE_DIVISOR = 32


def prediction_array(prediction: torch.Tensor) -> np.ndarray:
    """An unbatched prediction as the array users expect: ``[H,W]`` for one channel, ``[H,W,C]`` otherwise."""
    array = prediction.cpu().numpy()
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    return np.ascontiguousarray(array)


def make_panel(image: np.ndarray, pictures: dict[str, np.ndarray]) -> Image.Image:
    """Input and each task's picture side by side, each captioned."""
    height, width = image.shape[:2]
    caption = 14
    panel = Image.new("RGB", ((len(pictures) + 1) * width, height + caption), "white")
    draw = ImageDraw.Draw(panel)
    for column, (name, picture) in enumerate([("input", image), *pictures.items()]):
        panel.paste(Image.fromarray(picture), (column * width, caption))
        draw.text((column * width + 2, 1), name, fill="black")
    return panel


class Predictor:
    """Runs a checkpoint's model on images of any size (padded to a multiple of 32, cropped back)."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", config: Config | None = None) -> None:
        self.device = select_device(device, option="--device")
        file = resolve(checkpoint)
        if config is None and is_official_file(file):
            raise CheckpointError(f"{file} is an official checkpoint without scenemtl metadata: give the config of its "
                                  "model with --config (its configs/<dataset>/<arch>.yaml)")
        if config is not None and not is_official_file(file):
            raise CheckpointError(f"{file} is a scenemtl checkpoint, which carries its own config: drop --config "
                                  "(it is for official .pth.tar files)")
        loaded = load_model(file, config, self.device)
        self.model, self.tasks, self.meta = loaded.model, loaded.tasks, loaded.meta
        self.mean = torch.tensor(self.meta.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(self.meta.std).view(1, 3, 1, 1)
        self.precision = self.meta.config.train.precision

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """Per-task predictions (unbatched) for an HxWx3 uint8 image."""
        height, width = image.shape[:2]
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        x = (x - self.mean) / self.std
        pad_h, pad_w = (-height) % SIZE_DIVISOR, (-width) % SIZE_DIVISOR
        x = F.pad(x, (0, pad_w, 0, pad_h)).to(self.device)
        with autocast(self.device, self.precision):
            output = self.model(x)
        return {
            name: task.predict(output.final[name][..., :height, :width].float())[0]
            for name, task in self.tasks.items()
        }


def predict_files(checkpoint: str | Path, inputs: list[str | Path], out_dir: str | Path, device: str = "auto",
                  progress: bool = True, config: Config | None = None) -> list[Path]:
    """Predict every input image; write ``<task>/<stem>.png`` and ``.npy`` and ``panels/<stem>.png``.

    All inputs are read before anything is written, so a corrupt file stops the run with an
    error naming it and leaves the output folder as it was.
    """
    files = list_images(list(inputs))
    images = [read_rgb(path) for path in files]
    predictor = Predictor(checkpoint, device, config)
    out = Path(out_dir)
    stems = _unique_stems(files)
    written = []
    for stem, image in progress_bar(list(zip(stems, images)), desc="predict", disable=not progress):
        predictions = predictor(image)
        pictures = {}
        for name, prediction in predictions.items():
            task: Task = predictor.tasks[name]
            folder = out / name
            folder.mkdir(parents=True, exist_ok=True)
            pictures[name] = task.colorize(prediction)
            Image.fromarray(pictures[name]).save(folder / f"{stem}.png")
            np.save(folder / f"{stem}.npy", prediction_array(prediction))
        (out / "panels").mkdir(parents=True, exist_ok=True)
        panel_path = out / "panels" / f"{stem}.png"
        make_panel(image, pictures).save(panel_path)
        written.append(panel_path)
    return written


def _unique_stems(files: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for path in files:
        count = seen.get(path.stem, 0)
        seen[path.stem] = count + 1
        stems.append(path.stem if count == 0 else f"{path.stem}_{count}")
    return stems
