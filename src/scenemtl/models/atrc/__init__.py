"""ATRC: Brüggemann et al., "Exploring Relational Context for Multi-Task Dense Prediction", ICCV 2021.

Structure (``atrc``), as brdav/atrc's ``src/model/heads/relationalcontext.py`` builds it:

- backbone → the feature maps at strides ≥ ``model.options.decoder_stride`` (HRNet: the four branches,
  18/36/72/144 channels for HRNet-18) upsampled to the finest of them and concatenated
  (``heads/base.py:_transform_inputs``, ``in_index 0,1,2,3``): ``in`` channels;
- per task a 3×3 conv-BN-ReLU bottleneck to ``C = in // 4`` channels (67 on HRNet-18);
- per task that some context needs labels from, an auxiliary ("initial") head on the
  **detached** concatenated features (``aux_inp = inp.detach()``): 1×1 conv-BN-ReLU (in → in)
  and 1×1 logits; its maps, softmaxed over space per channel, are the task's label regions. The
  final losses still reach these heads through the label contexts; only the backbone is cut off;
- for every ordered pair (target t, source s) one context block chosen by the genotype, each
  with ``a = C // 2`` channels: 0 none, 1 **global** (linear attention: query/key 1×1 conv-BN-ReLU,
  1×1 conv-BN, softplus; ``out = (V Kᵀ) Q / (Σ K)ᵀ Q``), 2 **local** (softmax(q·k / √a) over a
  9×9 window around each pixel at the head's resolution; positions outside the map score 0 and
  carry 0 values, as the CUDA kernels ``heads/ops/locatt_ops`` compute), 3 **t-label** (source
  features pooled by the *target's* auxiliary region maps, then attended to by every target
  pixel), 4 **s-label** (pooled by the *source's* maps); query/key of local and label contexts
  are two 1×1 conv-BN-ReLU, values one (``heads/attention.py``);
- per target: the context outputs concatenated → 1×1 conv-BN whose BN starts at zero (weight
  and bias, ``zero_init``: the head starts as if there were no context) → concatenated with the
  target's features → 1×1 conv-BN-ReLU → Dropout2d(0.05) → 1×1 logits. Context blocks use
  Xavier-uniform convolutions, the logits N(0, 0.01) weights and zero bias (``base.py``).

The search space (``atrc_search``, ``relationalcontextsearch.py``): every pair holds all its
candidates {none, global, local, t-label, and s-label when t ≠ s}, mixed by weights over
learnable logits (``arch_param``, zeros at start, one per choice, index = genotype code); in
training the weights are a Gumbel-softmax sample at temperature τ, in evaluation the one-hot of
the arg-max. Once the softmax of a pair's logits has top-1 − top-2 ≥ 0.3 in a training step the
pair is frozen for good to that one-hot choice. Values' last BN has no affine parameters, the
fused context goes to a 1×1 conv-BN-ReLU without dropout, and every task has an auxiliary head.
``scenemtl search`` (the ``ArchitectureSearch`` training extension) trains it as
``src/main_search.py`` does: τ linear 1.0 → 0.05 and entropy weight linear −0.02 → 0.06 over the steps (``utils_main.py``), the mean
entropy of the pairs' softmaxes added to the loss, the architecture logits under Adam (lr 5e-4,
no weight decay) beside the weights' optimiser; the genotype is the arg-max of every pair.

Genotypes are JSON files in the format of ATRC's released ``genotypes/*.json``:
``{"data": {target: {source: code}}, "step": N}`` with ATRC's task names (``sal`` is
saliency), so those files load as they are and ``scenemtl search`` writes files ATRC's code
loads. ``genotype: null`` gives every pair global context: ATRC's own code has no default (its
ATRC head asserts a genotype file); all-global is its ``GlobalRelationalContextHead`` baseline,
and ``global``, ``local``, ``t-label``, ``s-label`` (or ``none``) name the other fixed-context
baselines. Parameter counts equal the official head's (HRNet-18 NYUD with the released
genotype: 1,200,274 head + 3,860,720 backbone; ``tests/models/test_atrc.py``).

Differences from the official code, and why:

- The auxiliary heads have ATRC's widths (semseg/parts: classes; edge and saliency: 2; depth and
  normals: 40), but the training loop applies each task's own loss to ``aux`` outputs, so the
  outputs are decoded to the task's format: two-class logits to their difference (a sigmoid
  logit; the task's balanced BCE then equals ATRC's weighted two-class cross-entropy exactly),
  depth bins to the expected depth over 40 log-spaced bin centres in ``depth_range`` (ATRC's
  binning: 0.7–10 m), normal clusters to the expected direction over 40 fixed, evenly spread
  unit vectors. ATRC instead trains those two with cross-entropy against binned depth and
  against 40 k-means centroids of its training normals (``criterion.py``, a data file of its
  repository). Other tasks (e.g. ``inverse_depth``) get an auxiliary head of their own width
  (at least 2 region maps; the first channels are the auxiliary prediction).
- Saliency's final output is one logit (ATRC: two, softmax); the same function with one
  fewer output channel (68 parameters fewer at C = 67).
- Local attention is plain PyTorch (81 shifted products, no unfolded copy) instead of the CUDA
  extension, so it runs on any device; the results are the same function.
- ATRC's spatial softmax skips positions where the normalised image equals 255; its images are
  padded with 0, so that never happens, and it is left out.
- Frozen and arg-max choices of the search compute only the chosen block (ATRC computes every
  candidate and multiplies the others by 0): the same outputs, less time; the unchosen blocks of
  a frozen pair (which the genotype drops) then get no gradient, so weight decay leaves them be.
- ``channels`` overrides ``C`` (``model.head_channels`` is not read: ATRC derives its width from
  the backbone); ``window``, ``dropout`` and the search schedules are options with ATRC's values.

Modules: ``genotype`` (genotype files), ``context`` (context blocks, fusion, the search's mixtures),
``model`` (the network, ``ATRC``), ``search`` (``ATRCSearch`` and its ``ArchitectureSearch``
extension), ``factories`` (the registered ``atrc`` and ``atrc_search``).
"""

from scenemtl.models.atrc.context import ContextBlock, ContextChoice, ContextModule, SearchContextModule, local_attention
from scenemtl.models.atrc.factories import atrc, atrc_search
from scenemtl.models.atrc.genotype import (
    CONTEXTS,
    Genotype,
    format_genotype,
    genotype_json,
    load_genotype,
    official_name,
)
from scenemtl.models.atrc.model import ATRC, AuxDecoder, RelationalContextNet, fibonacci_sphere
from scenemtl.models.atrc.search import GENOTYPE_FILE, ArchitectureSearch, ATRCSearch

__all__ = [
    "ATRC",
    "ATRCSearch",
    "ArchitectureSearch",
    "AuxDecoder",
    "CONTEXTS",
    "ContextBlock",
    "ContextChoice",
    "ContextModule",
    "GENOTYPE_FILE",
    "Genotype",
    "RelationalContextNet",
    "SearchContextModule",
    "atrc",
    "atrc_search",
    "fibonacci_sphere",
    "format_genotype",
    "genotype_json",
    "load_genotype",
    "local_attention",
    "official_name",
]
