"""Output-space adversarial domain adaptation parts (ADVENT-style), as DenseMTL's DA setting uses them.

Sources (facts only; the code here is written anew):

- ``astra-vision/DenseMTL:models/discriminator.py``: the discriminator is a ``RandomHorizontalFlip()`` of the whole
  batch (p=0.5, one draw per call, in train and eval mode alike) followed by five spectral-norm 4x4 stride-2 padding-1
  convolutions ``in -> ndf -> 2ndf -> 4ndf -> 8ndf -> 1`` (``ndf=64``) with LeakyReLU(0.2) between them.
- ``astra-vision/DenseMTL:vendor/advent/discriminator.py`` (``get_fc_discriminator``): the same convolutions without
  spectral norm, so both have the same parameters (the spectral-norm vectors ``u``/``v`` are buffers).
- ``astra-vision/DenseMTL:vendor/advent/func.py``: ``prob_2_entropy`` (``-p log2(p + 1e-30) / log2(C)``, divisor 1
  for a single channel), ``bce_loss`` (BCE-with-logits against a constant label) and ``lr_poly``.
- ``astra-vision/DenseMTL:training/da_train.py``: source label 0, target label 1; each prediction is upsampled
  bilinearly (``align_corners=True``) to the crop size (512x1024) before its map (``epsilon_map``: entropy for
  semseg, ``(relu(d) - min) / (max - min)`` with the min/max of the whole source ``gt_depth`` tensor for depth,
  unit-normalised normals); the generator term is ``lambda_adv_ent`` x BCE(D(target), 0) averaged over the
  (task, scale) discriminators; the discriminators are trained on detached maps with the mean of BCE(D(source), 0)
  and, in a second backward, the mean of BCE(D(target), 1); only the discriminators' Adam follows ``lr_poly``.
- ``valeoai/ADVENT:advent/utils/loss.py`` (``entropy_loss``, not in the vendored ``func.py``): MinEnt is
  ``-sum(p log2(p + 1e-30)) / (N H W log2(C))``.

Differences, and why:

- Spectral norm uses ``torch.nn.utils.parametrizations.spectral_norm`` (the maintained API). DenseMTL uses the older
  ``torch.nn.utils.spectral_norm`` hook, whose state-dict keys are ``weight_orig``/``weight_u``/``weight_v`` inside a
  ``SpectralConv2d`` wrapper (attribute ``f``); :func:`convert_legacy_spectral_norm_state` maps such a state onto
  this module (conv indices 1, 3, 5, 7, 9 match DenseMTL's ``nn.Sequential`` layout). The forward (one power
  iteration per training call, stored ``u``/``v`` in eval) is the same.
- The flip's draw comes from an injectable ``torch.Generator`` (the caller checkpoints its state, so a resumed run
  flips exactly as the uninterrupted one) instead of the global RNG, and can be turned off (``flip=False``).
- :func:`depth_map` divides by 1 when the source max equals the min (DenseMTL would divide by zero).
- :func:`poly_lr` clamps ``1 - step/total`` at 0, so a step past ``total`` gives 0 rather than a complex number.
- :func:`discriminator_loss` sums the source and target means into one loss: DenseMTL backpropagates them
  separately before one optimizer step, which accumulates the same gradient. The unused ``lambda_disc_ent`` of
  DenseMTL's configs has no counterpart.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "SOURCE_LABEL",
    "TARGET_LABEL",
    "BatchHorizontalFlip",
    "Discriminator",
    "bce_with_label",
    "convert_legacy_spectral_norm_state",
    "da_input",
    "depth_map",
    "discriminator_loss",
    "entropy_map",
    "frozen",
    "generator_adversarial_loss",
    "min_entropy_loss",
    "normals_map",
    "poly_lr",
]

SOURCE_LABEL = 0.0
TARGET_LABEL = 1.0


class BatchHorizontalFlip(nn.Module):
    """Flips the whole batch along its width with probability ``p``: one draw per call, from ``generator`` (the
    global CPU RNG when None). ``p=0`` disables it and draws nothing. Applied in train and eval mode, as DenseMTL."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.p = p
        self.generator = generator

    def draw(self) -> bool:
        """Consumes one draw and says whether this call flips."""
        device = self.generator.device if self.generator is not None else torch.device("cpu")
        return bool(torch.rand(1, generator=self.generator, device=device).item() < self.p)

    def forward(self, x: Tensor) -> Tensor:
        if self.p <= 0:
            return x
        return x.flip(-1) if self.draw() else x


