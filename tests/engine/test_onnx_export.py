"""ONNX export: every registered architecture exports with parity (≤ 1e-4 in fp32) or says why it cannot."""

from __future__ import annotations

import numpy as np
import onnxruntime  # the [test] extra installs it
import pytest
import torch

import scenemtl
from scenemtl.engine.onnx_export import export_onnx
from scenemtl.errors import ScenemtlError
from scenemtl.models import MODELS
from tests.models.test_architectures import CLASSES, task_sets


#: architectures whose graphs ONNX cannot express today, and the operation the error names
NOT_EXPORTABLE = {
    "invpt": "_upsample_bicubic2d_aa",  # antialiased bicubic resizing of the ViT position grid
    "diffusionmtl": "Constant",  # the sampling loop's Python constants
    "segnet": "max_unpool2d",  # SegNet's unpooling by indices has no ONNX export in PyTorch's exporter
    "mtan": "max_unpool2d",
    "stan": "max_unpool2d",
    "segnet_dense": "max_unpool2d",
}
#: architectures whose graph keeps the export size (shapes computed in Python)
FIXED_SIZE = {"taskprompter"}


#: the tasks of architectures that predict image-level tasks only (mtan_wrn): two classification tasks
IMAGE_TASKS = {"digits": {"type": "classification", "classes": 10}, "textures": {"type": "classification", "classes": 47}}


def tiny(arch: str):
    factory = MODELS.get(arch)
    if factory.image_level:
        torch.manual_seed(0)
        return scenemtl.create_model(arch, tasks=IMAGE_TASKS, backbone=factory.tiny_backbone, **factory.tiny_options)
    names = task_sets(arch)[0]
    tasks = {name: (len(CLASSES[name]) if name in CLASSES else None) for name in names}
    torch.manual_seed(0)
    return scenemtl.create_model(arch, tasks=tasks, backbone=factory.tiny_backbone, **factory.tiny_options)


@pytest.mark.parametrize("arch", MODELS.names())
def test_every_architecture_exports_with_parity_or_says_why_not(arch, tmp_path):
    model = tiny(arch)
    image_level = MODELS.get(arch).image_level
    # the transformers' position grid: 64; the decathlon's WRN: 72
    size = (72, 72) if image_level else tuple(MODELS.get(arch).tiny_options.get("img_size", (32, 32)))
    if arch in NOT_EXPORTABLE:
        with pytest.raises(ScenemtlError, match=rf"architecture '{arch}' cannot be exported to ONNX.*{NOT_EXPORTABLE[arch]}"):
            export_onnx(model, tmp_path / "m.onnx", size=size)
        return
    report = export_onnx(model, tmp_path / "m.onnx", size=size)
    assert set(report.max_abs_diff) == set(model.meta.config.tasks)
    assert max(report.max_abs_diff.values()) <= 1e-4, report.max_abs_diff
    assert report.dynamic == (arch not in FIXED_SIZE), report.note
    if not report.dynamic:
        assert f"{size[0]}×{size[1]}" in report.note and "--size" in report.note
    # the file is a standalone model: outputs named by task, at the input size
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(model.meta.config.tasks)
    outputs = session.run(None, {"image": np.zeros((1, 3, *size), dtype=np.float32)})
    if image_level:  # class scores per image
        assert [o.shape for o in outputs] == [(1, spec["classes"]) for spec in IMAGE_TASKS.values()]
    else:
        assert all(o.shape[-2:] == size for o in outputs)


def test_cli_exports_a_checkpoint_and_prints_the_parity(tmp_path, capsys):
    from scenemtl.cli import main

    folder = scenemtl.save_pretrained(tiny("hps"), tmp_path / "m")
    out = tmp_path / "exported" / "hps.onnx"
    assert main(["export", str(folder), "--out", str(out), "--size", "32", "48"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "dynamic height/width" in printed and "semseg: max abs diff" in printed
    assert main(["export", str(folder), "--size", "2", "2"]) == 2
