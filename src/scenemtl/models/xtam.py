"""DenseMTL's cross-task attention (Lopes et al., WACV 2023: "Cross-task Attention Mechanism for Dense Multi-task Learning").

Structure (astra-vision/DenseMTL, setup ``ours-cxatt``: ``models/ours_xatt.py``, ``models/components.py``,
``vendor/mtlpt/layers.py``, the decoder ``vendor/monodepth2/decoder.py`` with its ASPP
``vendor/three_ways/model_parts.py``, configs ``configs/*/resnet101_ours_*.yml``):

- a shared encoder: ResNet-101 with a dilated last stage (``use_dilation: [False, False, True]``,
  output stride 16; here any timm backbone, ``resnet101.tv_in1k`` with ``output_stride: 16`` in the
  configs), whose five feature maps (strides 2, 4, 8, 16, 16) feed
- one decoder per task (the "padnet+" head, a monodepth2-style U-Net): levels i = 4 … 0, each
  ``conv0`` then, after a nearest ×2 upsampling where the skip is finer (and always at level 0),
  concatenation with the encoder feature ``i - 1`` (levels > 0) and ``conv1``. Level 4's ``conv0``
  is an ASPP (``intermediate_aspp: True``; 1×1 branch, 3×3 branches at rates 6/12/18, image pooling,
  each conv-BN-ReLU without bias, 1×1 projection-BN-ReLU, dropout 0.5); every other conv is a 3×3
  convolution with reflection padding and bias followed by ELU (``ConvBlock``, ``batch_norm: False``).
  Widths ``num_ch_dec: [64, 128, 128, 256, 256]`` (level 0 … 4). A 1×1 convolution ("side") reads
  levels 0 and 1 (``active_scales: [0, 1]``): scale 0 is the final prediction at the input size,
  scale 1 (stride 2) is deeply supervised (``aux['scale1']``; DenseMTL's losses use ``scales: [0, 1]``);
- the decoders run in two sections (``enc_layers: [[4, 3, 2, 1], [0]]``); between them, on the
  level-1 features (128 channels, stride 2; ``stages: [1]``), the cross-task block. For every ordered
  pair source s → target t (``ablation: ['SxTAM', 'SA', 'add']``):
  an extractor (3×3 conv with bias, ReLU) on s's feature; a spatial self-attention gate on it
  (``SABlock``: sigmoid(3×3 conv) × 3×3 conv, both without bias, to half the channels); the spatial
  cross-task attention (``SxTAM``): query from t's feature sub-sampled (nearest) by 4, key and value
  from the extracted feature max-pooled by 4 (``stage_nb[1] = (128, 4)``: attention at 1/8 of the
  input), each a 1×1 conv-BN-ReLU without bias, softmax(QKᵀ/√C) over the source positions, the
  attended values upsampled (nearest) back and multiplied by a channel-wise ``alpha`` initialised to
  zeros; the pair's message is a 1×1 conv-BN-ReLU projection (``Project``, no bias) of
  [SA, SxTAM] (C/2 + C channels) to C. Each target then adds a 1×1 conv-BN-ReLU fusion (``post``)
  of its (T - 1) concatenated messages to its own feature (``add``: the feature is not concatenated).

At initialisation ``alpha`` = 0, so the cross-task *attention* contributes nothing (its output is
exactly zero); the self-attention messages do flow from the start, as in the official code (the
block does not reduce to the identity at initialisation there either). With one task there is no
pair and the model is the task's decoder on the encoder. ``shared_parameters()``: the encoder.

Parameters of the cross-task block at C channels, per pair: extractor 9C² + C, SA 2·9·C·C/2,
SxTAM 3(C² + 2C) + C, projection 1.5C·C + 2C; per target: fusion (T - 1)C² + 2C. At C = 128:
369,920 per pair, 773,120 for two tasks, 2,318,592 for three, 4,636,672 for four (tested).

Official checkpoints (``official_key_map``, ``models/official.py``): DenseMTL's released
fully supervised weights ``{sy,vk,cs}_densemtl_{SD,SDN}.pkl`` are the ``OursAtt`` module's bare
state dict (``training/base.py``: ``torch.save(self.model.state_dict(), …)``), read weights-only;
``scenemtl eval``/``convert`` take them with the config of the same model. Its names
(``models/ours_xatt.py``, ``vendor/monodepth2/{resnet_encoder,decoder,layers}.py``,
``vendor/three_ways/model_parts.py``, ``vendor/mtlpt/layers.py``, ``models/components.py``) → ours:

- ``backbone.encoder.<torchvision ResNet name>`` (monodepth2's ``ResnetEncoder`` holds torchvision's
  ResNet as ``encoder``; its ``fc``/``avgpool`` are replaced by identities, so no head keys) →
  ``backbone.body.<the same name>`` (timm's ResNet uses torchvision's names);
- ``heads.<t>.decoder.<k>``: ``DecoderHead`` keeps its ``convs`` table as ``nn.ModuleList(convs.values())``
  in the order upconv(4,0), skip_proj(4), upconv(4,1), …, upconv(1,1), upconv(0,0), upconv(0,1),
  side(0), side(1); the skip projections are parameterless identities, so k = 0 (the ASPP: the same
  ``convs.<i>``/``project`` layout as ours) → ``decoders.<t>.levels.4.conv0``, k = 2, 3, 5, 6, 8, 9,
  11, 12, 13 (``ConvBlock``: ``block.0.conv`` is the reflection-padded 3×3 convolution, ``block.1`` an
  identity without batch norm) → ``levels.<i>.conv<j>.0``, k = 14, 15 → ``side.0``, ``side.1``;
- ``m.<t>.<stage>.extract_<s>`` → ``xtam.messages.<t>.<s>.extract``; ``SA_<s>.attention/conv`` →
  ``.self_attention.gate/conv``; ``SxTAM_<s>.conv_b/conv_c/conv_d/alpha`` →
  ``.cross_attention.query/key/value/alpha`` (``conv_b`` reads the target's feature, ``conv_c`` and
  ``conv_d`` the source's); ``proj_<s>`` → ``.project``; ``post`` → ``xtam.fuse.<t>`` (``CxTAM_<s>`` is
  an identity in this ablation: no keys);
- not loaded: ``params.<t>.0.*`` and ``params.<t>.1.*``. ``OursAtt`` registers each task's head and
  its xTAM modules a second time (``self.params``, a ModuleList of ``heads[t]`` and ``m[t]`` for the
  optimiser's per-task groups), and ``state_dict()`` writes every tensor under both names; these are
  the second copies of ``heads.<t>.*`` and ``m.<t>.*``.

The map renames weights; it does not change what the outputs mean. The released depth outputs are
DenseMTL's "normalised inverse depth" ``65536 / (100·m + 1)`` (``fs_bs2.yml`` ``inverse_depth: True``,
``loss/depth/berhu.py``), not the metres of our ``depth`` task; and the official losses log the
metrics of both scales with scale 1 (``scales[-1]``) as the main one, where evaluation here reads scale 0.

Differences from the official code, and why:

- The official fusion concatenates the messages in the iteration order of a Python ``set`` of task
  names (it changes with hash randomisation between runs); here the order of ``tasks``, so the
  model is reproducible. An official ``post`` weight is loaded in the order of ``tasks`` (other than
  the target). With two tasks (the SD weights) there is one message and no order; with three (SDN)
  the order the released run used is not recorded in its file, and DenseMTL's own ``--evaluate``
  draws it again in its process.
- Sizes need not be multiples of 32: the decoder upsamples to the skip's size and the attention
  pads its upsampled output (replicating the last row/column) to the query's size; for inputs
  divisible by the encoder's largest stride (16 for the dilated ResNet-101: 448×576, 512×1024) both
  are exactly nearest ×2 / ×4, as the official modules.
- The image-pooling BatchNorm of the ASPP uses its running statistics when a training batch has a
  single image (PyTorch's would raise there; DenseMTL trains with batches of 2).
- The ResNet normalises nothing itself (DenseMTL's encoder maps [0, 1] images with
  (x - 0.45)/0.225; here the data's ImageNet normalisation). Weights: DenseMTL's torchvision
  ImageNet ResNet-101 is timm's ``resnet101.tv_in1k``.
- Output widths come from the tasks (edges: one logit for the binary loss, where DenseMTL's
  two-class cross-entropy uses two). The training loop sums the scale-0 and scale-1 losses; DenseMTL
  averages them (a global factor 1/2 on the loss: Adam hardly sees it, the gradient clipping does).
  DenseMTL bilinearly upsamples the scale-1 logits with ``align_corners=True``; ``resize`` uses
  False. DenseMTL
  selects its best checkpoint on the scale-1 metrics; evaluation here reads the final (scale-0,
  attention-refined) output.
- Options beyond the paper's configuration: ``decoder_channels`` (widths per level; the default is
  DenseMTL's for five-level backbones and its first entries for shallower ones), ``stage`` (the
  decoder level after which the block sits, official 1), ``attention_pool`` (official table by
  level 0…4: 8, 4, 2, 1, 1), ``deep_supervision``; ``scales`` (per task, its ``active_scales``: the
  decoder levels with an output; default [0, 1], or [0] without ``deep_supervision``; DenseMTL's
  SDE: semseg [0, 2], disparity [0, 1, 2, 3]) and ``regression`` (tasks whose outputs are monodepth2's
  reflection-padded 3×3 convolutions, ``is_regression``; the sigmoid is the depth task's
  ``output: disparity``, not the model's). Scale s > 0 is ``aux['scale<s>']`` at its own
  resolution (1/2^s); the trainer upsamples it (bilinear, ``align_corners=False``) for the task
  losses, self-supervised depth reads it as is. ``model.head_channels`` and
  ``model.decoder_stride`` do not apply: the decoder's widths are the paper's and it reads every level.
- DenseMTL's task loss is the mean over its scales times the task weight; the trainer adds the
  final and every aux loss, so a recipe halves DenseMTL's weights for two scales.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from scenemtl.config import ModelConfig
from scenemtl.errors import ConfigError, ScenemtlError
from scenemtl.models.backbones import Backbone
from scenemtl.models.base import MultiTaskModel
from scenemtl.models.layers import ASPP, SpatialAttentionGate, conv_norm_act, fp32_conv, resize
from scenemtl.models.official import KeyMap, Rule
from scenemtl.models.output import ModelOutput
from scenemtl.models.registry import register_model
from scenemtl.tasks import Task

#: DenseMTL's ``num_ch_dec`` (decoder level 0 … 4)
DECODER_CHANNELS = (64, 128, 128, 256, 256)
#: DenseMTL's ``stage_nb``: max-pool factor of the attention's key/value at each decoder level
STAGE_POOL = {0: 8, 1: 4, 2: 2, 3: 1, 4: 1}


def conv_elu(in_channels: int, out_channels: int) -> nn.Sequential:
    """monodepth2's ``ConvBlock``: 3×3 convolution with reflection padding and bias, then ELU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect"), nn.ELU(inplace=True))


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """1×1 conv (no bias) → BatchNorm → ReLU (not in place, as DenseMTL): the attention's and the messages' projections."""
    return conv_norm_act(in_channels, out_channels, 1, act=nn.ReLU)


