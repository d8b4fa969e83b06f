"""Callbacks of a training run: best validation, preemption, W&B."""
