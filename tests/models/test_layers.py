"""Shared layers: the factored 3×3 convolution of resized maps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scenemtl.models.layers import conv3x3_of_resized, resize


def dense(conv, inputs, size):
    return conv(sum(resize(x if reduce is None else reduce(x), size) for x, reduce in inputs))


@pytest.mark.parametrize(
    ("shapes", "size", "bias"),
    [
        ([(6, 4, 4), (3, 8, 8), (2, 16, 16)], (32, 32), True),  # InvPT's pyramid, ×8, ×4, ×2
        ([(5, 5, 7), (4, 13, 17)], (13, 17), False),  # odd ratios, and an input already at the size
        ([(5, 1, 3)], (6, 9), True),  # a single row
        ([(2, 9, 6), (5, 3, 2)], (4, 5), True),  # downsampling too
    ],
)
def test_conv3x3_of_resized_is_the_convolution_of_the_resized_sum(shapes, size, bias):
    """Values and every gradient (inputs, convolution, reductions) equal the dense computation in float64, for
    reductions folded into the taps (small channel counts) and applied first (large maps), with and without biases."""
    torch.manual_seed(0)
    channels = shapes[0][0]
    conv = nn.Conv2d(channels, 7, 3, padding=1, bias=bias).double()
    inputs = []
    for i, (c, h, w) in enumerate(shapes):
        reduce = None if i == 0 else nn.Conv2d(c, channels, 1, bias=i % 2 == 1).double()
        inputs.append((torch.randn(3, c, h, w, dtype=torch.float64, requires_grad=True), reduce))
    results = []
    for function in (dense, conv3x3_of_resized):
        for module in [conv, *(r for _, r in inputs if r is not None)]:
            module.zero_grad()
        for x, _ in inputs:
            x.grad = None
        out = function(conv, inputs, size)
        assert out.shape == (3, 7, *size)
        (out * torch.linspace(-1, 2, out.numel(), dtype=torch.float64).view(out.shape)).sum().backward()
        grads = [conv.weight.grad.clone(), *(x.grad.clone() for x, _ in inputs)]
        grads += [p.grad.clone() for _, r in inputs if r is not None for p in r.parameters()]
        results.append((out.detach(), grads))
    assert torch.allclose(results[1][0], results[0][0], atol=1e-12)
    for ours, theirs in zip(results[1][1], results[0][1]):
        assert torch.allclose(ours, theirs, atol=1e-10)


def test_conv3x3_of_resized_folds_a_reduction_only_where_it_is_cheaper(monkeypatch):
    """A widening reduction is folded into the taps (one product at the map's resolution); a narrowing one runs
    first. Both give the dense result (above); here, which one runs."""
    import scenemtl.models.layers.conv as conv_module

    calls = []
    linear = conv_module.F.linear
    monkeypatch.setattr(conv_module.F, "linear", lambda x, w, b=None: calls.append(tuple(w.shape)) or linear(x, w, b))
    conv = nn.Conv2d(32, 32, 3, padding=1)
    reduce = nn.Conv2d(8, 32, 1)
    with torch.no_grad():
        conv3x3_of_resized(conv, [(torch.randn(1, 8, 4, 4), reduce)], (16, 16))
        assert calls == [(9 * 32, 8)]  # folded: 9·32 outputs from the 8 channels, in one group
        calls.clear()
        conv3x3_of_resized(nn.Conv2d(8, 32, 3, padding=1), [(torch.randn(1, 32, 16, 16), nn.Conv2d(32, 8, 1))], (32, 32))
        # a narrowing reduction: reduced first, then the taps (in groups of output channels) from the 8 channels
        assert calls[0] == (8, 32) and {c[1] for c in calls[1:]} == {8} and sum(c[0] for c in calls[1:]) == 9 * 32


def test_conv3x3_of_resized_refuses_other_convolutions():
    x = torch.randn(1, 4, 4, 4)
    for conv in (nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1, groups=2)):
        with pytest.raises(ValueError, match="conv3x3_of_resized"):
            conv3x3_of_resized(conv, [(x, None)], (8, 8))
    with pytest.raises(ValueError, match="reduce"):
        conv3x3_of_resized(nn.Conv2d(4, 4, 3, padding=1), [(x, nn.Conv2d(4, 4, 3, padding=1))], (8, 8))


def test_conv3x3_of_resized_computes_output_channels_in_groups_and_keeps_no_large_activation(monkeypatch):
    """A fine input (9 taps at a quarter of the output's pixels: 2.25× the output) is computed in groups of output
    channels, so no intermediate is much larger than the output; the backward pass keeps the input once (as
    tokens), the weights and expanded resize matrices, nothing at the output's resolution."""
    import scenemtl.models.layers.conv as conv_module

    torch.manual_seed(1)
    conv = nn.Conv2d(12, 12, 3, padding=1).double()
    x = torch.randn(2, 12, 8, 8, dtype=torch.float64, requires_grad=True)
    calls = []
    linear = conv_module.F.linear
    monkeypatch.setattr(conv_module.F, "linear", lambda a, w, b=None: calls.append(w.shape[0]) or linear(a, w, b))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = conv3x3_of_resized(conv, [(x, None)], (16, 16))
    assert calls == [9 * 4] * 3  # three groups of four output channels
    activations = [t for t in saved if t.dim() == 2 and t.shape[-1] == 12 and t.shape[0] == 2 * 8 * 8]
    assert len({t.untyped_storage().data_ptr() for t in activations}) == 1  # the input's tokens, once
    assert max(t.untyped_storage().nbytes() for t in saved) <= x.untyped_storage().nbytes() < out.untyped_storage().nbytes()
    assert torch.allclose(out, dense(conv, [(x, None)], (16, 16)), atol=1e-12)
