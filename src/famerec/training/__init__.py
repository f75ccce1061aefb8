"""Training: the loop, early stopping, checkpoints and whole runs."""

from famerec.rundir import RunDir
from famerec.runs import TrainedRun, load_run, resolve_device
from famerec.training.pipeline import resolve_config, train_run
from famerec.training.trainer import Trainer

__all__ = [
    "RunDir",
    "TrainedRun",
    "Trainer",
    "load_run",
    "resolve_config",
    "resolve_device",
    "train_run",
]
