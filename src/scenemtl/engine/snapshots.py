"""Pictures of predictions for the logs."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from scenemtl.data import DenseDataset
from scenemtl.engine.predict import make_panel
from scenemtl.tasks import Task


@torch.no_grad()
def prediction_panels(
    model: torch.nn.Module, tasks: Mapping[str, Task], raw: DenseDataset, prepared: Dataset, device: torch.device, index: int = 0
) -> dict[str, np.ndarray]:
    """Input + each task's prediction, and input + each task's target, for evaluation sample ``index``."""
    was_training = model.training
    model.eval()
    sample = prepared[index]
    image = raw.sample(index)["image"].permute(1, 2, 0).numpy()
    height, width = image.shape[:2]
    output = model(sample["image"][None].to(device))
    predictions, targets = {}, {}
    for name, task in tasks.items():
        if not task.is_map:  # instance targets (3D boxes): drawn at the image's size, decoded with the sample's camera
            prediction = task.predict(output.final[name], **task.prediction_inputs({name: [sample[name]]}))[0]
            predictions[name] = task.colorize(prediction, size=(height, width))  # type: ignore[call-arg]
            targets[name] = task.colorize(sample[name], size=(height, width))  # type: ignore[call-arg]
            continue
        prediction = task.predict(output.final[name].float())[0][..., :height, :width]
        predictions[name] = task.colorize(prediction)
        targets[name] = task.colorize(sample[name][..., :height, :width])
    model.train(was_training)
    return {"prediction": np.asarray(make_panel(image, predictions)), "target": np.asarray(make_panel(image, targets))}
