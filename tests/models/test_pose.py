"""The monodepth2 / DenseMTL pose network: structure and weights as monodepth2's, rigid-transform conventions."""

import math

import pytest
import torch
import torchvision
from torch import nn

from scenemtl.errors import CheckpointError
from scenemtl.models.pose import PoseNet, to_monodepth2, transformation_from_parameters


def count(module):
    return sum(p.numel() for p in module.parameters())


def reference():
    """monodepth2's pose encoder and decoder rebuilt from torchvision and torch.nn (independent of PoseNet)."""
    encoder = torchvision.models.resnet18(weights=None)
    encoder.conv1 = nn.Conv2d(6, 64, 7, stride=2, padding=3, bias=False)
    del encoder.fc
    decoder = nn.ModuleList([nn.Conv2d(512, 256, 1), nn.Conv2d(256, 256, 3, 1, 1), nn.Conv2d(256, 256, 3, 1, 1), nn.Conv2d(256, 12, 1)])
    return encoder, decoder


def reference_forward(encoder, decoder, pair):
    x = (pair - 0.45) / 0.225
    x = encoder.maxpool(encoder.relu(encoder.bn1(encoder.conv1(x))))
    x = encoder.layer4(encoder.layer3(encoder.layer2(encoder.layer1(x))))
    for i, conv in enumerate(decoder):
        x = conv(x) if i == 3 else torch.relu(conv(x))
    x = 0.01 * x.mean(3).mean(2).view(-1, 2, 1, 6)
    return x[..., :3], x[..., 3:]


def monodepth2_states(encoder, decoder):
    """State dicts as monodepth2 saves them: ``encoder.<torchvision key>`` (with the unused fc) and ``net.i.*``."""
    enc = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    enc["encoder.fc.weight"], enc["encoder.fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    return enc, {f"net.{k}": v for k, v in decoder.state_dict().items()}


def randomised(*modules):
    """Non-trivial batch-norm statistics and affine parameters (the convolutions are already random), eval mode."""
    torch.manual_seed(1)
    for module in modules:
        for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.1), bn.running_var.uniform_(0.5, 1.5)
            bn.weight.data.uniform_(0.5, 1.5), bn.bias.data.normal_(0, 0.1)
        module.eval()


def skew(v):
    x, y, z = v
    return torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], dtype=torch.float64)


def test_parameter_count_and_keys_match_monodepth2():
    encoder, decoder = reference()
    net = PoseNet()
    encoder_count, decoder_count = count(encoder), count(decoder)
    print(f"pose encoder {encoder_count:,}, decoder {decoder_count:,}, total {count(net):,}")
    assert encoder_count == 11_185_920
    assert decoder_count == 512 * 256 + 256 + 2 * (256 * 256 * 9 + 256) + 256 * 12 + 12 == 1_314_572
    assert count(net) == encoder_count + decoder_count == 12_500_492
    enc, dec = monodepth2_states(encoder, decoder)
    expected = {("encoder", k): tuple(v.shape) for k, v in enc.items() if not k.startswith("encoder.fc.")}
    expected.update({("decoder", k): tuple(v.shape) for k, v in dec.items()})
    assert {to_monodepth2(k): tuple(v.shape) for k, v in net.state_dict().items()} == expected


