"""Shared layers: the factored 3×3 convolution of resized maps."""

from __future__ import annotations

import contextlib

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
        assert calls == [(3 * 32, 8)] * 3  # folded: 9·32 outputs (three kernel rows) from the 8 channels
        calls.clear()
        conv3x3_of_resized(nn.Conv2d(8, 32, 3, padding=1), [(torch.randn(1, 32, 16, 16), nn.Conv2d(32, 8, 1))], (32, 32))
        assert calls == [(8, 32)] + [(3 * 32, 8)] * 3  # a narrowing reduction: reduced first


def test_conv3x3_of_resized_refuses_other_convolutions():
    x = torch.randn(1, 4, 4, 4)
    for conv in (nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1, groups=2)):
        with pytest.raises(ValueError, match="conv3x3_of_resized"):
            conv3x3_of_resized(conv, [(x, None)], (8, 8))
    with pytest.raises(ValueError, match="reduce"):
        conv3x3_of_resized(nn.Conv2d(4, 4, 3, padding=1), [(x, nn.Conv2d(4, 4, 3, padding=1))], (8, 8))


def test_conv3x3_of_resized_works_one_kernel_row_at_a_time_and_keeps_no_large_activation(monkeypatch):
    """A fine input (9 taps at a quarter of the output's pixels: 2.25× the output) is computed one kernel row at a
    time, so no intermediate holds all nine taps; the backward pass keeps the input once (as tokens), the weights
    and expanded resize matrices, nothing at the output's resolution."""
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
    assert calls == [3 * 12] * 3  # three kernel rows of three taps
    activations = [t for t in saved if t.dim() == 2 and t.shape[-1] == 12 and t.shape[0] == 2 * 8 * 8]
    assert len({t.untyped_storage().data_ptr() for t in activations}) == 1  # the input's tokens, once
    assert max(t.untyped_storage().nbytes() for t in saved) <= x.untyped_storage().nbytes() < out.untyped_storage().nbytes()
    assert torch.allclose(out, dense(conv, [(x, None)], (16, 16)), atol=1e-12)


@pytest.mark.parametrize(("mid", "out", "composed"), [(16, 3, True), (16, 40, False)])
def test_conv_pointwise_runs_narrowing_pairs_as_one_composed_convolution(mid, out, composed):
    """MTAN's head (3×3 then 1×1, nothing between): where the 1×1 narrows, one convolution with the composed
    weights runs (the children's forward is not called); the values and every gradient equal the pair's; the
    state dict is the Sequential's; inside ``as_written`` the pair runs as written."""
    from scenemtl.models.layers import ConvPointwise, as_written

    torch.manual_seed(2)
    head = ConvPointwise(nn.Conv2d(8, mid, 3, padding=1), nn.Conv2d(mid, out, 1)).double()
    assert list(head.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    calls = []
    head[0].register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(2, 8, 9, 11, dtype=torch.float64, requires_grad=True)
    results = []
    for written in (True, False):
        head.zero_grad()
        x.grad = None
        calls.clear()
        with as_written() if written else contextlib.nullcontext():
            y = head(x)
        assert bool(calls) == (written or not composed)
        (y * torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view(y.shape)).sum().backward()
        results.append([y.detach(), x.grad.clone(), *(p.grad.clone() for p in head.parameters())])
    for ours, theirs in zip(results[1], results[0]):
        assert torch.allclose(ours, theirs, atol=1e-11)
    with pytest.raises(ValueError, match="1×1"):
        ConvPointwise(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3))


