"""The separate pose network of DenseMTL's semi-supervised depth setting (monodepth2's PoseNet).

It regresses the relative camera motion between two RGB frames; the photometric loss warps the
source frame into the target view with it. Not a multi-task architecture: it is not registered.

Source facts (DenseMTL vendors monodepth2; ``astra-vision/DenseMTL:``):

- ``models/posenet.py`` (``pose_model_input: pairs``): a frame before the target (offset < 0) is
  fed as ``cat(source, target)`` and its matrix inverted, a frame after it as ``cat(target,
  source)``, so that the pair is always in temporal order; only prediction 0 of 2 is used.
- ``vendor/monodepth2/resnet_encoder.py``: ResNet-18 with a 6-channel conv1 (ImageNet conv1
  weights repeated twice on the input axis and halved), inputs in [0, 1] normalised as
  ``(x − 0.45) / 0.225``, output the 512-channel stride-32 map; avgpool and fc unused.
- ``vendor/monodepth2/pose_decoder.py``: 1×1 conv 512→256 + ReLU ("squeeze"), two 3×3 convs
  256→256 + ReLU, 1×1 conv 256→12, mean over H and W, ×0.01, reshaped to [B, 2, 1, 6]
  (axis-angle first, then translation). Its state-dict keys are ``net.0.*`` … ``net.3.*``.
- ``vendor/monodepth2/layers.py``: ``transformation_from_parameters`` (Rodrigues rotation,
  translation matrix, ``M = T·R``, or ``Rᵀ·T(−t)`` when inverted).

Parameters: 11,185,920 (encoder) + 1,314,572 (decoder) = 12,500,492, as monodepth2's pose encoder
without fc plus its pose decoder.

Differences and why: the encoder is timm's ``resnet18`` (``resnet18.tv_in1k`` for ImageNet
weights, which are torchvision's; timm's ``in_chans=6`` adaptation is the same repeat-and-halve),
keeping torchvision's key names so that monodepth2's ``pose_encoder.pth`` / ``pose_decoder.pth``
load by :meth:`PoseNet.load_monodepth2`; the decoder convs are named ``squeeze`` and ``pose.i``
(monodepth2's dictionary names) instead of ``net.i``; the matrices keep the parameters' dtype and
device and are built without in-place writes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from scenemtl.config import BackboneConfig
from scenemtl.errors import CheckpointError, key_mismatch
from scenemtl.models.backbones.factory import create_timm_model

MEAN, STD = 0.45, 0.225  # monodepth2's input normalisation, the same for all channels


def rotation_from_axisangle(axisangle: Tensor) -> Tensor:
    """[B, 4, 4] homogeneous rotations from [B, 1, 3] (or [B, 3]) axis-angle vectors (angle = norm).

    ``R = cos θ·I + sin θ·[a]× + (1 − cos θ)·a aᵀ`` with ``a = v / (θ + 1e-7)``, as monodepth2.
    """
    vec = axisangle.reshape(axisangle.shape[0], 3)
    angle = vec.norm(dim=1, keepdim=True)
    axis = vec / (angle + 1e-7)
    cos, sin = torch.cos(angle)[:, :, None], torch.sin(angle)[:, :, None]
    x, y, z = axis.unbind(1)
    zero = torch.zeros_like(x)
    cross = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], 1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=vec.dtype, device=vec.device)
    rot = cos * eye + sin * cross + (1 - cos) * axis[:, :, None] * axis[:, None, :]
    return _homogeneous(rot, torch.zeros_like(vec)[:, :, None])


def translation_matrix(translation: Tensor) -> Tensor:
    """[B, 4, 4] homogeneous translations from [B, 1, 3] (or [B, 3]) vectors."""
    t = translation.reshape(translation.shape[0], 3, 1)
    return _homogeneous(torch.eye(3, dtype=t.dtype, device=t.device).expand(t.shape[0], 3, 3), t)


def _homogeneous(rot: Tensor, t: Tensor) -> Tensor:
    """[[R, t], [0, 1]] from [B, 3, 3] and [B, 3, 1]."""
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=rot.dtype, device=rot.device).expand(rot.shape[0], 1, 4)
    return torch.cat([torch.cat([rot, t], 2), bottom], 1)


def transformation_from_parameters(axisangle: Tensor, translation: Tensor, invert: bool = False) -> Tensor:
    """[B, 4, 4] rigid transform ``T(t)·R``, or its inverse ``Rᵀ·T(−t)`` when ``invert``."""
    rot = rotation_from_axisangle(axisangle)
    if invert:
        return rot.transpose(1, 2) @ translation_matrix(-translation)
    return translation_matrix(translation) @ rot


def to_monodepth2(key: str) -> tuple[str, str]:
    """(``encoder`` or ``decoder``, monodepth2's key) for a key of :class:`PoseNet`'s state dict."""
    if key.startswith("encoder."):
        return "encoder", key  # monodepth2's ResnetEncoder holds the torchvision ResNet as `encoder`
    head, _, rest = key.partition(".")
    if head == "squeeze":
        return "decoder", f"net.0.{rest}"
    index, _, rest = rest.partition(".")
    return "decoder", f"net.{int(index) + 1}.{rest}"


class PoseNet(nn.Module):
    """Relative camera pose from two RGB frames in [0, 1]: ResNet-18 on 6 channels + pose decoder.

    ``weights``: None (random), ``timm`` (torchvision's ImageNet weights from timm's hub) or a
    local torchvision ``resnet18`` file; conv1's 3-channel weights are repeated and halved.
    """

    def __init__(self, weights: str | None = None) -> None:
        super().__init__()
        config = BackboneConfig(name="resnet18.tv_in1k", weights=weights)
        self.encoder = create_timm_model(config, in_chans=6, num_classes=0, global_pool="")
        self.squeeze = nn.Conv2d(512, 256, 1)
        self.pose = nn.ModuleList([nn.Conv2d(256, 256, 3, padding=1), nn.Conv2d(256, 256, 3, padding=1), nn.Conv2d(256, 12, 1)])

    def predict(self, pair: Tensor) -> tuple[Tensor, Tensor]:
        """Axis-angle and translation, each [B, 2, 1, 3], for a [B, 6, H, W] pair of frames in [0, 1]."""
        out = torch.relu(self.squeeze(self.encoder.forward_features((pair - MEAN) / STD)))
        for conv in self.pose[:2]:
            out = torch.relu(conv(out))
        out = self.pose[2](out)
        out = 0.01 * out.mean(dim=(2, 3)).view(-1, 2, 1, 6)
        return out[..., :3], out[..., 3:]

    def forward(self, source: Tensor, target: Tensor, source_offset: int) -> Tensor:
        """[B, 4, 4] transform taking target-camera points into the source camera.

        ``source`` and ``target`` are [B, 3, H, W] frames in [0, 1]; ``source_offset`` is the source
        frame's index relative to the target (−1: the previous frame, +1: the next). This is the
        matrix monodepth2's warping uses: ``cam_points_source = T @ cam_points_target``. The pair
        is fed in temporal order; the prediction for ``cat(a, b)`` maps ``a``'s camera points into
        ``b``'s camera, so it is inverted for a source before the target.
        """
        if source_offset == 0:
            raise ValueError("source_offset must be non-zero: the source frame is another frame than the target")
        if source.shape != target.shape or source.dim() != 4 or source.shape[1] != 3:
            raise ValueError(f"source and target must both be [B, 3, H, W]; got {tuple(source.shape)} and {tuple(target.shape)}")
        before = source_offset < 0
        axisangle, translation = self.predict(torch.cat([source, target] if before else [target, source], 1))
        return transformation_from_parameters(axisangle[:, 0], translation[:, 0], invert=before)

    def load_monodepth2(self, encoder_state: Mapping[str, Tensor], decoder_state: Mapping[str, Tensor]) -> None:
        """Load monodepth2's ``pose_encoder.pth`` and ``pose_decoder.pth`` state dicts (already read).

        The classifier ``encoder.fc.*`` is dropped; ``num_batches_tracked`` may be absent (older
        PyTorch). CheckpointError naming the missing, unknown and mis-shaped keys otherwise.
        """
        given = {("encoder", k): v for k, v in encoder_state.items() if not k.startswith("encoder.fc.")}
        given.update({("decoder", k): v for k, v in decoder_state.items()})
        own = {to_monodepth2(key): key for key in self.state_dict()}
        shapes = {key: tuple(value.shape) for key, value in self.state_dict().items()}
        missing = [f"{f}:{k}" for (f, k), key in own.items() if (f, k) not in given and not key.endswith("num_batches_tracked")]
        unexpected = [f"{f}:{k}" for f, k in given if (f, k) not in own]
        wrong = [
            f"{f}:{k} {tuple(v.shape)} ≠ {shapes[own[f, k]]}"
            for (f, k), v in given.items()
            if (f, k) in own and tuple(v.shape) != shapes[own[f, k]]
        ]
        if missing or unexpected or wrong:
            raise CheckpointError(f"monodepth2 pose weights do not fit PoseNet ({key_mismatch(missing, unexpected, wrong)})")
        self.load_state_dict({own[name]: value for name, value in given.items()}, strict=False)
