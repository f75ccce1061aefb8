"""Learning-rate schedules: warmup, then constant, linear or cosine decay to a floor, or step decay.

    famerec train --lr 3e-3 --warmup-steps 200 --lr-schedule cosine --epochs 30 --lr-floor 0.05
    famerec train --lr-schedule step --step-epochs 3 --step-factor 0.1   # the session originals'

The rate is a multiple of the peak rate `--lr`, given per optimizer step (`rate_factor`), and
`torch.optim.lr_scheduler.LambdaLR` applies it: the trainer calls the scheduler after every
optimizer step and saves its state in the checkpoint, so a resumed run continues the schedule
where it stopped. Step decay counts whole epochs (`--step-epochs` x the epoch's steps), so its
rate changes only between epochs, as in the originals that call their scheduler once an epoch.

The decay follows the warmup and ends after `--decay-epochs` (0: `--epochs`), warmup included;
the rate then stays at the floor. Early stopping may end a run before the decay does.
"""

from __future__ import annotations

import math

import torch

from famerec.config import TrainConfig


def rate_factor(step: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """The rate of optimizer step `step` (counted from 0) as a multiple of the peak rate."""
    warmup = config.warmup_steps
    if step < warmup:
        return (step + 1) / warmup  # linear warmup: the first step already moves
    if config.lr_schedule == "constant":
        return 1.0
    if config.lr_schedule == "step":
        return config.step_factor ** (step // (config.step_epochs * steps_per_epoch))
    decay_steps = max(1, (config.decay_epochs or config.epochs) * steps_per_epoch - warmup)
    done = min(1.0, (step - warmup) / decay_steps)  # share of the decay behind us
    floor = config.lr_floor
    if config.lr_schedule == "linear":
        return floor + (1.0 - floor) * (1.0 - done)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * done))  # cosine


def scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR that sets each step's rate; call its `step()` after every optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: rate_factor(step, config, steps_per_epoch)
    )