# --- Winograd F(2×2, 3×3) and F(4×4, 3×3) ------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (1, 3, 4, 4), (2, 4, 1, 6), (1, 2, 3, 1), (1, 3, 13, 10)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_is_the_convolution_forward_and_backward_in_float64(shape, bias, tile):
    """Both tiles; sizes that are and are not multiples of the tile, one-pixel maps: output and the three gradients
    equal ``F.conv2d``'s to 1e-12."""
    from scenemtl.models.layers.winograd import winograd_conv3x3

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(6, shape[1], 3, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=generator, requires_grad=True) if bias else None
    grad = torch.randn(shape[0], 6, *shape[2:], dtype=torch.float64, generator=generator)
    inputs = (x, weight) + ((b,) if bias else ())
    expected = torch.nn.functional.conv2d(x, weight, b, padding=1)
    got = winograd_conv3x3(x, weight, b, tile=tile)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    for g, e in zip(torch.autograd.grad(got, inputs, grad), torch.autograd.grad(expected, inputs, grad)):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("tile", "bound", "times_direct", "floor"), [(2, 1e-5, 4, 1e-6), (4, 2e-5, 24, 1e-5)])
def test_winograd_in_float32_is_about_as_close_to_the_exact_convolution_as_the_direct_one(tile, bound, times_direct, floor):
    """Against the float64 convolution, Winograd's float32 output and gradients are within ``bound`` of the largest
    value and within ``times_direct`` × the direct float32 convolution's error or ``floor``: F(2×2) 1e-5, 4× or 1e-6;
    F(4×4), whose transforms multiply by 5 and divide by 24, 2e-5, 24× or 1e-5 (here 4–7e-6 against the direct
    convolution's 3e-7–1.3e-6; the module docstring's figures)."""
    from scenemtl.models.layers.winograd import winograd_conv3x3

    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 64, 20, 22, generator=generator)
    weight = torch.randn(48, 64, 3, 3, generator=generator) / 24
    b = torch.randn(48, generator=generator)
    grad = torch.randn(2, 48, 20, 22, generator=generator)

    def run(function, dtype):
        inputs = [t.to(dtype).requires_grad_() for t in (x, weight, b)]
        out = function(*inputs)
        return [out.detach().double(), *(g.double() for g in torch.autograd.grad(out, inputs, grad.to(dtype)))]

    exact = run(lambda *a: torch.nn.functional.conv2d(*a, padding=1), torch.float64)
    direct = run(lambda *a: torch.nn.functional.conv2d(*a, padding=1), torch.float32)
    winograd = run(lambda *a: winograd_conv3x3(*a, tile=tile), torch.float32)
    for e, d, w in zip(exact, direct, winograd):
        scale = e.abs().max()
        error, direct_error = ((w - e).abs().max() / scale).item(), ((d - e).abs().max() / scale).item()
        assert error < bound and error <= max(times_direct * direct_error, floor), (error, direct_error)


