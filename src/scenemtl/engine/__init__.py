"""Training, evaluation, prediction, checkpoints and logging."""
