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

`--aux-warmup-steps N` schedules a model's objective rather than its rate: every named loss term
but the next-item one (a contrastive or intent term) is weighted by step / N over the first N
optimizer steps, then fully (`ramp_auxiliary`). At initialization the contrastive terms'
gradients are 20-30x the next-item loss's (CL4SRec, ICLRec on Beauty), so Adam's first steps
mostly serve them; the ramp lets the next-item loss move first and ends at the original's
objective. The step count comes from the run's state, so a resumed run continues the ramp.
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


def ramp_auxiliary(
    losses: dict[str, torch.Tensor], step: int, ramp_steps: int
) -> dict[str, torch.Tensor]:
    """`losses` with every term but "next_item" weighted by min(1, step / ramp_steps), `step`
    counted from 1 (the first step already carries a little of them). Losses without a
    "next_item" term are returned as they are."""
    factor = min(1.0, step / ramp_steps)
    if factor >= 1.0 or "next_item" not in losses:
        return losses
    return {name: v if name == "next_item" else v * factor for name, v in losses.items()}
