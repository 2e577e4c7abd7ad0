"""Throughput and memory options: fp16 with a gradient scaler, accumulation, channels-last, checkpointing."""

import pytest
import timm
import torch

from scenemtl.engine import checkpoint as ckpt
from scenemtl.engine.distributed import DistInfo
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import ConfigError
from scenemtl.models.backbones.factory import _version


def test_fp16_uses_a_gradient_scaler_that_is_checkpointed(tiny_config):
    trainer = Trainer(tiny_config("train.precision=fp16", "train.steps=2", "train.grad_clip=1.0"), progress=False)
    assert trainer.scaler.is_enabled()
    seen = []
    conv = next(m for m in trainer.model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype) and None)
    trainer.fit()
    assert seen and seen[0] == torch.float16  # autocast really ran in half precision
    state = ckpt.load_trainer_state(ckpt.list_checkpoints(trainer.checkpoint_dir)[-1])
    assert state["scaler"]["scale"] > 0
    resumed = Trainer(tiny_config("train.precision=fp16", "train.steps=3", "train.grad_clip=1.0"), resume=True, progress=False)
    assert resumed.scaler.get_scale() == trainer.scaler.get_scale()


def grads(trainer: Trainer, batches: list) -> dict:
    trainer.optimizer.step = lambda *a, **k: None  # keep the gradients for inspection
    trainer.optimizer.zero_grad = lambda *a, **k: None
    trainer.scheduler.step = lambda *a, **k: None
    trainer.train_step(batches)
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.skipif(_version(timm.__version__) < (1, 0, 31), reason="activation checkpointing needs timm ≥ 1.0.31")
def test_activation_checkpointing_gives_the_same_gradients(tiny_config):
    batch = next(iter(Trainer(tiny_config("name=data"), progress=False, log=False).loader))
    plain = grads(Trainer(tiny_config("name=plain"), progress=False, log=False), [batch])
    saved = grads(Trainer(tiny_config("name=ckpt", "train.activation_checkpointing=true"), progress=False, log=False), [batch])
    assert plain.keys() == saved.keys()
    for name in plain:
        assert torch.allclose(plain[name], saved[name], atol=1e-6, rtol=1e-4), name


def test_accumulation_averages_micro_batch_gradients(tiny_config):
    loader = Trainer(tiny_config("name=data"), progress=False, log=False).loader
    iterator = iter(loader)
    first, second = next(iterator), next(iterator)
    a = grads(Trainer(tiny_config("name=a"), progress=False, log=False), [first])
    b = grads(Trainer(tiny_config("name=b"), progress=False, log=False), [second])
    both = grads(Trainer(tiny_config("name=ab", "train.accumulation=2"), progress=False, log=False), [first, second])
    for name in both:
        assert torch.allclose(both[name], (a[name] + b[name]) / 2, atol=1e-6, rtol=1e-4), name


def test_channels_last_trains_to_the_same_outputs(tiny_config):
    image = torch.randn(2, 3, 32, 48)
    plain = Trainer(tiny_config("name=plain"), progress=False, log=False)
    last = Trainer(tiny_config("name=last", "train.channels_last=true"), progress=False, log=False)
    conv_weight = next(p for p in last.model.parameters() if p.dim() == 4)
    assert conv_weight.is_contiguous(memory_format=torch.channels_last)
    plain.model.eval(), last.model.eval()
    with torch.no_grad():
        expected = plain.model(image).final["depth"]
        got = last.model(image.contiguous(memory_format=torch.channels_last)).final["depth"]
    assert torch.allclose(expected, got, atol=1e-4)
    assert last.train_step([next(iter(last.loader))])["loss"]


def test_sync_bn_on_cpu_is_refused_only_when_it_matters(tiny_config):
    trainer = Trainer(tiny_config("train.sync_bn=true"), progress=False, log=False)  # one process: nothing to sync
    trainer.dist = DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))  # as under torchrun
    with pytest.raises(ConfigError, match="sync_bn needs CUDA"):
        trainer._build_model()


def test_evaluation_logs_prediction_pictures(tiny_config):
    trainer = Trainer(tiny_config("train.steps=1"), progress=False)
    trainer.fit()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trainer.run_dir / "tensorboard"))
    events.Reload()
    assert {"val/prediction", "val/target"} <= set(events.Tags()["images"])
    assert {"train/memory_mib", "train/lr", "train/loss/depth"} <= set(events.Tags()["scalars"])


def test_activation_checkpointing_needs_a_timm_that_supports_it(tiny_config, monkeypatch):
    monkeypatch.setattr(timm, "__version__", "1.0.29")
    with pytest.raises(ConfigError, match="timm ≥ 1.0.31"):
        Trainer(tiny_config("train.activation_checkpointing=true"), progress=False, log=False)


@pytest.mark.slow
def test_compiled_model_gives_the_eager_outputs(tiny_config):
    """``train.compile`` (TorchInductor on the CPU here): the same outputs and loss gradients as eager
    within 1e-4 (kernel fusion reorders float additions; nothing else may change)."""
    eager = Trainer(tiny_config("name=eager"), progress=False, log=False)
    compiled = Trainer(tiny_config("name=compiled", "train.compile=true"), progress=False, log=False)
    compiled.model.load_state_dict(eager.model.state_dict())
    assert isinstance(compiled.net, torch._dynamo.eval_frame.OptimizedModule)
    image = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    for trainer in (eager, compiled):
        trainer.net.eval()
    with torch.no_grad():
        want, got = eager.net(image).final, compiled.net(image).final
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-4, rtol=1e-4), name
    eager.close()
    compiled.close()


@pytest.mark.parametrize("native", [True, False])
def test_low_precision_on_a_cpu_without_native_instructions_warns(tiny_config, monkeypatch, native):
    """bf16 autocast on a CPU without AVX-512 BF16 / AMX is emulated and slower than fp32: the trainer says so."""
    import warnings

    from scenemtl.engine import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "native_cpu_precision", lambda precision: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(tiny_config("train.precision=bf16"), progress=False, log=False).close()
        Trainer(tiny_config("name=fp32"), progress=False, log=False).close()
    said = [str(w.message) for w in caught if "without native bf16" in str(w.message)]
    assert len(said) == (0 if native else 1) and all("train.precision=fp32" in s for s in said)


def test_the_native_precision_check_answers_for_every_precision():
    from scenemtl.engine.trainer import native_cpu_precision

    assert native_cpu_precision("fp32") is True
    assert native_cpu_precision("bf16") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