class DecoderLevel(nn.Module):
    """One level of DenseMTL's decoder: ``conv0``, upsampling to the skip, concatenation, ``conv1``."""

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int, aspp_rates: Sequence[int] | None) -> None:
        super().__init__()
        self.conv0 = ASPP(in_channels, out_channels, aspp_rates) if aspp_rates else conv_elu(in_channels, out_channels)
        self.conv1 = conv_elu(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        """``skip`` None: the last level, which upsamples by 2 without a skip."""
        x = self.conv0(x)
        if skip is None:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        else:
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = torch.cat([x, skip], dim=1)
        return self.conv1(x)


class Conv3x3(nn.Module):
    """monodepth2's output convolution of a regression head: reflection padding 1, then a 3×3 convolution
    (``vendor/monodepth2/layers.py:Conv3x3``; keys ``conv.weight``, ``conv.bias``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class Decoder(nn.Module):
    """DenseMTL's "padnet+" decoder of one task: levels L-1 … 0 over the encoder's L feature maps."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        channels: Sequence[int],
        out_channels: int,
        aspp_rates: Sequence[int],
        scales: Sequence[int] = (0, 1),
        regression: bool = False,
    ) -> None:
        super().__init__()
        top = len(encoder_channels) - 1
        self.levels = nn.ModuleList(
            DecoderLevel(
                encoder_channels[top] if i == top else channels[i + 1],
                channels[i],
                encoder_channels[i - 1] if i > 0 else 0,
                aspp_rates if i == top else None,
            )
            for i in range(top + 1)
        )
        side = Conv3x3 if regression else (lambda c, o: nn.Conv2d(c, o, 1))
        self.side = nn.ModuleDict({str(s): side(channels[s], out_channels) for s in scales})

    def run(
        self, features: Sequence[torch.Tensor], x: torch.Tensor | None, levels: Sequence[int], taps: dict[int, torch.Tensor]
    ) -> torch.Tensor:
        """Run ``levels`` (descending) from ``x`` (None: the coarsest encoder feature); keep each level's output in ``taps``."""
        for i in levels:
            x = self.levels[i](features[-1] if x is None else x, features[i - 1] if i > 0 else None)
            taps[i] = x
        return x


