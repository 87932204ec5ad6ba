"""Training: losses, data, configuration and the trainer (single device or DDP)."""

from cdinn.train.config import TrainConfig, load_config
from cdinn.train.losses import CompositeLoss, FourierLoss, SupervisedLoss, TransferLearningLoss, build_loss
from cdinn.train.trainer import train

__all__ = [
    "CompositeLoss",
    "FourierLoss",
    "SupervisedLoss",
    "TrainConfig",
    "TransferLearningLoss",
    "build_loss",
    "load_config",
    "train",
]
