"""The FCOS3D-style monocular 3D detection head of TaskPrompter's Cityscapes-3D benchmark, in plain PyTorch.

Facts (``prismformore/Multi-Task-Transformer``, HEAD ``b83962a``):

* neck (``TaskPrompter/configs/cityscapes3d/det_head_params.py``: ``neck``;
  ``TaskPrompter/detection_toolbox/fpn.py``, mmdet's FPN): 1×1 lateral convs, top-down nearest
  upsampling added to the level below (to its size, so two levels of equal stride work), 3×3 output
  convs, all convs with bias and without norm or activation; ``num_outs`` 5 from 4 inputs with
  ``add_extra_convs='on_output'``: one 3×3 stride-2 conv on the last output. ``relu_before_extra_convs``
  is set, but mmdet applies that ReLU only before the *second and later* extra convs, so with one
  extra level it never acts (kept here as the option, with mmdet's behaviour).
* head (``TaskPrompter/detection_toolbox/det_head.py``: ``FCOS3DHead``, mmdet3d's
  ``FCOSMono3DHead`` without attributes or velocity): two towers (cls, reg) of ``stacked_convs`` 3
  conv–GroupNorm(32)–ReLU blocks (convs with bias: ``conv_bias=True``), the last a modulated
  deformable conv (``dcn_on_last_conv=True``, mmcv's ``DCNv2`` = ``ModulatedDeformConv2dPack``: a 3×3
  offset/mask conv with bias, 27 channels split into two offset halves and a sigmoid mask). On the
  cls tower the branch ``cls_branch (256, 128)`` then a 1×1 conv to the 6 class logits; on the reg
  tower, per regression group ``group_reg_dims (2, 1, 3, 3, 4)`` (offset, depth, size, 3 rotation
  angles, 2D box) a branch of one 3×3 block (``reg_branch ((256,),)*5``) and a 1×1 conv, a direction
  branch (256,) → 2 bins × 3 angles, and the centerness branch (256,) → 1 (``centerness_on_reg``).
  All branch blocks are conv–GN–ReLU. Per level, learnable ``Scale`` factors (init 1) on offset,
  depth, size and 2D box; then depth = exp, size = exp + 1e-6, 2D box = ReLU; angles are raw.
* initialisation (``get_head`` calls ``FCOS3DHead.init_weights``, which overrides mmcv's
  ``BaseModule.init_weights``, so the FPN's Xavier ``init_cfg`` is never applied): the FPN's convs
  keep mmcv ``ConvModule``'s own init (Kaiming normal, fan-out, ReLU gain, bias 0); tower and branch
  convs N(0, 0.01²), bias 0; the deformable convs keep mmcv's init (uniform ±1/√(in·9), bias 0,
  offset/mask conv zero); ``conv_cls`` and — as TaskPrompter does — ``conv_dir_cls`` N(0, 0.01²) with
  bias −log(99) (prior 0.01); the regression and centerness 1×1 convs N(0, 0.01²), bias 0;
  GroupNorm weight 1, bias 0.

Differences: ``torchvision.ops.deform_conv2d`` stands in for mmcv's CUDA op (same offset layout and
mask); ``dcn=False`` uses a plain conv; widths and GroupNorm groups are options so tests can be tiny
(the defaults are the recipe's). The head's outputs are a :class:`Det3DOutput` (maps per level plus
the strides in input pixels and the input size) instead of a tuple.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d  # type: ignore[import-untyped]

#: channels of the regression groups: centre offset (2), depth (1), size L,W,H (3), 3 Euler angles, 2D box l,t,r,b (4)
GROUP_REG_DIMS = (2, 1, 3, 3, 4)
#: number of regression channels (``sum(GROUP_REG_DIMS)``)
BOX_CODE_SIZE = sum(GROUP_REG_DIMS)
#: direction bins per angle × angles
DIR_BINS, NUM_ANGLES = 2, 3


@dataclass
class Det3DOutput:
    """The raw maps of the head, one entry per level (``[B, C, H_l, W_l]``), and where they sit.

    * ``cls_scores``: class logits, C = number of classes;
    * ``bbox_preds``: 13 channels after the head's scales and activations: centre offset (2, in
      strides), depth (1, metres, > 0), size L, W, H (3, metres, > 0), 3 rotation angles (raw), 2D box
      distances l, t, r, b (4, in strides, ≥ 0);
    * ``dir_cls_preds``: direction logits, 6 channels angle-major (angle 0 bins 0/1, angle 1, angle 2);
    * ``centernesses``: centerness logits (1 channel);
    * ``strides``: each level's stride in input pixels; ``image_size``: the input's (H, W);
    * ``cameras``: optional ``[B,3,3]`` camera matrices, for ``Det3DTask.predict`` (the head does not
      know them; whoever has the targets or the samples' meta may attach them).
    """

    cls_scores: list[torch.Tensor]
    bbox_preds: list[torch.Tensor]
    dir_cls_preds: list[torch.Tensor]
    centernesses: list[torch.Tensor]
    strides: tuple[float, ...]
    image_size: tuple[int, int]
    cameras: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.cls_scores[0].shape[0])

    @property
    def num_levels(self) -> int:
        return len(self.cls_scores)

    def float(self) -> Det3DOutput:
        """The same maps in float32 (e.g. after autocast)."""
        return replace(
            self,
            cls_scores=[x.float() for x in self.cls_scores],
            bbox_preds=[x.float() for x in self.bbox_preds],
            dir_cls_preds=[x.float() for x in self.dir_cls_preds],
            centernesses=[x.float() for x in self.centernesses],
        )

    def detach(self) -> Det3DOutput:
        """The same maps without gradient."""
        return replace(
            self,
            cls_scores=[x.detach() for x in self.cls_scores],
            bbox_preds=[x.detach() for x in self.bbox_preds],
            dir_cls_preds=[x.detach() for x in self.dir_cls_preds],
            centernesses=[x.detach() for x in self.centernesses],
        )

    def image(self, index: int) -> Det3DOutput:
        """The maps of image ``index`` as a batch of one."""
        return self[index : index + 1]

    def __getitem__(self, pick: slice) -> Det3DOutput:
        """The maps of the images ``pick`` selects (a slice of the batch, as a tensor output's ``x[rows]``)."""
        if not isinstance(pick, slice):
            raise TypeError(f"Det3DOutput takes a slice of its batch, got {type(pick).__name__}; use image(index) for one image")
        return replace(
            self,
            cls_scores=[x[pick] for x in self.cls_scores],
            bbox_preds=[x[pick] for x in self.bbox_preds],
            dir_cls_preds=[x[pick] for x in self.dir_cls_preds],
            centernesses=[x[pick] for x in self.centernesses],
            cameras=None if self.cameras is None else self.cameras[pick],
        )


class FPN(nn.Module):
    """mmdet's FPN with ``add_extra_convs='on_output'`` (see the module docstring)."""

    def __init__(
        self, in_channels: Sequence[int], out_channels: int = 256, num_outs: int = 5, relu_before_extra_convs: bool = True
    ) -> None:
        super().__init__()
        if num_outs < len(in_channels):
            raise ValueError(f"num_outs ({num_outs}) must be at least the number of inputs ({len(in_channels)})")
        self.relu_before_extra_convs = relu_before_extra_convs
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        self.extra_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) for _ in range(num_outs - len(in_channels))
        )
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):  # mmcv ConvModule's default (the TP head never re-initialises its neck)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                _zero_bias(conv)

    def forward(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        for i, conv in enumerate(self.extra_convs):
            source = outs[-1]
            if i > 0 and self.relu_before_extra_convs:  # mmdet: not before the first extra conv
                source = F.relu(source)
            outs.append(conv(source))
        return outs


def _zero_bias(conv: nn.Conv2d, value: float = 0.0) -> None:
    if conv.bias is not None:
        nn.init.constant_(conv.bias, value)


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 as mmcv's ``ModulatedDeformConv2dPack`` (3×3, stride 1), computed by ``torchvision.ops.deform_conv2d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.padding = padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.conv_offset = nn.Conv2d(in_channels, 3 * kernel_size * kernel_size, kernel_size, padding=padding, bias=True)
        stdv = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        nn.init.uniform_(self.weight, -stdv, stdv)
        nn.init.zeros_(self.conv_offset.weight)
        _zero_bias(self.conv_offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1, o2, mask = torch.chunk(self.conv_offset(x), 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        out: torch.Tensor = deform_conv2d(x, offset, self.weight, self.bias, padding=(self.padding, self.padding), mask=torch.sigmoid(mask))
        return out


def _block(in_channels: int, out_channels: int, groups: int, deformable: bool = False) -> nn.Sequential:
    """conv 3×3 (with bias) – GroupNorm – ReLU, as mmcv's ConvModule with ``norm_cfg=GN``, ``conv_bias=True``."""
    if deformable:
        conv: nn.Module = ModulatedDeformConv2d(in_channels, out_channels)
    else:
        conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.normal_(conv.weight, std=0.01)
        _zero_bias(conv)
    return nn.Sequential(conv, nn.GroupNorm(groups, out_channels), nn.ReLU(inplace=True))


def _branch(in_channels: int, widths: Sequence[int], groups: int) -> nn.Sequential:
    layers, channels = [], in_channels
    for width in widths:
        layers.append(_block(channels, width, groups))
        channels = width
    return nn.Sequential(*layers)


def _predictor(in_channels: int, out_channels: int, bias: float = 0.0) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.normal_(conv.weight, std=0.01)
    _zero_bias(conv, bias)
    return conv


class Scale(nn.Module):
    """A learnable scalar factor (mmcv's ``Scale``)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class FCOS3DHead(nn.Module):
    """FPN + FCOS3D towers and branches (see the module docstring); ``forward(features, image_size) -> Det3DOutput``."""

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[float],
        num_classes: int = 6,
        fpn_channels: int = 256,
        feat_channels: int = 256,
        num_outs: int = 5,
        stacked_convs: int = 3,
        cls_branch: Sequence[int] = (256, 128),
        reg_branch: Sequence[int] = (256,),
        dir_branch: Sequence[int] = (256,),
        centerness_branch: Sequence[int] = (256,),
        dcn: bool = True,
        gn_groups: int = 32,
        relu_before_extra_convs: bool = True,
    ) -> None:
        super().__init__()
        strides = [float(s) for s in strides]
        if len(strides) == len(in_channels):  # the input features' strides: each extra level doubles the last
            strides = strides + [strides[-1] * 2 ** (i + 1) for i in range(num_outs - len(in_channels))]
        if len(strides) != num_outs:
            raise ValueError(f"give the strides of the {len(in_channels)} inputs or of the {num_outs} outputs, got {len(strides)}")
        self.strides = tuple(strides)
        self.num_classes = num_classes
        self.neck = FPN(in_channels, fpn_channels, num_outs, relu_before_extra_convs)

        def tower() -> nn.Sequential:
            return nn.Sequential(
                *(
                    _block(fpn_channels if i == 0 else feat_channels, feat_channels, gn_groups, deformable=dcn and i == stacked_convs - 1)
                    for i in range(stacked_convs)
                )
            )

        prior = -math.log((1 - 0.01) / 0.01)
        self.cls_convs = tower()
        self.reg_convs = tower()
        self.conv_cls_prev = _branch(feat_channels, cls_branch, gn_groups)
        self.conv_cls = _predictor(cls_branch[-1] if cls_branch else feat_channels, num_classes, prior)
        self.conv_reg_prevs = nn.ModuleList(_branch(feat_channels, reg_branch, gn_groups) for _ in GROUP_REG_DIMS)
        self.conv_regs = nn.ModuleList(_predictor(reg_branch[-1] if reg_branch else feat_channels, dim) for dim in GROUP_REG_DIMS)
        self.conv_dir_cls_prev = _branch(feat_channels, dir_branch, gn_groups)
        self.conv_dir_cls = _predictor(dir_branch[-1] if dir_branch else feat_channels, DIR_BINS * NUM_ANGLES, prior)
        self.conv_centerness_prev = _branch(feat_channels, centerness_branch, gn_groups)
        self.conv_centerness = _predictor(centerness_branch[-1] if centerness_branch else feat_channels, 1)
        # per level: offset, depth, size, 2D box
        self.scales = nn.ModuleList(nn.ModuleList(Scale(1.0) for _ in range(4)) for _ in range(num_outs))

    def forward_level(self, x: torch.Tensor, scales: nn.ModuleList) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class logits, box code, direction logits and centerness logits of one FPN level."""
        cls_feat = self.cls_convs(x)
        cls_score = self.conv_cls(self.conv_cls_prev(cls_feat))
        reg_feat = self.reg_convs(x)
        raw = torch.cat([conv(prev(reg_feat)) for prev, conv in zip(self.conv_reg_prevs, self.conv_regs)], dim=1).float()
        offset, depth, size, angles, box2d = raw[:, 0:2], raw[:, 2:3], raw[:, 3:6], raw[:, 6:9], raw[:, 9:13]
        scale_offset, scale_depth, scale_size, scale_box2d = scales
        bbox_pred = torch.cat(
            [scale_offset(offset), scale_depth(depth).exp(), scale_size(size).exp() + 1e-6, angles, F.relu(scale_box2d(box2d))], dim=1
        )
        dir_cls = self.conv_dir_cls(self.conv_dir_cls_prev(reg_feat))
        centerness = self.conv_centerness(self.conv_centerness_prev(reg_feat))
        return cls_score, bbox_pred, dir_cls, centerness

    def forward(self, features: Sequence[torch.Tensor], image_size: Sequence[int], scale: float = 1.0) -> Det3DOutput:
        """The maps of every FPN level; strides in the pixels of ``image_size`` (the input image): the built
        strides times ``scale``, the input's size over the size the features were computed at (an
        architecture that resizes its input inside, as TaskPrompter: 1/0.75 on Cityscapes-3D)."""
        levels = self.neck(list(features))
        strides = [stride * scale for stride in self.strides]
        outs = [self.forward_level(x, cast(nn.ModuleList, scales)) for x, scales in zip(levels, self.scales)]
        cls_scores, bbox_preds, dir_cls, centernesses = (list(part) for part in zip(*outs))
        return Det3DOutput(
            cls_scores=cls_scores,
            bbox_preds=bbox_preds,
            dir_cls_preds=dir_cls,
            centernesses=centernesses,
            strides=tuple(strides),
            image_size=(int(image_size[0]), int(image_size[1])),
        )


def build_det3d_head(
    in_channels: Sequence[int],
    strides: Sequence[float],
    num_classes: int = 6,
    fpn_channels: int = 256,
    feat_channels: int = 256,
    cls_branch: Sequence[int] = (256, 128),
    branch_channels: int = 256,
    num_outs: int = 5,
    dcn: bool = True,
    gn_groups: int = 32,
) -> FCOS3DHead:
    """The recipe's head on features of ``in_channels`` at ``strides`` (input pixels; the inputs' strides,
    each extra FPN level doubling the last, or all ``num_outs`` output strides).

    Defaults are TaskPrompter's widths (FPN 256, towers 256, cls branch (256, 128), other branches
    (256,), GN 32 groups, DCNv2 on the last tower conv); ``branch_channels`` sets the reg, direction and
    centerness branches together.
    """
    branch = (branch_channels,)
    return FCOS3DHead(
        in_channels,
        strides,
        num_classes=num_classes,
        fpn_channels=fpn_channels,
        feat_channels=feat_channels,
        num_outs=num_outs,
        cls_branch=tuple(cls_branch),
        reg_branch=branch,
        dir_branch=branch,
        centerness_branch=branch,
        dcn=dcn,
        gn_groups=gn_groups,
    )
