"""Prediction on arbitrary images from a checkpoint alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from scenemtl.data.images import list_images, probe_image, read_rgb
from scenemtl.config import Config
from scenemtl.engine.builder import select_device
from scenemtl.engine.checkpoint import resolve
from scenemtl.engine.loading import load_model
from scenemtl.errors import CheckpointError, ConfigError
from scenemtl.tasks.colors import Key, draw_key
from scenemtl.models.official import is_official_file
from scenemtl.engine.evaluate import autocast
from scenemtl.engine.logging import progress as progress_bar

#: inputs are padded to a multiple of this (the coarsest stride of the usual backbones)
SIZE_DIVISOR = 32


def prediction_array(prediction: torch.Tensor) -> np.ndarray:
    """An unbatched prediction as the array users expect: ``[H,W]`` for one channel, ``[H,W,C]`` otherwise."""
    array = prediction.cpu().numpy()
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    return np.ascontiguousarray(array)


def panel_font_size(width: int) -> int:
    """Caption and legend text size for pictures ``width`` pixels wide: legible at any size (12 to 28 px)."""
    return max(12, min(28, width // 18))


def make_panel(image: np.ndarray, pictures: dict[str, np.ndarray], keys: dict[str, Key | None] | None = None) -> Image.Image:
    """Input and each task's picture side by side, each captioned with its task's name, and under each
    picture its key (``Task.key``: the class legend, the depth colour bar in metres, the normals' axes)."""
    height, width = image.shape[:2]
    size = panel_font_size(width)
    font = ImageFont.load_default(size=size)
    caption = int(size * 1.5)
    strips = {name: draw_key(key, width, size) for name, key in (keys or {}).items() if key is not None}
    below = max((strip.shape[0] for strip in strips.values()), default=0)
    panel = Image.new("RGB", ((len(pictures) + 1) * width, caption + height + below), "white")
    draw = ImageDraw.Draw(panel)
    for column, (name, picture) in enumerate([("input", image), *pictures.items()]):
        panel.paste(Image.fromarray(picture), (column * width, caption))
        draw.text((column * width + 3, (caption - size) // 2), name, fill="black", font=font)
        if name in strips:
            panel.paste(Image.fromarray(strips[name]), (column * width, caption + height))
    return panel


class Predictor:
    """Runs a model on images of any size (padded to a multiple of 32, cropped back).

    ``model``: a checkpoint (any ``load_model`` source) or a model from ``scenemtl.create_model`` /
    ``scenemtl.load_model`` (it carries ``model.meta``). ``predictor(image)`` takes an H×W×3 uint8
    array and returns each task's prediction in the data contract's units (class ids, metres,
    unit normals, probabilities); ``predictor.pictures(predictions)`` colours them.
    """

    def __init__(
        self, model: str | Path | torch.nn.Module, device: str = "auto", config: Config | None = None, sensor: dict | None = None
    ) -> None:
        self.device = select_device(device, option="--device")
        #: a Cityscapes-3D sensor (``detection.cityscapes.read_sensor``) of the inputs: 3D boxes are decoded
        #: with its camera and written in its vehicle frame; None: the det3d task's ``camera`` option
        self.sensor = sensor
        if isinstance(model, torch.nn.Module):
            from scenemtl.api import meta_of
            from scenemtl.engine.builder import tasks_from_meta

            self.meta = meta_of(model)
            self.model, self.tasks = model.to(self.device).eval(), tasks_from_meta(self.meta)
            self._normalisation()
            return
        file = resolve(model)
        if config is None and is_official_file(file):
            raise CheckpointError(
                f"{file} is an official checkpoint without scenemtl metadata: give the config of its "
                "model with --config (its configs/<dataset>/<arch>.yaml)"
            )
        if config is not None and not is_official_file(file):
            raise CheckpointError(
                f"{file} is a scenemtl checkpoint, which carries its own config: drop --config (it is for official .pth.tar files)"
            )
        loaded = load_model(file, config, self.device)
        self.model, self.tasks, self.meta = loaded.model, loaded.tasks, loaded.meta
        self._normalisation()

    def _normalisation(self) -> None:
        self.mean = torch.tensor(self.meta.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(self.meta.std).view(1, 3, 1, 1)
        self.precision = self.meta.config.train.precision

    def pictures(self, predictions: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Each task's prediction as an H×W×3 uint8 picture (class colours, depth ramp, normals as RGB)."""
        return {name: self.tasks[name].colorize(prediction) for name, prediction in predictions.items()}

    def keys(self, predictions: dict[str, torch.Tensor]) -> dict[str, Key | None]:
        """What each picture's colours mean (``Task.key``): class legends, colour bars with units."""
        return {name: self.tasks[name].key(prediction) for name, prediction in predictions.items()}

    def panel(self, image: np.ndarray, predictions: dict[str, torch.Tensor]) -> Image.Image:
        """The input and every task's picture side by side, captioned, each with its key."""
        return make_panel(image, self.pictures(predictions), self.keys(predictions))

    def __call__(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """Per-task predictions (unbatched) for an H×W×3 uint8 image."""
        return self.predict_batch([image])[0]

    @torch.no_grad()
    def predict_batch(self, images: list[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        """Per-task predictions for images of one size, run as one batch."""
        for image in images:
            if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.uint8):
                raise ValueError(
                    f"Predictor takes H×W×3 uint8 RGB arrays, got {getattr(image, 'dtype', type(image).__name__)} "
                    f"of shape {getattr(image, 'shape', None)}; read files with scenemtl.data.images.read_rgb"
                )
        height, width = images[0].shape[:2]
        if any(image.shape[:2] != (height, width) for image in images):
            raise ValueError("predict_batch takes images of one size; call it per size (or the predictor per image)")
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
        x = (x - self.mean) / self.std
        pad_h, pad_w = (-height) % SIZE_DIVISOR, (-width) % SIZE_DIVISOR
        x = F.pad(x, (0, pad_w, 0, pad_h)).to(self.device)
        with autocast(self.device, self.precision):
            output = self.model(x)
        predictions: dict[str, Any] = {}
        for name, task in self.tasks.items():
            if task.is_map:
                predictions[name] = task.predict(output.final[name][..., :height, :width].float()).cpu()
                continue
            # instance predictions (3D boxes), decoded with the task's camera for images of this size
            batch: dict[str, Any] = {"image": x, "meta": [{"size": (height, width)} for _ in images]}
            if self.sensor is not None:
                from scenemtl.detection.cityscapes import sensor_camera

                camera = torch.as_tensor(sensor_camera(self.sensor, (height, width)), dtype=torch.float32)
                batch["camera"] = camera.expand(len(images), 3, 3)
            predictions[name] = [boxes.to("cpu") for boxes in task.predict(output.final[name], **task.prediction_inputs(batch))]
            for boxes in predictions[name]:
                setattr(boxes, "image_size", (height, width))  # what colorize draws on
        return [{name: values[i] for name, values in predictions.items()} for i in range(len(images))]


def predict_files(
    checkpoint: str | Path | torch.nn.Module,
    inputs: list[str | Path],
    out_dir: str | Path,
    device: str = "auto",
    progress: bool = True,
    config: Config | None = None,
    batch_size: int = 1,
    sensor: str | Path | dict | None = None,
) -> list[Path]:
    """Predict every input image; write ``<task>/<stem>.png`` and ``.npy`` and ``panels/<stem>.png``.

    Streams: images are decoded, predicted and written a batch at a time (consecutive images of one
    size form a batch of up to ``batch_size``), so memory does not grow with the number of inputs.
    Every input's header is checked first, so a missing or unreadable file stops the run with an
    error naming it before anything is written. Two inputs never write the same name (``a.png``
    and ``a.jpg`` give ``a`` and ``a_1``). ``sensor``: a Cityscapes-3D gtBbox3d JSON (or its
    ``sensor`` object; a file or the parsed dict) describing the inputs' camera, for 3D detection:
    boxes are then decoded with its camera and written in its vehicle frame (Cityscapes-3D
    prediction JSON); without it, with the task's ``camera`` option, in the camera frame.
    """
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    files = list_images(list(inputs))
    sizes = [probe_image(path) for path in files]
    if sensor is not None and not isinstance(sensor, dict):
        from scenemtl.detection.cityscapes import read_sensor

        sensor = read_sensor(sensor)
    predictor = Predictor(checkpoint, device, config, sensor=sensor)
    if sensor is not None and all(task.is_map for task in predictor.tasks.values()):
        raise ConfigError("--sensor is for 3D detection (task det3d); this model predicts only per-pixel maps")
    out = Path(out_dir)
    stems = unique_stems(files)
    written: list[Path] = []
    bar = progress_bar(total=len(files), desc="predict", disable=not progress, unit="image")
    for group in _batches(sizes, batch_size):
        images = [read_rgb(files[i]) for i in group]
        for i, image, predictions in zip(group, images, predictor.predict_batch(images)):
            written.append(_write(out, stems[i], image, predictions, predictor))
        bar.update(len(group))
    bar.close()
    return written


def _batches(sizes: list[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices in input order, cut into runs of one size of at most ``batch_size``."""
    groups: list[list[int]] = []
    for i, size in enumerate(sizes):
        if groups and len(groups[-1]) < batch_size and sizes[groups[-1][0]] == size:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _write(out: Path, stem: str, image: np.ndarray, predictions: dict[str, torch.Tensor], predictor: Predictor) -> Path:
    pictures = predictor.pictures(predictions)
    for name, prediction in predictions.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pictures[name]).save(folder / f"{stem}.png")
        if isinstance(prediction, torch.Tensor):
            np.save(folder / f"{stem}.npy", prediction_array(prediction))
        else:
            (folder / f"{stem}.json").write_text(json.dumps(_instance_json(prediction, predictor, name, image.shape[:2])))
    (out / "panels").mkdir(parents=True, exist_ok=True)
    panel_path = out / "panels" / f"{stem}.png"
    make_panel(image, pictures, predictor.keys(predictions)).save(panel_path)
    return panel_path


def _instance_json(prediction: Any, predictor: Predictor, name: str, size: tuple[int, int]) -> dict:
    """3D boxes as JSON: in the sensor's vehicle frame, as a Cityscapes-3D prediction file the official evaluator
    reads, when the predictor has a sensor; else in the camera frame (``Boxes3D.records``)."""
    classes = predictor.tasks[name].class_names
    if predictor.sensor is None:
        return {"frame": "camera (x right, y down, z forward), metres", "boxes": prediction.records(classes)}
    from scenemtl.detection.cityscapes import boxes_to_json

    written = boxes_to_json(prediction, predictor.sensor, (int(size[0]), int(size[1])), classes=classes)
    return {"frame": "Cityscapes-3D vehicle frame V (ISO 8855: x forward, y left, z up), metres", **written, "sensor": predictor.sensor}


def unique_stems(files: list[Path]) -> list[str]:
    """One output name per input: its stem, or ``stem_N`` with the first N no other input uses."""
    taken = {path.stem for path in files}
    used: set[str] = set()
    stems = []
    for path in files:
        stem, n = path.stem, 0
        while stem in used or (n > 0 and stem in taken):  # a suffixed name never takes another input's own name
            n += 1
            stem = f"{path.stem}_{n}"
        used.add(stem)
        stems.append(stem)
    return stems
