"""How a (foundation) encoder is trained: frozen, with LoRA adapters, or with layer-wise learning-rate decay.

- ``model.backbone.freeze``: the encoder's parameters get no gradient (``requires_grad`` off); the
  decoders train. Stochastic layers of the encoder (drop path) still follow the model's mode.
- ``model.backbone.lora: {rank, alpha, targets}``: LoRA (Hu et al., ICLR 2022) on the encoder's
  linear layers: ``y = W x + b + (alpha / rank) · B A x`` with ``A`` (rank × in) Kaiming-uniform and
  ``B`` (out × rank) zero, so training starts from the encoder as it is; ``W`` and ``b`` are frozen,
  ``A`` and ``B`` train (rank · (in + out) parameters per layer). ``targets``: the last name
  components of the linear layers to adapt (``qkv``, ``proj``, ``fc1``, ``fc2`` — timm's attention
  and MLP layers); default every linear layer inside the encoder's blocks. The adapted layer keeps
  ``weight`` and ``bias`` under their names, so pretrained weights and checkpoints keep their keys.
  Written here rather than with ``peft``, whose model wrapping would rename every key.
- ``train.layer_decay``: the learning rate of an encoder parameter in layer group ``i`` (timm's
  ``group_matcher``: the stem 0, block k k + 1) is the base rate × ``decay ** (L − i)`` with ``L``
  the last group, as timm's ``param_groups_layer_decay`` (BEiT, MAE); the decoders keep the base rate.

The encoder of an architecture is its ``backbone``'s timm network (``encoders``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scenemtl.errors import ConfigError


class LoRALinear(nn.Linear):
    """A frozen ``nn.Linear`` plus a trainable low-rank update (see the module docstring)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rank, self.scaling = rank, alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device, dtype=base.weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device, dtype=base.weight.dtype))
        if self.lora_a.device.type != "meta":
            nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scaling

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scaling={self.scaling:g}"


def encoders(model: nn.Module) -> list[nn.Module]:
    """The timm encoder networks of an architecture: its ``backbone``'s (``Backbone.body``'s model,
    ``ViTBackbone.vit``), or those of the networks it holds (``stl``)."""
    from scenemtl.models.backbones.features import Backbone
    from scenemtl.models.backbones.vit import ViTBackbone

    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, ViTBackbone):
        return [backbone.vit]
    if isinstance(backbone, Backbone):
        return [getattr(backbone.body, "model", backbone.body)]
    if isinstance(backbone, nn.Module):
        return [backbone]
    found: list[nn.Module] = []
    for child in model.children():
        if isinstance(child, nn.ModuleDict):
            for network in child.values():
                found += encoders(network)
    return found


def add_lora(encoder: nn.Module, rank: int, alpha: float, targets: Sequence[str] | None = None) -> int:
    """Replace the encoder's target linear layers by ``LoRALinear``; freeze everything else of the encoder.
    Returns the number of layers adapted (a ConfigError when none matches)."""
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    chosen = []
    for name, module in encoder.named_modules():
        if type(module) is not nn.Linear:
            continue
        last = name.rsplit(".", 1)[-1]
        inside_blocks = ".blocks." in f".{name}" or name.startswith(("blocks.", "layers.", "stages."))
        if (targets is None and inside_blocks) or (targets is not None and last in targets):
            chosen.append(name)
    if not chosen:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in encoder.named_modules() if type(m) is nn.Linear})
        raise ConfigError(f"model.backbone.lora.targets {list(targets or [])} match no linear layer of the encoder; it has {names}")
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = encoder.get_submodule(parent_name) if parent_name else encoder
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha))
    return len(chosen)


def configure_encoders(model: nn.Module, freeze: bool, lora: object | None) -> None:
    """Apply ``model.backbone.freeze`` and ``model.backbone.lora`` to every encoder of ``model``."""
    found = encoders(model)
    if (freeze or lora is not None) and not found:
        raise ConfigError("model.backbone.freeze / lora: this architecture has no timm encoder to freeze or adapt")
    for encoder in found:
        if lora is not None:
            add_lora(encoder, int(getattr(lora, "rank")), float(getattr(lora, "alpha")), getattr(lora, "targets"))
        elif freeze:
            for parameter in encoder.parameters():
                parameter.requires_grad_(False)


def layer_decay_scales(model: nn.Module, decay: float) -> dict[int, float]:
    """``{id(parameter): learning-rate scale}`` of every encoder parameter under layer-wise decay (module docstring)."""
    from timm.models import group_parameters

    scales: dict[int, float] = {}
    for encoder in encoders(model):
        matcher = getattr(encoder, "group_matcher", None)
        if matcher is None:
            raise ConfigError(
                f"train.layer_decay needs an encoder whose layers timm can group; {type(encoder).__name__} has no group_matcher"
            )
        groups = group_parameters(encoder, matcher(coarse=False))
        last = max(groups)
        named = dict(encoder.named_parameters())
        for index, names in groups.items():
            for name in names:
                if name in named:
                    scales[id(named[name])] = decay ** (last - index)
    return scales
