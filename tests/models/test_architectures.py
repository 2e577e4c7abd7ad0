"""Every registered architecture: forward and backward at odd sizes, outputs at input size."""

import pytest
import torch

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models import MODELS, ModelOutput, build_model
from scenemtl.tasks import TASKS, build_task

CLASSES = {"semseg": ["a", "b", "c", "d"], "human_parts": ["bg", "head", "torso"]}


def all_tasks():
    return {name: build_task(name, {}, CLASSES) for name in TASKS.names()}


#: narrow variants of the architectures whose width is fixed by their paper
TINY_OPTIONS = {"segnet": {"filters": [4, 8, 8, 16, 16]}, "mtan": {"filters": [4, 8, 8, 16, 16]}}


def tiny_model_config(arch: str) -> ModelConfig:
    return ModelConfig(arch=arch, backbone={"name": "test_resnet"}, head_channels=8, options=TINY_OPTIONS.get(arch, {}))


@pytest.mark.parametrize("arch", MODELS.names())
@pytest.mark.parametrize("size", [(33, 47), (32, 48)])
def test_forward_backward_all_tasks(arch, size):
    torch.manual_seed(0)
    tasks = all_tasks()
    model = build_model(tiny_model_config(arch), tasks)
    image = torch.randn(2, 3, *size)
    output = model(image)
    assert isinstance(output, ModelOutput)
    assert set(output.final) == set(tasks)
    for name, task in tasks.items():
        assert output.final[name].shape == (2, task.out_channels, *size), name
    loss = sum(output.final[name].float().mean() for name in tasks)
    for stage in output.aux.values():
        loss = loss + sum(logits.float().mean() for logits in stage.values())
    loss.backward()
    without_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not without_grad, f"parameters outside the graph: {without_grad[:5]}"


def test_hps_shares_the_backbone_and_stl_shares_nothing():
    tasks = {name: build_task(name, {}, CLASSES) for name in ("semseg", "depth")}
    hps = build_model(tiny_model_config("hps"), tasks)
    stl = build_model(tiny_model_config("stl"), tasks)
    assert len(hps.shared_parameters()) > 0 and stl.shared_parameters() == []
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    backbone = sum(p.numel() for p in hps.backbone.parameters())
    assert count(stl) == count(hps) + backbone  # one more backbone for the second task
    # the semseg network of the STL model is blind to depth: its output does not change with it
    image = torch.randn(1, 3, 32, 32)
    stl.eval()
    before = stl(image).final["semseg"].clone()
    with torch.no_grad():
        for p in stl.networks["depth"].parameters():
            p.add_(1.0)
    assert torch.equal(stl(image).final["semseg"], before)


def test_unknown_architecture_backbone_and_option_are_clear_errors():
    tasks = {"depth": build_task("depth", {})}
    with pytest.raises(ConfigError, match="Did you mean 'hps'"):
        build_model(ModelConfig(arch="hsp"), tasks)
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_model(ModelConfig(arch="hps", backbone={"name": "resnet_nonexistent"}), tasks)
    with pytest.raises(ConfigError, match="model.options.depthh"):
        build_model(ModelConfig(arch="hps", options={"depthh": 1}), tasks)
    with pytest.raises(ConfigError, match="file not found"):
        build_model(ModelConfig(arch="hps", backbone={"name": "test_resnet", "weights": "/nonexistent.pth"}), tasks)


def test_backbone_loads_a_local_weight_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    reference = timm.create_model("test_resnet", pretrained=False)
    with torch.no_grad():
        for p in reference.parameters():
            p.fill_(0.5)
    path = tmp_path / "weights.safetensors"
    save_file(reference.state_dict(), str(path))
    model = build_model(ModelConfig(arch="hps", backbone={"name": "test_resnet", "weights": str(path)}, head_channels=8),
                        {"depth": build_task("depth", {})})
    first = next(model.backbone.parameters())
    assert torch.all(first == 0.5)
