"""``init_output_bias``: every architecture that lists its output layers starts each task's outputs at the prior."""

import pytest
import torch

from scenemtl.models import MODELS, build_model
from scenemtl.models.base import set_output_bias
from scenemtl.tasks import build_task
from tests.models.test_architectures import CLASSES, task_sets, tiny_model_config


@pytest.mark.parametrize("arch", MODELS.names())
def test_output_layers_start_at_the_prior(arch):
    if MODELS.get(arch).image_level:  # classification tasks (mtan_wrn)
        tasks = {n: build_task(n, {"type": "classification", "num_classes": c}) for n, c in (("digits", 10), ("textures", 47))}
    else:
        tasks = {name: build_task(name, {}, CLASSES) for name in task_sets(arch)[-1]}
    model = build_model(tiny_model_config(arch), tasks)
    layers = model.output_layers()
    assert set(layers) == set(tasks) and all(layers[name] for name in tasks)
    priors = {name: torch.linspace(-1, 1, task.out_channels) + 0.25 for name, task in tasks.items()}
    model.init_output_bias(priors)
    for name, prior in priors.items():
        for layer in layers[name]:
            bias = layer.bias.detach()
            expected = torch.cat([torch.zeros(1), prior]) if bias.shape[0] == 2 * prior.shape[0] == 2 else prior
            assert torch.equal(bias, expected), (arch, name)


def test_a_two_class_output_of_a_binary_task_gets_zero_and_the_prior():
    bias = torch.full((2,), 9.0)
    set_output_bias(bias, torch.tensor([0.3]))
    assert bias.tolist() == pytest.approx([0.0, 0.3])
    wide = torch.zeros(3)
    set_output_bias(wide, torch.tensor([1.0, 2.0, 3.0]))
    assert wide.tolist() == [1.0, 2.0, 3.0]
