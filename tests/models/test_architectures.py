"""Every registered architecture: forward and backward at odd sizes, outputs at input size."""

import pytest
import torch

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError
from scenemtl.models import MODELS, ModelOutput, build_model
from scenemtl.tasks import TASKS, build_task

CLASSES = {"semseg": ["a", "b", "c", "d"], "human_parts": ["bg", "head", "torso"]}


#: the per-pixel tasks (instance tasks, det3d, have their own tests: tests/detection/test_recipe.py)
MAP_TASKS = [name for name in TASKS.names() if TASKS.get(name).is_map]
#: the architectures of per-pixel tasks (image-level ones, mtan_wrn, have their own tests: tests/models/test_mtan_wrn.py)
DENSE_ARCHS = [name for name in MODELS.names() if not MODELS.get(name).image_level]


def all_tasks():
    return {name: build_task(name, {}, CLASSES) for name in MAP_TASKS}


def tiny_model_config(arch: str) -> ModelConfig:
    """The architecture at test width: its registered ``tiny`` options on the tiny timm backbone."""
    factory = MODELS.get(arch)
    return ModelConfig(arch=arch, backbone={"name": factory.tiny_backbone}, options=dict(factory.tiny_options))


def task_sets(arch: str) -> list[tuple[str, ...]]:
    """Every task the architecture supports together, one task alone, and a pair (where its min_tasks/max_tasks allow)."""
    factory = MODELS.get(arch)
    names = [t for t in MAP_TASKS if factory.supported_tasks is None or t in factory.supported_tasks]
    sets = [tuple(names), (names[0],), tuple(names[-2:])]
    return [s for s in dict.fromkeys(sets) if factory.min_tasks <= len(s) <= (factory.max_tasks or len(s))]


CASES = [(arch, tasks) for arch in DENSE_ARCHS for tasks in task_sets(arch)]


@pytest.mark.parametrize("arch, task_names", CASES, ids=[f"{a}-{'+'.join(t)}" for a, t in CASES])
def test_forward_backward_outputs_gradients_and_determinism(arch, task_names):
    torch.manual_seed(0)
    tasks = {name: build_task(name, {}, CLASSES) for name in task_names}
    model = build_model(tiny_model_config(arch), tasks)
    size = (33, 47)  # odd: every resampling path must land exactly on the input size
    image = torch.randn(2, 3, *size)
    output = model(image)
    assert isinstance(output, ModelOutput)
    assert set(output.final) == set(tasks)
    for name, task in tasks.items():
        assert output.final[name].shape == (2, task.out_channels, *size), name
    for stage, logits in output.aux.items():
        assert set(logits) <= set(tasks), stage
        for name, value in logits.items():
            assert value.shape[:2] == (2, tasks[name].out_channels), (stage, name)
    # a random projection of every output (a plain mean would give zero gradients before batch norms)
    outputs = [*output.final.values(), *(v for stage in output.aux.values() for v in stage.values())]
    loss = sum((value.float() * torch.randn_like(value.float())).mean() for value in outputs)
    loss.backward()
    # in the graph of some output (values may be exactly 0 at initialisation: timm zero-initialises
    # the last norm of each residual block)
    without_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not without_grad, f"parameters outside every output's graph: {without_grad[:5]}"
    model.eval()
    with torch.no_grad():
        first, second = model(image).final, model(image).final
    assert all(torch.equal(first[t], second[t]) for t in tasks)


@pytest.mark.parametrize("arch", DENSE_ARCHS)
def test_even_sizes_too(arch):
    tasks = {name: build_task(name, {}, CLASSES) for name in task_sets(arch)[0]}
    model = build_model(tiny_model_config(arch), tasks)
    output = model(torch.randn(1, 3, 32, 48))
    assert all(output.final[n].shape[-2:] == (32, 48) for n in tasks)


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
    model = build_model(
        ModelConfig(arch="hps", backbone={"name": "test_resnet", "weights": str(path)}, options={"head_channels": 8}),
        {"depth": build_task("depth", {})},
    )
    first = next(model.backbone.parameters())
    assert torch.all(first == 0.5)


@pytest.mark.parametrize("arch", MODELS.names())
def test_every_option_is_typed(arch):
    # build_model validates option types from the factory's annotations; an unannotated option would go unchecked
    import inspect

    from scenemtl.registry import _adapter, _annotations

    factory = MODELS.get(arch)
    hints = _annotations(factory)
    for name, parameter in inspect.signature(factory).parameters.items():
        if name in ("config", "tasks") or parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        assert _adapter(hints.get(name)) is not None, f"{arch}: option '{name}' has no checkable annotation"


def test_options_are_validated_where_the_architecture_defines_them():
    tasks = {name: build_task(name, {}, CLASSES) for name in ("semseg", "depth")}
    with pytest.raises(ConfigError, match=r"option 'model.options.head_channels' for 'hps' must be .*int.*'wide'"):
        build_model(ModelConfig(arch="hps", options={"head_channels": "wide"}), tasks)
    with pytest.raises(ConfigError, match="greater than 0"):
        build_model(ModelConfig(arch="hps", options={"decoder_stride": 0}), tasks)
    # an option an architecture ignores is an error naming the valid ones
    with pytest.raises(ConfigError, match=r"unknown option 'model.options.head_channels' for 'invpt'.*embed_dim"):
        build_model(ModelConfig(arch="invpt", backbone={"name": "test_vit"}, options={"head_channels": 8}), tasks)
    with pytest.raises(ConfigError, match="'segnet' builds its own encoder"):
        build_model(ModelConfig(arch="segnet", backbone={"name": "resnet18"}), tasks)
    # the old place of the two decoder options says where they went
    with pytest.raises(ConfigError, match="model.options.head_channels"):
        ModelConfig.model_validate({"arch": "hps", "head_channels": 8})
    # stl passes its other options to the per-task architecture, which checks them
    stl = build_model(ModelConfig(arch="stl", options={"head_channels": 8}), tasks)
    assert stl.networks["depth"].heads["depth"].classifier.in_channels == 8
    with pytest.raises(ConfigError, match="unknown option 'model.options.head_channels' for 'segnet'"):
        build_model(ModelConfig(arch="stl", options={"per_task": "segnet", "head_channels": 8}), tasks)
    with pytest.raises(ConfigError, match="given twice"):
        build_model(ModelConfig(arch="stl", options={"head_channels": 8, "per_task_options": {"head_channels": 4}}), tasks)


@pytest.mark.parametrize("arch", DENSE_ARCHS)
def test_shared_cut_computes_the_same_outputs(arch):
    # gradient balancers run split architectures through SharedCut: same outputs, the shared tensors as leaves
    from scenemtl.models.base import SharedCut

    torch.manual_seed(0)
    tasks = {name: build_task(name, {}, CLASSES) for name in task_sets(arch)[0]}
    model = build_model(tiny_model_config(arch), tasks).eval()
    if not model.has_shared_representation():
        with pytest.raises(TypeError, match="no encode/decode"):
            SharedCut(model)
        return
    image = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        plain = model(image)
    cut = SharedCut(model)(image)
    assert cut.features and len(cut.features) == len(cut.feature_sources)
    assert all(f.is_leaf and f.requires_grad for f in cut.features)
    assert all(s.grad_fn is not None for s in cut.feature_sources)
    for name in tasks:
        torch.testing.assert_close(cut.final[name], plain.final[name])