class SpatialCrossTaskAttention(nn.Module):
    """SxTAM: the target's feature attends over the source's, at 1/``pool`` resolution; scaled by ``alpha`` (zeros at init)."""

    def __init__(self, channels: int, pool: int) -> None:
        super().__init__()
        self.pool = pool
        self.query = _conv_bn_relu(channels, channels)
        self.key = _conv_bn_relu(channels, channels)
        self.value = _conv_bn_relu(channels, channels)
        self.alpha = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Attended source values at the target's size."""
        s = self.pool
        height, width = target.shape[-2] // s, target.shape[-1] // s
        if height < 1 or width < 1:
            raise ScenemtlError(
                f"xtam: the cross-task attention pools its {tuple(target.shape[-2:])} features by {s}; the input image is too small for it"
            )
        # nearest sub-sampling by s (DenseMTL: nn.Upsample(scale_factor=1/s)) and max-pooling by s
        query = self.query(target[..., ::s, ::s][..., :height, :width])
        pooled = F.max_pool2d(source, s, s) if s > 1 else source
        key, value = self.key(pooled), self.value(pooled)
        # softmax(Q Kᵀ / √C) V over the source positions
        out = F.scaled_dot_product_attention(
            query.flatten(2).transpose(1, 2), key.flatten(2).transpose(1, 2), value.flatten(2).transpose(1, 2)
        )
        out = out.transpose(1, 2).reshape(query.shape)
        if s > 1:
            out = F.interpolate(out, scale_factor=s, mode="nearest")
            pad_h, pad_w = target.shape[-2] - out.shape[-2], target.shape[-1] - out.shape[-1]
            if pad_h or pad_w:
                out = F.pad(out, (0, pad_w, 0, pad_h), mode="replicate")
        return out * self.alpha


