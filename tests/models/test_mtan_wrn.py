"""MTAN-WRN-28-4 (Visual Decathlon): logits and the 9×9 map, the official parameter count part by part,
task-specific gradients, the shared-network baseline, refusal of per-pixel tasks, the tiny options."""

import pytest
import torch
import torch.nn.functional as F

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError, ScenemtlError
from scenemtl.data.decathlon import DOMAINS
from scenemtl.models import MODELS, build_model
from scenemtl.tasks import TASKS, build_task
from scenemtl.tasks.base import Task

#: the ten Decathlon domains and their class counts (MTAN's ``data_class``)
DECATHLON = DOMAINS


class _Classes(Task):
    """A stand-in image-level task (only where the ``classification`` task is not registered)."""

    is_map = False
    is_image_level = True

    def __init__(self, name: str, classes: int) -> None:
        super().__init__(name)
        self.out_channels = classes


def classification(name: str, classes: int) -> Task:
    if "classification" in TASKS.names():
        task = build_task("classification", {"num_classes": classes})
        assert task.is_image_level and task.out_channels == classes
        return task
    return _Classes(name, classes)


def decathlon_tasks(names=None):
    return {name: classification(name, DECATHLON[name]) for name in names or DECATHLON}


def count(module):
    return sum(p.numel() for p in module.parameters())


def tiny(tasks, **options):
    return build_model(ModelConfig(arch="mtan_wrn", options={**MODELS.get("mtan_wrn").tiny_options, **options}), tasks)


def test_forward_gives_logits_per_task_from_a_9x9_map():
    torch.manual_seed(0)
    tasks = decathlon_tasks()
    model = build_model(ModelConfig(arch="mtan_wrn"), tasks)
    seen = []
    model.encoder_block_att[3].register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    image = torch.randn(2, 3, 72, 72)
    with torch.no_grad():
        output = model(image)
        # the last attention level (shared 3×3 block, no pooling after it) runs once per task, on 9×9 maps
        assert seen == [torch.Size([2, 256, 9, 9])] * len(tasks)
        features = model.task_features(image, ["omniglot", "svhn"])
    assert set(output.final) == set(tasks)
    for name, classes in DECATHLON.items():
        assert output.final[name].shape == (2, classes), name
    assert all(f.shape == (2, 256, 9, 9) for f in features.values())
    # logits, not probabilities: no softmax (rows do not sum to 1, values not in [0, 1])
    logits = output.final["svhn"]
    assert not torch.allclose(logits.sum(1), torch.ones(2)) and (logits < 0).any()
    # the official pool: avg_pool2d(kernel 8) on the 9×9 map reads the top-left 8×8 only
    head = model.heads["svhn"]
    torch.testing.assert_close(logits, head(features["svhn"][..., :8, :8].mean(dim=(-2, -1))))
    assert not torch.allclose(logits, head(features["svhn"].mean(dim=(-2, -1))))
    # the branches differ per task (own attention), and running a subset gives the same logits
    assert not torch.allclose(features["omniglot"], features["svhn"])
    model.eval()
    with torch.no_grad():
        alone, together = model(image, tasks=["svhn"]).final, model(image).final
    assert set(alone) == {"svhn"}
    torch.testing.assert_close(alone["svhn"], together["svhn"])


def test_parameter_count_matches_the_official_model():
    with torch.device("meta"):
        model = build_model(ModelConfig(arch="mtan_wrn"), decathlon_tasks())
    # lorenmt/mtan visual_decathlon/model_wrn_mtan.py, WideResNet(depth=28, widen_factor=4, data_class):
    # the WRN trunk: conv1 448; stage 1 (16→64) 47,456 + 3 × 74,112; stage 2 (64→128) 230,144 + 3 × 295,680;
    # stage 3 (128→256) 919,040 + 3 × 1,181,184; bn1 512
    trunk = 448 + (47_456 + 3 * 74_112) + (230_144 + 3 * 295_680) + (919_040 + 3 * 1_181_184) + 512
    assert trunk == 5_850_528 and count(model.trunk) == trunk
    # shared encoder_block_att, 3×3 conv (bias)-BN: 16→64, 64→128, 128→256, 256→256
    block_att = 9_408 + 74_112 + 295_680 + 590_592
    assert block_att == 969_792 and count(model.encoder_block_att) == block_att
    # one task's attention: 16→16→16, 128→64→64, 256→128→128, 512→256→256 (1×1 conv-BN twice)
    attention = 608 + 12_672 + 49_920 + 198_144
    assert attention == 261_344
    assert all(count(model.encoder_att[name]) == attention for name in DECATHLON)
    # the heads: Linear(256, C) for the ten domains' classes (3,128 in all)
    heads = 257 * sum(DECATHLON.values())
    assert heads == 803_896 and count(model.heads) == heads
    assert count(model) == trunk + block_att + 10 * attention + heads == 10_237_656
    # BN running statistics are buffers, not parameters
    assert any("running_mean" in name for name, _ in model.named_buffers())
    assert sum(p.numel() for p in model.shared_parameters()) == trunk + block_att


