"""Training: the loop, early stopping, checkpoints and run directories."""

from famerec.training.pipeline import TrainedRun, load_run, resolve_config, train_run
from famerec.training.rundir import RunDir
from famerec.training.trainer import Trainer, resolve_device

__all__ = [
    "RunDir",
    "TrainedRun",
    "Trainer",
    "load_run",
    "resolve_config",
    "resolve_device",
    "train_run",
]
