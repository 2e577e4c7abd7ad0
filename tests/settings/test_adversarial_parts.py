"""The ADVENT-style DA parts: maps, discriminator (spectral norm, batch flip, legacy state), losses, poly LR."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from scenemtl.settings.adversarial_parts import (
    BatchHorizontalFlip,
    Discriminator,
    convert_legacy_spectral_norm_state,
    da_input,
    depth_map,
    discriminator_loss,
    entropy_map,
    frozen,
    generator_adversarial_loss,
    min_entropy_loss,
    poly_lr,
)


def advent_fc(num_classes: int, ndf: int = 64) -> nn.Sequential:
    """ADVENT's get_fc_discriminator structure, rebuilt from plain convolutions."""
    w = [num_classes, ndf, ndf * 2, ndf * 4, ndf * 8, 1]
    layers: list[nn.Module] = []
    for i in range(5):
        layers += [nn.Conv2d(w[i], w[i + 1], 4, 2, 1), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers[:-1])


class _LegacySpectralConv(nn.Module):
    """DenseMTL's SpectralConv2d wrapper around the old spectral-norm hook."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.f = torch.nn.utils.spectral_norm(nn.Conv2d(cin, cout, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


def test_entropy_uniform_and_one_hot() -> None:
    c = 7
    e = entropy_map(torch.zeros(2, c, 3, 4))
    assert torch.allclose(e, torch.full_like(e, 1 / c), atol=1e-6)
    assert torch.allclose(e.sum(1), torch.ones(2, 3, 4), atol=1e-6)
    assert min_entropy_loss(torch.zeros(2, c, 3, 4)).item() == pytest.approx(1.0, abs=1e-6)
    one_hot = torch.nn.functional.one_hot(torch.randint(0, c, (2, 3, 4)), c).permute(0, 3, 1, 2).float() * 50
    assert entropy_map(one_hot).sum(1).max().item() < 1e-15
    assert min_entropy_loss(one_hot).item() < 1e-15
    # ADVENT's entropy_loss normalisation: -sum(p log2 p) / (N H W log2 C)
    logits = torch.randn(2, c, 3, 4)
    p = logits.softmax(1)
    ref = -(p * torch.log2(p + 1e-30)).sum() / (2 * 3 * 4 * math.log2(c))
    assert torch.allclose(min_entropy_loss(logits), ref)


def test_discriminator_shape_and_parameter_counts() -> None:
    d = Discriminator(19)
    assert d(torch.randn(2, 19, 64, 128)).shape == (2, 1, 2, 4)
    for c, count in ((16, 2_778_049), (8, 2_769_857), (1, 2_762_689)):
        ours, ref = Discriminator(c), advent_fc(c)
        for i in (1, 3, 5, 7, 9):
            conv, ref_conv = ours[i], ref[i - 1]
            assert conv.parametrizations.weight.original.shape == ref_conv.weight.shape
            assert conv.bias.shape == ref_conv.bias.shape
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) == count


def test_spectral_norm_keeps_top_singular_value_near_one() -> None:
    torch.manual_seed(0)
    d = Discriminator(8, ndf=16, flip=False).train()
    x = torch.randn(1, 8, 32, 32)
    for _ in range(10):
        d(x)
    d.eval()
    with torch.no_grad():
        for i in (1, 3, 5, 7, 9):
            for w, normalised in ((d[i].weight, True), (d[i].parametrizations.weight.original, False)):
                m = w.reshape(w.shape[0], -1).double()
                sigma = torch.linalg.eigvalsh(m @ m.T).max().sqrt().item()  # largest singular value, cheaper than an SVD
                assert (abs(sigma - 1) < 0.05) == normalised


def test_batch_flip_whole_batch_and_reproducible() -> None:
    x = torch.randn(3, 2, 4, 5)
    decisions = []
    flip = BatchHorizontalFlip(generator=torch.Generator().manual_seed(123))
    for _ in range(20):
        y = flip(x)
        flipped = torch.equal(y, x.flip(-1))
        assert flipped or torch.equal(y, x)
        decisions.append(flipped)
    assert any(decisions) and not all(decisions)
    g = torch.Generator().manual_seed(123)
    assert decisions == [torch.rand(1, generator=g).item() < 0.5 for _ in range(20)]
    # same seed and weights: identical discriminator outputs call after call
    a = Discriminator(4, ndf=16, generator=torch.Generator().manual_seed(7))
    b = Discriminator(4, ndf=16, generator=torch.Generator().manual_seed(7))
    b.load_state_dict(a.state_dict())
    z = torch.randn(2, 4, 32, 64)
    for _ in range(4):
        assert torch.equal(a(z), b(z))
    # turned off: no flip and no draw
    g = torch.Generator().manual_seed(1)
    before = g.get_state()
    assert torch.equal(BatchHorizontalFlip(0.0, g)(x), x) and torch.equal(g.get_state(), before)


def test_legacy_spectral_state_loads_with_identical_outputs() -> None:
    torch.manual_seed(0)
    w = [5, 64, 128, 256, 512, 1]
    layers: list[nn.Module] = [nn.Identity()]  # DenseMTL's RandomHorizontalFlip: stateless
    for i in range(5):
        layers += [_LegacySpectralConv(w[i], w[i + 1]), nn.LeakyReLU(0.2)]
    legacy = nn.Sequential(*layers[:-1]).train()
    x = torch.randn(2, 5, 32, 64)
    for _ in range(3):
        legacy(x)  # move u, v away from their initial values
    ours = Discriminator(5, flip=False)
    ours.load_state_dict(convert_legacy_spectral_norm_state(legacy.state_dict()))
    legacy.eval()
    ours.eval()
    with torch.no_grad():
        assert torch.allclose(ours(x), legacy(x), atol=1e-6)


def test_losses_and_frozen() -> None:
    torch.manual_seed(0)
    ds = [Discriminator(3, ndf=16, flip=False), Discriminator(1, ndf=16, flip=False)]
    src = [torch.randn(1, 3, 32, 32, requires_grad=True), torch.randn(1, 1, 32, 32, requires_grad=True)]
    tgt = [torch.randn(1, 3, 32, 32, requires_grad=True), torch.randn(1, 1, 32, 32, requires_grad=True)]
    with frozen(ds):
        g = generator_adversarial_loss(ds, tgt, lambda_adv=0.005)
        g.backward()
    assert all(p.grad is None and p.requires_grad for d in ds for p in d.parameters())
    assert tgt[0].grad is not None
    for d in ds:
        d.eval()
    bce = nn.BCEWithLogitsLoss()
    with torch.no_grad():
        outs = [d(t) for d, t in zip(ds, tgt)]
        ref = 0.005 * sum(bce(o, torch.zeros_like(o)) for o in outs) / 2
        assert torch.allclose(generator_adversarial_loss(ds, tgt, 0.005), ref)
    loss = discriminator_loss(ds, src, tgt)
    loss.backward()
    assert src[0].grad is None and all(p.grad is not None for d in ds for p in d.parameters())


def test_poly_lr_depth_map_da_input() -> None:
    assert poly_lr(1e-4, 0, 100) == pytest.approx(1e-4)
    assert poly_lr(1e-4, 50, 100) == pytest.approx(1e-4 * 0.5**0.9)
    assert poly_lr(1e-4, 100, 100) == 0.0
    gt = torch.rand(2, 1, 8, 8) * 80 + 1
    pred = gt.min() + torch.rand(2, 1, 8, 8) * (gt.max() - gt.min())
    m = depth_map(pred, gt.min(), gt.max())
    assert m.min() >= 0 and m.max() <= 1
    flat = depth_map(torch.full((1, 1, 2, 2), 3.0), 2.0, 2.0)
    assert torch.isfinite(flat).all() and torch.allclose(flat, torch.ones_like(flat))
    up = da_input(torch.randn(1, 4, 16, 32), (64, 128))
    assert up.shape == (1, 4, 64, 128)
