"""Callbacks of a training run: best validation, checkpoints, preemption, freezing, W&B."""