def test_load_monodepth2_gives_the_reference_outputs():
    encoder, decoder = reference()
    randomised(encoder, decoder)
    net = PoseNet()
    net.load_monodepth2(*monodepth2_states(encoder, decoder))
    net.eval()
    torch.manual_seed(2)
    source, target = torch.rand(2, 3, 32, 64), torch.rand(2, 3, 32, 64)
    with torch.no_grad():
        for offset, pair, invert in [(-1, (source, target), True), (1, (target, source), False)]:
            axisangle, translation = reference_forward(encoder, decoder, torch.cat(pair, 1))
            ours = net.predict(torch.cat(pair, 1))
            torch.testing.assert_close(ours[0], axisangle, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(ours[1], translation, rtol=1e-4, atol=1e-6)
            expected = transformation_from_parameters(axisangle[:, 0], translation[:, 0], invert=invert)
            torch.testing.assert_close(net(source, target, offset), expected, rtol=1e-4, atol=1e-6)
        # the previous frame's matrix is the inverse of the one predicted when the roles are swapped
        before, after = net(source, target, -1), net(target, source, 1)
        torch.testing.assert_close(before, torch.linalg.inv(after), rtol=1e-4, atol=1e-5)


def test_load_monodepth2_names_missing_and_unknown_keys():
    enc, dec = monodepth2_states(*reference())
    del dec["net.2.bias"]
    enc["encoder.layer5.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys: decoder:net\.2\.bias; unexpected keys: encoder:encoder\.layer5\.weight"):
        PoseNet().load_monodepth2(enc, dec)
    enc, dec = monodepth2_states(*reference())
    dec["net.3.weight"] = torch.zeros(6, 256, 1, 1)
    with pytest.raises(CheckpointError, match=r"shape mismatch: decoder:net\.3\.weight"):
        PoseNet().load_monodepth2(enc, dec)
    enc, dec = monodepth2_states(*reference())
    PoseNet().load_monodepth2({k: v for k, v in enc.items() if not k.endswith("num_batches_tracked")}, dec)  # older PyTorch


def test_imagenet_conv1_is_repeated_and_halved(tmp_path):
    torch.manual_seed(3)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    net = PoseNet(weights=str(path))
    torch.testing.assert_close(net.encoder.conv1.weight, torch.cat([state["conv1.weight"]] * 2, 1) / 2)
    torch.testing.assert_close(net.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_zero_parameters_give_identity():
    zero = torch.zeros(2, 1, 3)
    for invert in (False, True):
        torch.testing.assert_close(transformation_from_parameters(zero, zero, invert), torch.eye(4).expand(2, 4, 4))


def test_rotation_about_z_is_the_analytic_matrix():
    theta = 0.3
    c, s = math.cos(theta), math.sin(theta)
    expected = torch.tensor([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    m = transformation_from_parameters(torch.tensor([[[0.0, 0.0, theta]]], dtype=torch.float64), torch.zeros(1, 1, 3, dtype=torch.float64))
    torch.testing.assert_close(m[0], expected, rtol=0, atol=1e-6)


def test_rotation_is_orthonormal_and_is_rodrigues():
    torch.manual_seed(4)
    axisangle = torch.randn(5, 1, 3, dtype=torch.float64)
    m = transformation_from_parameters(axisangle, torch.zeros(5, 1, 3, dtype=torch.float64))
    rot = m[:, :3, :3]
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(5, 3, 3), rtol=0, atol=1e-6)
    for i in range(5):
        torch.testing.assert_close(rot[i], torch.linalg.matrix_exp(skew(axisangle[i, 0].tolist())), rtol=0, atol=1e-6)


def test_invert_gives_the_inverse_matrix():
    torch.manual_seed(5)
    axisangle, translation, zero = torch.randn(3, 1, 3) * 0.2, torch.randn(3, 1, 3), torch.zeros(3, 1, 3)
    eye = torch.eye(4).expand(3, 4, 4)
    rotation, inverse = transformation_from_parameters(axisangle, zero), transformation_from_parameters(axisangle, zero, invert=True)
    torch.testing.assert_close(inverse, torch.linalg.inv(rotation), rtol=0, atol=1e-5)
    shift, back = transformation_from_parameters(zero, translation), transformation_from_parameters(zero, translation, invert=True)
    torch.testing.assert_close(back @ shift, eye, rtol=0, atol=1e-6)
    torch.testing.assert_close(shift[:, :3, 3], translation[:, 0])
    both, undo = transformation_from_parameters(axisangle, translation), transformation_from_parameters(axisangle, translation, invert=True)
    torch.testing.assert_close(undo @ both, eye, rtol=0, atol=1e-5)


def test_forward_rejects_offset_zero_and_bad_shapes():
    net = PoseNet()
    frame = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="non-zero"):
        net(frame, frame, 0)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        net(frame, torch.rand(1, 3, 32, 64), 1)
