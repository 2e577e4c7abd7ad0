"""Top-1 (and top-5) accuracy of image-level classification, streaming and exact under torchrun."""

from __future__ import annotations

import torch

from scenemtl.metrics.base import StreamingMetric

#: the target of an image without this task's label (decathlon: the other domains' images)
UNLABELLED = -1


class AccuracyMetric(StreamingMetric):
    """Accuracy in percent over the labelled images (targets ≠ −1): ``top1``, and ``top5`` when ``update``
    is given scores (``[B,C]``) instead of class ids (``[B]``); ``error`` = 100 − top1 (the decathlon's E);
    ``images`` the number scored."""

    directions = {"top1": True, "top5": True, "error": False}
    main = "top1"
    correct: torch.Tensor
    count: torch.Tensor

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state("correct", torch.zeros(2, dtype=torch.int64))  # top-1, top-5
        self.add_state("count", torch.zeros(2, dtype=torch.int64))  # images scored for each

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """``prediction``: class ids ``[B]`` (``ClassificationTask.predict``) or scores ``[B,C]``; ``target`` ``[B]``."""
        prediction, target = self._inputs(prediction, target.reshape(-1))
        labelled = target != UNLABELLED
        if prediction.dim() == 2:
            top = prediction[labelled].topk(min(5, prediction.shape[1]), dim=1).indices
            hits = top == target[labelled][:, None]
            self.correct += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum()]).to(torch.int64)
            self.count += int(labelled.sum())
        else:
            self.correct[0] += int((prediction.reshape(-1)[labelled] == target[labelled]).sum())
            self.count[0] += int(labelled.sum())

    def compute(self) -> dict[str, float]:
        """Accuracies in percent (NaN without a labelled image)."""
        values = {}
        for k, name in enumerate(("top1", "top5")):
            count = int(self.count[k])
            if name == "top5" and count == 0:
                continue
            values[name] = 100.0 * int(self.correct[k]) / count if count else float("nan")
        values["error"] = 100.0 - values["top1"]
        values["images"] = float(self.count[0])
        return values