class CrossTaskMessage(nn.Module):
    """The message of one source task to one target: extractor, SA, SxTAM, 1×1 projection of [SA, SxTAM]."""

    def __init__(self, channels: int, pool: int) -> None:
        super().__init__()
        self.extract = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.self_attention = SpatialAttentionGate(channels, channels // 2, gate="gate")
        self.cross_attention = SpatialCrossTaskAttention(channels, pool)
        self.project = _conv_bn_relu(channels // 2 + channels, channels)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """The projected message at the target's resolution."""
        extracted = self.extract(source)
        return self.project(torch.cat([self.self_attention(extracted), self.cross_attention(target, extracted)], dim=1))


class CrossTaskAttention(nn.Module):
    """xTAM for every ordered task pair, fused into each target by addition (DenseMTL's ``add``)."""

    def __init__(self, tasks: Sequence[str], channels: int, pool: int) -> None:
        super().__init__()
        tasks = list(tasks)
        if len(tasks) < 2:
            raise ConfigError("xtam: the cross-task attention needs at least two tasks")
        self.messages = nn.ModuleDict({t: nn.ModuleDict({s: CrossTaskMessage(channels, pool) for s in tasks if s != t}) for t in tasks})
        self.fuse = nn.ModuleDict({t: _conv_bn_relu((len(tasks) - 1) * channels, channels) for t in tasks})

    def forward(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each task's feature plus the fused messages of the others."""
        out = {}
        for t, sources in self.messages.items():
            messages = [message(features[t], features[s]) for s, message in sources.items()]
            out[t] = features[t] + self.fuse[t](torch.cat(messages, dim=1))
        return out


class DenseMTLXTAM(MultiTaskModel):
    """Shared encoder, per-task DenseMTL decoders, cross-task attention between the two decoder sections."""

    def __init__(
        self,
        config: ModelConfig,
        tasks: Mapping[str, Task],
        decoder_channels: Sequence[int] | None = None,
        aspp_rates: Sequence[int] = (6, 12, 18),
        stage: int = 1,
        attention_pool: int | None = None,
        deep_supervision: bool = True,
        scales: Mapping[str, Sequence[int]] | None = None,
        regression: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.backbone = Backbone(config.backbone)
        levels = len(self.backbone.channels)
        channels = _decoder_channels(decoder_channels, levels)
        rates = _positive_ints(aspp_rates, "aspp_rates")
        if not rates:
            raise ConfigError("model.options.aspp_rates must name at least one dilation rate, e.g. [6, 12, 18]")
        if isinstance(stage, bool) or not isinstance(stage, int) or not 1 <= stage <= levels - 1:
            raise ConfigError(
                f"model.options.stage must be a decoder level between 1 and {levels - 1} (the block sits after it; "
                f"DenseMTL: 1), got {stage!r}"
            )
        pool = STAGE_POOL.get(stage, 1) if attention_pool is None else attention_pool
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
            raise ConfigError(f"model.options.attention_pool must be a positive integer, got {attention_pool!r}")
        if channels[stage] < 2:
            raise ConfigError(
                f"model.options.decoder_channels: level {stage} needs at least 2 channels (the "
                f"self-attention halves them), got {channels[stage]}"
            )
        self.stage, self.pool = stage, pool
        default = (0, 1) if deep_supervision else (0,)
        unknown = sorted(set(scales or {}) - set(tasks)) + sorted(set(regression) - set(tasks))
        if unknown:
            raise ConfigError(f"model.options.scales / regression name tasks the model does not have: {unknown}; tasks: {list(tasks)}")
        self.task_scales: dict[str, tuple[int, ...]] = {}
        for name in tasks:
            picked = tuple(sorted(set((scales or {}).get(name, default))))
            if not picked or picked[0] != 0 or picked[-1] >= levels:
                raise ConfigError(
                    f"model.options.scales.{name} must hold 0 (the final output) and decoder levels below {levels}, got {list(picked)}"
                )
            self.task_scales[name] = picked
        self.scales = tuple(sorted({s for picked in self.task_scales.values() for s in picked}))
        self.decoders = nn.ModuleDict(
            {
                name: Decoder(self.backbone.channels, channels, task.out_channels, rates, self.task_scales[name], name in regression)
                for name, task in tasks.items()
            }
        )
        self.xtam = CrossTaskAttention(list(tasks), channels[stage], pool) if len(tasks) > 1 else None
        self.sections = (list(range(levels - 1, stage - 1, -1)), list(range(stage - 1, -1, -1)))

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The backbone's feature maps."""
        return tuple(self.backbone(image))

    def decode(self, shared: Sequence[torch.Tensor], size: Sequence[int]) -> ModelOutput:
        """Final (scale-0) logits of every task at ``size``; scale s > 0 in ``aux['scale<s>']`` at 1/2^s."""
        features = list(shared)
        taps: dict[str, dict[int, torch.Tensor]] = {name: {} for name in self.decoders}
        x = {name: decoder.run(features, None, self.sections[0], taps[name]) for name, decoder in self.decoders.items()}
        if self.xtam is not None:
            x = self.xtam(x)
        for name, decoder in self.decoders.items():
            decoder.run(features, x[name], self.sections[1], taps[name])
        final = {name: resize(fp32_conv(d.side["0"], taps[name][0]), size) for name, d in self.decoders.items()}
        aux = {}
        for scale in self.scales[1:]:  # at their own resolution (the trainer resizes them for the losses)
            aux[f"scale{scale}"] = {
                name: fp32_conv(d.side[str(scale)], taps[name][scale]) for name, d in self.decoders.items() if str(scale) in d.side
            }
        return ModelOutput(final=final, aux=aux)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The encoder's parameters."""
        return list(self.backbone.parameters())

    @property
    def task_names(self) -> list[str]:
        """The tasks in the model's order (that of its decoders)."""
        return list(self.decoders)

    @property
    def official_key_map(self) -> KeyMap:
        """DenseMTL's names of this model's weights (its xTAM modules are keyed by the decoder level ``stage``)."""
        return densemtl_key_map(self.stage)

    def unbuilt_official_parameters(self) -> int:
        """None: the official model's parameters are ours (its ``params`` aliases are the same tensors)."""
        return 0

    def output_layers(self) -> dict[str, list[nn.Module]]:
        """Each task's outputs, final and deeply supervised."""
        return {name: [getattr(side, "conv", side) for side in decoder.side.values()] for name, decoder in self.decoders.items()}

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint the encoder."""
        self.backbone.set_activation_checkpointing(enabled)


def _positive_ints(values: Sequence[int], key: str) -> list[int]:
    if (
        isinstance(values, (str, bytes))
        or not isinstance(values, Sequence)
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values)
    ):
        raise ConfigError(f"model.options.{key} must be a list of positive integers, got {values!r}")
    return list(values)


def _decoder_channels(values: Sequence[int] | None, levels: int) -> list[int]:
    if values is None:
        if levels > len(DECODER_CHANNELS):
            raise ConfigError(
                f"xtam: the backbone gives {levels} feature maps; DenseMTL's decoder widths cover 5. "
                f"Give model.options.decoder_channels ({levels} widths, finest level first)"
            )
        return list(DECODER_CHANNELS[:levels])
    channels = _positive_ints(values, "decoder_channels")
    if len(channels) != levels:
        raise ConfigError(
            f"model.options.decoder_channels must give one width per backbone feature map ({levels}, finest level "
            f"first; DenseMTL: {list(DECODER_CHANNELS)}), got {len(channels)}"
        )
    return channels


#: DenseMTL's ``DecoderHead.decoder`` index of upconv(level, j) for its five-level decoder (``n_upconv: 4``): level i > 0
#: holds upconv(i, 0), skip_proj(i) (a parameterless identity), upconv(i, 1); level 0 has no skip
DENSEMTL_DECODER_INDEX = {(i, j): 3 * (4 - i) + 2 * j for i in (4, 3, 2, 1) for j in (0, 1)} | {(0, 0): 12, (0, 1): 13}
#: ... and of its outputs ``side(scale)``, after the convolutions in the order of ``active_scales: [0, 1]``
DENSEMTL_SIDE_INDEX = {0: 14, 1: 15}


@lru_cache(maxsize=None)
def densemtl_key_map(stage: int = 1) -> KeyMap:
    """DenseMTL's state-dict names (``ours-cxatt``, ablation ``['SxTAM', 'SA', 'add']``) and ours; see the module docstring.

    ``stage``: the decoder level of the xTAM block (DenseMTL's ``stages: [1]``), the second index of its ``m.<t>.<stage>``.
    """
    head, x = "heads.{t}.decoder.", f"m.{{t}}.{stage}."
    message = "xtam.messages.{t}.{s}."
    decoder_rules = [Rule(head + "0.{rest}", "decoders.{t}.levels.4.conv0.{rest}")]  # the ASPP, the same layout
    decoder_rules += [
        Rule(f"{head}{k}.block.0.conv.{{rest}}", f"decoders.{{t}}.levels.{i}.conv{j}.0.{{rest}}")
        for (i, j), k in DENSEMTL_DECODER_INDEX.items()
        if (i, j) != (4, 0)
    ]
    decoder_rules += [Rule(f"{head}{k}.{{rest}}", f"decoders.{{t}}.side.{scale}.{{rest}}") for scale, k in DENSEMTL_SIDE_INDEX.items()]
    alias = "a second copy: OursAtt.params registers {} again (models/ours_xatt.py), so state_dict() holds each tensor twice"
    return KeyMap(
        method="DenseMTL",
        signature="backbone.encoder.",
        rules=[
            # monodepth2's ResnetEncoder around torchvision's ResNet (fc and avgpool replaced by identities)
            Rule("backbone.encoder.conv1.{rest}", "backbone.body.conv1.{rest}"),
            Rule("backbone.encoder.bn1.{rest}", "backbone.body.bn1.{rest}"),
            Rule("backbone.encoder.layer{n}.{rest}", "backbone.body.layer{n}.{rest}"),
            *decoder_rules,
            Rule(x + "extract_{s}.{rest}", message + "extract.{rest}"),
            Rule(x + "SA_{s}.attention.{rest}", message + "self_attention.gate.{rest}"),
            Rule(x + "SA_{s}.conv.{rest}", message + "self_attention.conv.{rest}"),
            Rule(x + "SxTAM_{s}.conv_b.{rest}", message + "cross_attention.query.{rest}"),
            Rule(x + "SxTAM_{s}.conv_c.{rest}", message + "cross_attention.key.{rest}"),
            Rule(x + "SxTAM_{s}.conv_d.{rest}", message + "cross_attention.value.{rest}"),
            Rule(x + "SxTAM_{s}.alpha", message + "cross_attention.alpha"),
            Rule(x + "proj_{s}.{rest}", message + "project.{rest}"),
            Rule(x + "post.{rest}", "xtam.fuse.{t}.{rest}"),
        ],
        drop={
            "params.{t}.0.{rest}": alias.format("heads.<t> (as params.<t>.0)"),
            "params.{t}.1.{rest}": alias.format("m.<t> (as params.<t>.1)"),
        },
    )


@register_model("xtam", tiny={"decoder_channels": [4, 8, 8, 8, 8]})
def xtam(
    config: ModelConfig,
    tasks: Mapping[str, Task],
    decoder_channels: Sequence[int] | None = None,
    aspp_rates: Sequence[int] = (6, 12, 18),
    stage: int = 1,
    attention_pool: int | None = None,
    deep_supervision: bool = True,
    scales: dict[str, list[int]] | None = None,
    regression: list[str] | None = None,
) -> DenseMTLXTAM:
    """DenseMTL (Lopes et al., WACV 2023): per-task decoders with cross-task attention at decoder level ``stage``."""
    return DenseMTLXTAM(config, tasks, decoder_channels, aspp_rates, stage, attention_pool, deep_supervision, scales, regression or ())