def test_a_task_loss_reaches_only_its_branch_and_the_shared_layers():
    torch.manual_seed(0)
    names = ["aircraft", "dtd", "svhn"]
    model = tiny(decathlon_tasks(names))
    output = model(torch.randn(2, 3, 72, 72))
    F.cross_entropy(output.final["dtd"], torch.tensor([3, 7])).backward()
    shared = {id(p) for p in model.shared_parameters()}
    for name, p in model.named_parameters():
        if id(p) in shared or name.startswith(("encoder_att.dtd.", "heads.dtd.")):
            assert p.grad is not None, name
        else:
            assert name.startswith(("encoder_att.", "heads.")), name
            assert p.grad is None or not p.grad.any(), name
    own = [p.grad for n, p in model.named_parameters() if n.startswith(("encoder_att.dtd.", "heads.dtd."))]
    assert own and all(g.abs().sum() > 0 for g in own)
    assert model.trunk.conv1.weight.grad.abs().sum() > 0 and model.encoder_block_att[0][0].weight.grad.abs().sum() > 0


def test_without_attention_it_is_the_shared_wrn_with_linear_heads():
    with torch.device("meta"):
        model = build_model(ModelConfig(arch="mtan_wrn", options={"attention": False}), decathlon_tasks())
    names = [name for name, _ in model.named_parameters()]
    assert not any("att" in name for name in names)
    assert count(model) == 5_850_528 + 803_896
    assert sum(p.numel() for p in model.shared_parameters()) == 5_850_528
    small = tiny(decathlon_tasks(["cifar100", "gtsrb"]), attention=False)
    output = small(torch.randn(2, 3, 72, 72))
    assert output.final["cifar100"].shape == (2, 100) and output.final["gtsrb"].shape == (2, 43)


def test_per_pixel_tasks_are_refused():
    semseg = build_task("semseg", {}, {"semseg": ["a", "b"]})
    with pytest.raises(ConfigError, match="image-level"):
        build_model(ModelConfig(arch="mtan_wrn"), {"semseg": semseg})
    with pytest.raises(ConfigError, match="image-level"):
        build_model(ModelConfig(arch="mtan_wrn"), {"semseg": semseg, **decathlon_tasks(["svhn"])})


def test_tiny_options_build_and_run():
    torch.manual_seed(0)
    model = tiny(decathlon_tasks(["daimlerpedcls", "omniglot"]))
    assert count(model) < 50_000
    output = model(torch.randn(2, 3, 72, 72))
    assert output.final["daimlerpedcls"].shape == (2, 2) and output.final["omniglot"].shape == (2, 1623)
    sum(logits.logsumexp(1).mean() for logits in output.final.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_options_and_input_sizes():
    tasks = decathlon_tasks(["svhn"])
    with pytest.raises(ConfigError, match="four positive"):
        tiny(tasks, filters=[4, 8, 8])
    with pytest.raises(ConfigError, match="pool"):
        tiny(tasks, pool="max")
    with pytest.raises(ConfigError, match="blocks"):
        tiny(tasks, blocks=0)
    with pytest.raises(ConfigError, match="builds its own encoder"):
        build_model(ModelConfig(arch="mtan_wrn", backbone={"name": "resnet18"}), tasks)
    official = tiny(tasks)
    with pytest.raises(ScenemtlError, match="pool=global"):
        official(torch.randn(1, 3, 33, 47))
    # pool: global averages the whole map, at any size (odd sizes too: the pools round up like the strided convs)
    model = tiny(tasks, pool="global").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 47)).final["svhn"].shape == (1, 10)
        image = torch.randn(1, 3, 72, 72)
        features = model.task_features(image)["svhn"]
        torch.testing.assert_close(model(image).final["svhn"], model.heads["svhn"](features.mean(dim=(-2, -1))))
