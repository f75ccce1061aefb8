"""Training: the loop, early stopping, checkpoints and whole runs."""

from famerec.runconfig import resolve_config
from famerec.runs.dir import RunDir
from famerec.runs.load import TrainedRun, load_run, resolve_device
from famerec.training.pipeline import train_run
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