class Discriminator(nn.Sequential):
    """DenseMTL's output-space discriminator: a batch flip (index 0), then five spectral-norm 4x4 stride-2 convolutions
    (indices 1, 3, 5, 7, 9) with LeakyReLU(0.2) between them; ``[B, in, H, W] -> [B, out, H/32, W/32]`` logits."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 1,
        ndf: int = 64,
        *,
        flip: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        widths = [in_channels, ndf, ndf * 2, ndf * 4, ndf * 8, out_channels]
        layers: list[nn.Module] = [BatchHorizontalFlip(0.5 if flip else 0.0, generator)]
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            if i:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
            layers.append(spectral_norm(nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1)))
        super().__init__(*layers)


_LEGACY_SUFFIXES = {
    "weight_orig": "parametrizations.weight.original",
    "weight_u": "parametrizations.weight.0._u",
    "weight_v": "parametrizations.weight.0._v",
}


def convert_legacy_spectral_norm_state(state: Mapping[str, Tensor], wrapper: str | None = "f") -> dict[str, Tensor]:
    """Maps a state dict of the old ``torch.nn.utils.spectral_norm`` hook onto the parametrization keys, dropping the
    ``wrapper`` attribute of DenseMTL's ``SpectralConv2d`` (``1.f.weight_orig -> 1.parametrizations.weight.original``);
    a DenseMTL discriminator state then loads into :class:`Discriminator` strictly."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if wrapper is not None and len(parts) > 1 and parts[-2] == wrapper:
            del parts[-2]
        parts[-1] = _LEGACY_SUFFIXES.get(parts[-1], parts[-1])
        out[".".join(parts)] = value
    return out


def entropy_map(logits: Tensor) -> Tensor:
    """ADVENT's weighted self-information ``-p log2(p + 1e-30) / log2(C)`` of ``softmax(logits)``, ``[B, C, H, W]``;
    its channel sum is the normalised entropy in [0, 1]. The divisor is 1 for a single channel (as ``prob_2_entropy``)."""
    c = logits.shape[1]
    p = logits.softmax(1)
    return -p * torch.log2(p + 1e-30) / (math.log2(c) if c > 1 else 1.0)


def min_entropy_loss(logits: Tensor) -> Tensor:
    """ADVENT's MinEnt ``entropy_loss``: the normalised entropy summed over channels, averaged over ``B x H x W``."""
    return entropy_map(logits).sum(1).mean()


def depth_map(pred: Tensor, source_min: Tensor | float, source_max: Tensor | float) -> Tensor:
    """``(relu(pred) - min) / (max - min)`` with the min/max of the source batch's ground truth (DenseMTL takes them
    over the whole ``gt_depth`` tensor, unmasked). When ``max <= min`` the divisor is 1 (a shift only), not 0."""
    lo = torch.as_tensor(source_min, dtype=pred.dtype, device=pred.device)
    span = torch.as_tensor(source_max, dtype=pred.dtype, device=pred.device) - lo
    span = torch.where(span > 0, span, torch.ones_like(span))
    return (pred.relu() - lo) / span


def normals_map(pred: Tensor) -> Tensor:
    """Unit-normalised normals over the channel dimension (DenseMTL's ``epsilon_map`` for ``normals``)."""
    return F.normalize(pred, dim=-3)


def da_input(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling (``align_corners=True``) to the crop size, 512x1024 in DenseMTL, before the maps."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def bce_with_label(d_out: Tensor, label: float) -> Tensor:
    """BCE-with-logits of discriminator outputs against a constant label (mean over all elements)."""
    return F.binary_cross_entropy_with_logits(d_out, torch.full_like(d_out, label))


@contextmanager
def frozen(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Stops gradients reaching the discriminators' parameters for the generator step (DenseMTL's
    ``discr_require_grad_(False)``), restoring each parameter's flag afterwards."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def generator_adversarial_loss(discriminators: Sequence[nn.Module], target_maps: Sequence[Tensor], lambda_adv: float) -> Tensor:
    """``lambda_adv`` x mean over the (task, scale) discriminators of BCE(D(target map), source label): the term
    that pushes target predictions to look like source ones. Run it inside :func:`frozen` so only the network learns."""
    if len(discriminators) != len(target_maps) or not discriminators:
        raise ValueError("need one target map per discriminator, and at least one")
    terms = [bce_with_label(d(m), SOURCE_LABEL) for d, m in zip(discriminators, target_maps)]
    return lambda_adv * torch.stack(terms).mean()


def discriminator_loss(discriminators: Sequence[nn.Module], source_maps: Sequence[Tensor], target_maps: Sequence[Tensor]) -> Tensor:
    """Mean over discriminators of BCE(D(source.detach()), 0) plus the mean of BCE(D(target.detach()), 1). DenseMTL
    backpropagates the two means separately before one step; their sum accumulates the same gradient."""
    if not (len(discriminators) == len(source_maps) == len(target_maps)) or not discriminators:
        raise ValueError("need one source and one target map per discriminator, and at least one")
    src = [bce_with_label(d(m.detach()), SOURCE_LABEL) for d, m in zip(discriminators, source_maps)]
    tgt = [bce_with_label(d(m.detach()), TARGET_LABEL) for d, m in zip(discriminators, target_maps)]
    return torch.stack(src).mean() + torch.stack(tgt).mean()


def poly_lr(base: float, step: int, total: int, power: float = 0.9) -> float:
    """ADVENT's ``lr_poly``: ``base * (1 - step/total) ** power`` (DenseMTL: the discriminators' Adam only), clamped
    at 0 past ``total``."""
    return base * max(0.0, 1.0 - step / total) ** power
