"""The Visual Decathlon score (Rebuffi et al., "Learning multiple visual domains with residual adapters",
NeurIPS 2017): S = Σ_d α_d · max(0, E_d^max − E_d)^γ_d with E_d the test error of domain d, γ_d = 2,
α_d = 1000 · (E_d^max)^−γ_d (1000 per domain, 10,000 at most), and E_d^max twice the error of the
paper's "Finetune" baseline (a ResNet-26 pre-trained on ImageNet and fine-tuned per domain), so that
baseline scores 250 per domain, 2500 in all.

The baseline accuracies are those of that paper's table of results (the columns ImNet., Airc., C100,
DPed, DTD, GTSR, Flwr, OGlt, SVHN, UCF). Checks in the tests: the baseline scores 2500; the paper's
"Res. adapt." row, whose published score is 2118, gives 2119 from its accuracies rounded to two
decimals.
"""

from __future__ import annotations

from collections.abc import Mapping

from scenemtl.errors import ScenemtlError

#: top-1 accuracy (percent) of the "Finetune" baseline per domain: E_max = 2 × (100 − accuracy)
BASELINE_ACCURACY: dict[str, float] = {
    "imagenet12": 59.87,
    "aircraft": 60.34,
    "cifar100": 82.12,
    "daimlerpedcls": 92.82,
    "dtd": 55.53,
    "gtsrb": 97.53,
    "vgg-flowers": 81.41,
    "omniglot": 87.69,
    "svhn": 96.55,
    "ucf101": 51.20,
}
GAMMA = 2.0
#: the points of a domain with no error
POINTS = 1000.0


def max_error(domain: str) -> float:
    """E_max of ``domain`` in percent (twice the baseline's error)."""
    if domain not in BASELINE_ACCURACY:
        raise ScenemtlError(f"'{domain}' is not a Visual Decathlon domain; the domains are {sorted(BASELINE_ACCURACY)}")
    return 2.0 * (100.0 - BASELINE_ACCURACY[domain])


def domain_score(domain: str, error: float) -> float:
    """α_d · max(0, E_max − E)^γ of a top-1 ``error`` in percent: 1000 at no error, 0 at or beyond E_max."""
    limit = max_error(domain)
    return float(POINTS * max(0.0, limit - error) ** GAMMA / limit**GAMMA)


def decathlon_score(errors: Mapping[str, float]) -> tuple[float, dict[str, float]]:
    """The score of top-1 ``errors`` (percent) per domain, and each domain's part. The challenge scores all
    ten domains; with fewer the sum is over those given (at most 1000 each)."""
    parts = {domain: domain_score(domain, float(error)) for domain, error in errors.items()}
    return sum(parts.values()), parts
