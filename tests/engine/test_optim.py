"""The poly schedule with warm-up, optimisers and bf16 autocast."""

import pytest
import torch

from scenemtl.config import TrainConfig
from scenemtl.engine.optim import build_optimizer, build_scheduler, poly_factor
from scenemtl.engine.trainer import Trainer


def test_poly_schedule_with_linear_warmup():
    assert poly_factor(0, 100, 0.9, warmup=10) == pytest.approx(0.1)
    assert poly_factor(9, 100, 0.9, warmup=10) == pytest.approx(1.0)
    assert poly_factor(10, 100, 0.9, warmup=10) == pytest.approx(1.0)
    assert poly_factor(55, 100, 0.9, warmup=10) == pytest.approx(0.5**0.9)
    assert poly_factor(100, 100, 0.9, warmup=10) == 0.0


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)])
def test_optimizers_and_scheduler_follow_the_config(name, cls):
    config = TrainConfig(optimizer=name, lr=0.1, steps=10, warmup_steps=0, poly_power=1.0)
    weight = torch.nn.Parameter(torch.ones(2))
    frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    optimizer = build_optimizer(config, [weight, frozen])
    assert isinstance(optimizer, cls) and len(optimizer.param_groups[0]["params"]) == 1
    scheduler = build_scheduler(config, optimizer)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(0.05)


def test_bf16_autocast_and_grad_clipping_train(tiny_config):
    trainer = Trainer(tiny_config("train.precision=bf16", "train.grad_clip=0.01", "train.steps=2"), progress=False, log=False)
    seen = {}
    conv = next(m for m in trainer.model.backbone.modules() if isinstance(m, torch.nn.Conv2d))

    def remember_dtype(module, inputs, output):
        seen.setdefault("dtype", output.dtype)

    conv.register_forward_hook(remember_dtype)
    norms = []

    def record_gradient_norm(optimizer, args, kwargs):
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    trainer.optimizer.register_step_pre_hook(record_gradient_norm)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    stats = trainer.train_step([next(iter(trainer.loader))])
    assert seen["dtype"] == torch.bfloat16
    assert norms[0] <= 0.01 * 1.001  # clipped to train.grad_clip
    assert all(torch.isfinite(torch.tensor(v)) for v in stats["loss"].values())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    # the scored outputs stay float32 (bf16 would round depth by ~0.4 %)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert trainer.model(torch.randn(1, 3, 32, 48)).final["depth"].dtype == torch.float32


def test_step_schedule_halves_the_rate_every_decay_steps():
    from scenemtl.errors import ConfigError

    config = TrainConfig(steps=10, lr=1e-4, optimizer="adam", warmup_steps=0, schedule="step", decay_every=4, decay_gamma=0.5)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer(config, [param])
    scheduler = build_scheduler(config, optimizer)
    rates = []
    for _ in range(9):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([1e-4] * 4 + [5e-5] * 4 + [2.5e-5])
    with pytest.raises(ConfigError, match="decay_every"):
        build_scheduler(TrainConfig(schedule="step"), optimizer)


def test_backbone_lr_is_a_group_of_its_own_and_betas_reach_adam(tiny_config):

    trainer = Trainer(tiny_config("train.optimizer=adam", "train.lr=5e-5", "train.backbone_lr=1e-5", "train.betas=[0.9, 0.98]"), log=False)
    groups = trainer.optimizer.param_groups
    encoder = {id(p) for p in trainer.model.shared_parameters()}
    assert [g["initial_lr"] for g in groups] == [5e-5, 1e-5]
    assert {id(p) for p in groups[1]["params"]} == encoder and not encoder & {id(p) for p in groups[0]["params"]}
    assert all(g["betas"] == (0.9, 0.98) for g in groups)
    trainer.fit()  # both groups follow the schedule
    assert groups[1]["lr"] / groups[0]["lr"] == pytest.approx(0.2)
