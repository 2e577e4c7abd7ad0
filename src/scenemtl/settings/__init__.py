"""Training settings beyond full supervision: what a setting adds to the data, the losses and the step
(self-supervised depth from video, domain adaptation)."""
