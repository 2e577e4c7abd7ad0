"""Training settings beyond full supervision: what a setting adds to the data, the losses and the step
(self-supervised depth from video, domain adaptation)."""

from scenemtl.settings import monodepth  # noqa: F401  (registers the objective self_supervised_depth)
from scenemtl.settings import adaptation  # noqa: F401,E402  (registers adversarial and min_entropy)
