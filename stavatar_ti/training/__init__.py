"""Training: the scene (data + models), the loop, checkpoints and evaluation."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .trainer import Trainer, TrainingError

__all__ = ["CheckpointError", "Trainer", "TrainingError", "load_checkpoint", "save_checkpoint"]
