"""ONNX export with a parity check against PyTorch (``scenemtl export CHECKPOINT --format onnx``).

The exported graph takes ``image``, a float32 batch ``[N,3,H,W]`` normalised with the model's mean
and std (``model.meta``), and returns one output per task, named by the task: the logits of
``ModelOutput.final`` at the input size (apply the task's post-processing: argmax, sigmoid, the
normals' normalisation). Export uses PyTorch's TorchScript-based exporter in evaluation mode, the
layers as the architecture writes them (``layers.as_written``).

After writing, onnxruntime runs the file on a random batch at the export size and on a second
size; the maximum absolute difference to PyTorch is reported per task. Height and width are
dynamic when the second size also matches; otherwise the graph keeps the export size (the
architecture computes shapes in Python, e.g. a ViT's position grid) and the report says so. An
architecture whose operations ONNX cannot express raises an error naming it and the operation.
Needs the ``onnx`` extra: ``pip install 'scenemtl[onnx]'``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scenemtl.errors import ConfigError, ScenemtlError
from scenemtl.models.layers import as_written

OPSET = 17


@dataclass
class OnnxReport:
    """What an export wrote and how closely onnxruntime reproduces PyTorch."""

    path: Path
    size: tuple[int, int]
    #: task → max |onnxruntime − PyTorch| at the export size
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    dynamic: bool = False
    note: str = ""

    def lines(self) -> list[str]:
        """The report as the CLI prints it."""
        shape = "dynamic height/width" if self.dynamic else f"fixed to {self.size[0]}×{self.size[1]}"
        out = [f"wrote {self.path} ({shape})"] + [
            f"  {task}: max abs diff {diff:.2e} (onnxruntime vs PyTorch)" for task, diff in self.max_abs_diff.items()
        ]
        return out + ([f"  {self.note}"] if self.note else [])


class _Outputs(nn.Module):
    """The model with its final outputs as a tuple in task order (ONNX outputs are positional)."""

    def __init__(self, model: nn.Module, tasks: list[str]) -> None:
        super().__init__()
        self.model, self.tasks = model, tasks

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        final = self.model(image).final
        return tuple(final[name].float() for name in self.tasks)


def export_onnx(model: nn.Module, path: str | Path, size: tuple[int, int] = (256, 256), check: bool = True, seed: int = 0) -> OnnxReport:
    """Write ``model`` (from ``scenemtl.load_model`` / ``create_model``) as ONNX at ``size`` and check it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("ONNX export needs onnx and onnxruntime: pip install 'scenemtl[onnx]'") from None
    meta = getattr(model, "meta", None)
    tasks = list(meta.config.tasks) if meta is not None else []
    if not tasks:
        raise ConfigError("export needs a scenemtl model (scenemtl.load_model or create_model), which names its tasks")
    arch = meta.config.model.arch
    height, width = int(size[0]), int(size[1])
    if height < 8 or width < 8:
        raise ConfigError(f"--size {height} {width}: give the height and width the model will run at (≥ 8)")
    model = model.cpu().eval()
    wrapped = _Outputs(model, tasks).eval()
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(1, 3, height, width, generator=generator)
    buffer = io.BytesIO()
    try:
        # as_written: the architecture's own layers (e.g. InvPT's fusion as one convolution, not the CPU's
        # factored form, whose resize matrices would hold the export size)
        with warnings.catch_warnings(), torch.no_grad(), as_written():
            warnings.simplefilter("ignore")  # the tracer's warnings about Python values it records
            torch.onnx.export(
                wrapped,
                (example,),
                buffer,
                input_names=["image"],
                output_names=tasks,
                dynamo=False,
                opset_version=OPSET,
                dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, **{t: {0: "batch", 2: "height", 3: "width"} for t in tasks}},
            )
    except Exception as error:  # the exporter's own errors: unsupported operators, Python control flow
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ScenemtlError(
            f"architecture '{arch}' cannot be exported to ONNX (opset {OPSET}): {type(error).__name__}: {reason[:300]}"
        ) from None
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buffer.getvalue())
    report = OnnxReport(out, (height, width))
    if not check:
        return report
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    batch = torch.randn(2, 3, height, width, generator=generator)
    report.max_abs_diff = _differences(session, wrapped, batch, tasks)
    other = torch.randn(1, 3, height + 32, width + 32, generator=generator)
    try:
        report.dynamic = max(_differences(session, wrapped, other, tasks).values()) <= 1e-3
    except Exception:  # the graph holds the export size: onnxruntime rejects or mis-sizes another
        report.dynamic = False
    if not report.dynamic:
        report.note = (
            f"{arch} keeps the export size in its graph (shapes computed in Python); run it at "
            f"{height}×{width}, or export again with --size for another size"
        )
    return report


def _differences(session, wrapped: nn.Module, batch: torch.Tensor, tasks: list[str]) -> dict[str, float]:
    outputs = session.run(None, {"image": batch.numpy()})
    with torch.no_grad():
        reference = wrapped(batch)
    diffs = {}
    for task, got, want in zip(tasks, outputs, reference):
        if got.shape != tuple(want.shape):
            raise ScenemtlError(f"onnxruntime gave {task} of shape {got.shape}, PyTorch {tuple(want.shape)}")
        diffs[task] = float(np.abs(got - want.numpy()).max())
    return diffs
