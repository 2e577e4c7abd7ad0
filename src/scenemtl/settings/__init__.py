"""Training settings beyond full supervision: what a setting adds to the data, the losses and the step
(self-supervised depth from video, domain adaptation)."""

from scenemtl.settings import monodepth  # noqa: F401  (registers the objective self_supervised_depth)