@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_backward_under_vmap_takes_the_direct_rule(tile):
    """torchjd's Jacobians run the backward vmapped (``is_grads_batched``): the same rows as the direct convolution."""
    from scenemtl.models.layers.winograd import winograd_conv3x3

    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 6, 5, generator=generator, requires_grad=True)
    weight = torch.randn(5, 4, 3, 3, generator=generator, requires_grad=True)
    b = torch.randn(5, generator=generator, requires_grad=True)
    rows = torch.randn(3, 2, 5, 6, 5, generator=generator)
    expected = torch.autograd.grad(torch.nn.functional.conv2d(x, weight, b, padding=1), (x, weight, b), rows, is_grads_batched=True)
    got = torch.autograd.grad(winograd_conv3x3(x, weight, b, tile=tile), (x, weight, b), rows, is_grads_batched=True)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_conv3x3_takes_winograd_only_where_it_applies(monkeypatch):
    """``conv_norm_act``'s 3×3 stride-1 convolutions are ``Conv3x3``: wide ones run Winograd in float32 on a CPU, F(4×4)
    on maps of ``MIN_PIXELS_TILE4`` pixels and F(2×2) on smaller ones (F(2×2) only with ``MAX_TILE = 2``), and as
    written on maps too small to pay, in float64, channels-last, inside ``as_written``; narrow ones always as written.
    Same state dict as ``nn.Conv2d``."""
    from scenemtl.models.layers import as_written, conv_norm_act
    from scenemtl.models.layers import winograd

    tiles = []
    original = winograd._Winograd.apply
    monkeypatch.setattr(winograd._Winograd, "apply", lambda *a: tiles.append(a[-1]) or original(*a))
    wide, narrow = conv_norm_act(128, 128, 3, bias=True)[0], conv_norm_act(64, 128, 3)[0]
    assert isinstance(wide, winograd.Conv3x3) and isinstance(wide, nn.Conv2d) and wide.winograd and not narrow.winograd
    assert type(conv_norm_act(8, 8, 3, stride=2)[0]) is nn.Conv2d and type(conv_norm_act(8, 8, 1)[0]) is nn.Conv2d
    reference = nn.Conv2d(128, 128, 3, padding=1)
    reference.load_state_dict(wide.state_dict())
    x = torch.randn(1, 128, 48, 48)  # a map on which F(4×4) pays
    torch.testing.assert_close(wide(x), reference(x), rtol=1e-4, atol=1e-4)
    small = torch.randn(1, 128, 24, 24)  # F(2×2): 576 pixels
    torch.testing.assert_close(wide(small), reference(small), rtol=1e-5, atol=1e-5)
    assert tiles == [4, 2]
    wide(torch.randn(1, 128, 6, 7))  # too small a map to pay
    wide.double()(x.double())
    wide.float()
    wide(x.contiguous(memory_format=torch.channels_last))
    with as_written():
        wide(x)
    narrow(torch.randn(1, 64, 5, 5))
    assert tiles == [4, 2]
    monkeypatch.setattr(winograd, "MAX_TILE", 2)
    wide(x)
    monkeypatch.setattr(winograd, "MAX_TILE", 0)
    wide(x)
    assert tiles == [4, 2, 2]


def test_set_max_tile_sets_every_conv3x3_and_names_the_setting():
    from scenemtl.models.layers import conv_norm_act
    from scenemtl.models.layers.winograd import Conv3x3, set_max_tile

    model = nn.Sequential(conv_norm_act(128, 128, 3), nn.Sequential(conv_norm_act(256, 256, 3)))
    assert set_max_tile(model, "off") is model
    assert [m.max_tile for m in model.modules() if isinstance(m, Conv3x3)] == [0, 0]
    set_max_tile(model, 2)
    assert [m.max_tile for m in model.modules() if isinstance(m, Conv3x3)] == [2, 2]
    with pytest.raises(ValueError, match="train.winograd: f4, f2 or off"):
        set_max_tile(model, "f3")
    with pytest.raises(ValueError, match="4, 2 or 0"):
        set_max_tile(model, 3)


def test_the_winograd_rule_follows_the_measured_table():
    """``tile_for`` on rows of ``benchmarks/results/winograd_speed_cpu.md``: the direct convolution where neither tile
    was faster, F(2×2) where it beat F(4×4), F(4×4) where that was fastest."""
    from scenemtl.models.layers.winograd import pays, tile_for

    assert tile_for(64, 64, 288 * 384) == 0 and tile_for(64, 128, 288 * 384) == 0  # 0.78–1.04×
    assert tile_for(128, 128, 144 * 192) == 4 and tile_for(256, 512, 72 * 96) == 4 and tile_for(512, 512, 32 * 32) == 4
    assert tile_for(512, 512, 18 * 24) == 2 and tile_for(256, 256, 16 * 16) == 2  # F(2×2) 1.53× / 1.09×, F(4×4) 1.14× / 0.79×
    assert tile_for(128, 128, 16 * 16) == 0 and tile_for(512, 512, 8 * 8) == 0  # F(2×2) 0.83× / 0.89×
    assert tile_for(256, 256, 72 * 96, max_tile=2) == 2 and tile_for(256, 256, 72 * 96, max_tile=0) == 0
    assert pays(128, 128) and not pays(64, 128)
    with pytest.raises(ValueError, match="tile 2 or 4"):
        from scenemtl.models.layers.winograd import winograd_conv3x3

        winograd_conv3x3(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 3), tile=3)
