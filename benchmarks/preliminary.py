"""Score a run's deep-supervision outputs (e.g. DiffusionMTL's preliminary predictions) beside its final ones.

    python benchmarks/preliminary.py RUN_DIR [--stage preliminary] [--reference STL_RUN_DIR]

Loads the run's latest checkpoint, evaluates its validation split twice, once with the final
outputs and once with the ``aux[stage]`` outputs in their place, and prints both metrics (and Δm
against the reference run's ``results.json`` where given). For DiffusionMTL this separates what
the preliminary decoder learned from what the denoiser adds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from scenemtl.engine import builder
from scenemtl.engine.evaluate import evaluate
from scenemtl.metrics import delta_m
from scenemtl.models import ModelOutput


class StageAsFinal(torch.nn.Module):
    """The wrapped model with one deep-supervision stage returned as its final output."""

    def __init__(self, model: torch.nn.Module, stage: str) -> None:
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, image: torch.Tensor) -> ModelOutput:
        return ModelOutput(final=self.model(image).aux[self.stage])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder (its latest checkpoint is read)")
    parser.add_argument("--stage", default="preliminary")
    parser.add_argument("--reference", default=None, help="a single-task run folder for Δm")
    args = parser.parse_args()
    device = torch.device("cpu")
    model, tasks, meta = builder.model_from_checkpoint(args.run, device)
    config = meta.config
    info = builder.dataset_info(config)
    dataset = builder.build_dataset(config, config.data.val_split)
    loader = builder.eval_loader(config, dataset, builder.build_transform(config, tasks, info, train=False))
    reference = None
    if args.reference:
        reference = json.loads((Path(args.reference) / "results.json").read_text())
    for label, net in (("final", model), (args.stage, StageAsFinal(model, args.stage))):
        metrics = {t: m.compute() for t, m in evaluate(net, tasks, loader, device, progress=False).items()}
        line = " ".join(f"{t} {tasks[t].metric().main}={metrics[t][tasks[t].metric().main]:.4g}" for t in tasks)
        if reference is not None:
            main = {t: [tasks[t].metric().main] for t in tasks}
            directions = reference["directions"]
            ref = {t: {n: reference["metrics"][t][n] for n in ns} for t, ns in main.items()}
            line += f" Δm={delta_m(metrics, ref, directions, main):+.2f}%"
        print(f"{label:<12} {line}")


if __name__ == "__main__":
    main()
