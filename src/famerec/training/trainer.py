"""The training loop: Adam, early stopping on validation NDCG@10, resumable checkpoints.

The test split is evaluated once, after training, with the best-validation weights.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from famerec.data.batching import EvalBatches, TrainBatches, train_tensors
from famerec.data.split import LeaveOneOut
from famerec.errors import FamerecError
from famerec.evaluation import evaluate
from famerec.models.base import EpochContext, SequentialRecommender
from famerec.models.losses import NegativeSampler
from famerec.runconfig import RunConfig
from famerec.runs.dir import CHECKPOINT, WEIGHTS, RunDir, atomic_write
from famerec.runs.load import load_weights, resolve_device, save_weights
from famerec.training.distributed import ONE_PROCESS, OneProcess
from famerec.training.schedule import ramp_auxiliary, scheduler
from famerec.training.stopping import StoppingRule

__all__ = ["Trainer", "TrainState", "load_weights", "resolve_device", "save_weights"]

log = logging.getLogger("famerec")

SCORE_BUDGET = 2**26  # most scores in one (rows x items) matrix: 256 MB of float32

EARLY_STOPPING_METRIC = "NDCG@10"
# What applying a loaded payload raises when it is not a famerec checkpoint (other keys, other
# kinds of values) or not this run's (other shapes).
UNFIT = (KeyError, TypeError, AttributeError, IndexError, ValueError, RuntimeError)


def read_checkpoint(path: Path, device: torch.device) -> dict:
    """A checkpoint's content, read as tensors and plain values only (never code); one line
    that tells a file cut short from a file that is no famerec checkpoint at all."""
    try:
        with warnings.catch_warnings():  # torch's notes on foreign pickles: the line says it
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:  # weights_only met more than tensors and plain values
        raise FamerecError(
            f"cannot resume from {path}: it is not a famerec checkpoint (not a file of tensors "
            "and plain values); start the run over with --overwrite"
        ) from None
    except Exception as error:  # what torch's readers meet in bytes cut short, or in none
        raise FamerecError(
            f"cannot resume from {path}: the file is damaged ({type(error).__name__}, "
            "e.g. cut short by a full disk); start the run over with --overwrite"
        ) from None
    if not isinstance(payload, dict):
        raise FamerecError(
            f"cannot resume from {path}: it is not a famerec checkpoint (it holds a "
            f"{type(payload).__name__}); start the run over with --overwrite"
        )
    return payload


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA by default; fp32 on the CPU unless bf16 is asked for."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


@dataclass
class TrainState:
    """Everything that must survive an interruption, besides model and optimizer."""

    epoch: int = 0  # last completed epoch
    best_epoch: int = 0
    best_metric: float = float("-inf")
    bad_epochs: int = 0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0  # wall time of every sitting up to the last checkpoint
    steps: int = 0  # optimizer steps so far
    stopped: bool = False  # the stopping rule ended the run


class Trainer:
    def __init__(
        self,
        model: SequentialRecommender,
        config: RunConfig,
        split: LeaveOneOut,
        run_dir: RunDir,
        device: torch.device,
        progress: bool = True,
        processes: OneProcess = ONE_PROCESS,
    ):
        """`processes`: this process's part of a torchrun job (`training.distributed`); it
        trains on its share of each batch, and only process 0 writes `run_dir`."""
        self.sitting_started = time.perf_counter()
        self.config = config
        self.processes = processes
        self.train_config = config.train
        self.run_dir = run_dir
        self.device = device
        self.progress = progress
        self.amp_dtype = autocast_dtype(config.train.precision, device)
        self.model = model.to(device)
        # Bound the (rows x items) score matrices of the loss and of evaluation, so that memory
        # stays flat on catalogs of millions of items (chunking does not change the results).
        rows = max(1, SCORE_BUDGET // (model.num_items + 1))
        self.model.loss_chunk = min(config.train.loss_chunk, rows) if config.train.loss_chunk else 0
        eval_batch_size = min(config.train.eval_batch_size, rows)
        # torch.compile of a module compiles forward() only; the training step calls loss().
        self.loss_fn = processes.wrap_loss(
            self.model,
            torch.compile(self.model.loss, dynamic=True) if config.train.compile else model.loss,
        )
        decoupled = config.train.optimizer == "adamw"
        optimizer_type = torch.optim.AdamW if decoupled else torch.optim.Adam
        self.optimizer = optimizer_type(
            model.parameters(),
            lr=config.train.lr,
            betas=(0.9, 0.999),
            weight_decay=config.train.weight_decay,
        )
        self.shuffle_rng = torch.Generator().manual_seed(config.train.seed)
        max_len = config.model.max_len
        tensors = train_tensors(split.train, max_len)
        self.train_tensors = tensors
        if config.train.loss == "sampled":
            counts = torch.bincount(tensors.targets.flatten(), minlength=model.num_items + 1)
            self.model.negative_sampler = NegativeSampler(
                counts[1:], config.train.negatives, config.train.negative_sampling
            ).to(device)
        self.num_positions = tensors.num_positions
        self.train_batches: TrainBatches = processes.train_batches(
            tensors,
            config.train.batch_size,
            self.shuffle_rng,
            split_by_length=config.train.bucketing,
            device=device,
        )
        # The rate of every optimizer step (training.schedule); stepped after each one.
        self.scheduler = scheduler(self.optimizer, config.train, len(self.train_batches))
        self.valid_batches = EvalBatches(split.valid, max_len, eval_batch_size, device)
        self.test_batches = EvalBatches(split.test, max_len, eval_batch_size, device)
        self.state = TrainState()
        self.rule = StoppingRule.from_config(config.train)
        self.earlier_sittings = 0.0  # wall seconds of the sittings before this one
        self.last_lr = config.train.lr  # the rate of the last optimizer step

    # -- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": vars(self.state),
            "torch_rng": torch.get_rng_state(),
            "shuffle_rng": self.shuffle_rng.get_state(),
        }
        if self.device.type == "cuda":
            payload["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write(self.run_dir / CHECKPOINT, buffer.getvalue())

    def load_checkpoint(self) -> bool:
        """Restore the last completed epoch; without a checkpoint, start from epoch 0. Either
        way the log keeps only the epochs that the restored state has seen."""
        path = self.run_dir / CHECKPOINT
        found = path.exists()
        if found:
            self.restore(read_checkpoint(path, self.device), path)
            log.info("resumed %s after epoch %d", self.run_dir, self.state.epoch)
        if self.processes.is_main:
            self.run_dir.truncate_log(self.state.epoch)
        return found

    def restore(self, payload: dict, path: Path | str = "the checkpoint") -> None:
        """Continue from a checkpoint's `payload`; one line if it is not this run's."""
        try:
            self._restore(payload)
        except UNFIT as error:
            raise FamerecError(
                f"cannot resume from {path}: it is not a famerec checkpoint of this run's model "
                f"and settings ({type(error).__name__}); start the run over with --overwrite"
            ) from None

    def _restore(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.model.by_column_moments(self.optimizer)  # checkpoints of older attribute tables
        state = dict(payload["state"])
        state.setdefault("steps", state["epoch"] * len(self.train_batches))  # older checkpoints
        if "wall_seconds" not in state:  # older checkpoints: their log's time, a lower bound
            state["wall_seconds"] = self.run_dir.logged_seconds(state["epoch"])
        self.state = TrainState(**state)
        # Older checkpoints (before schedules) ran at a constant rate: their step count is all
        # the schedule needs.
        self.scheduler.load_state_dict(
            payload.get("scheduler", {"last_epoch": self.state.steps, "_step_count": 1})
        )
        self.earlier_sittings = self.state.wall_seconds
        torch.set_rng_state(payload["torch_rng"].cpu())
        self.shuffle_rng.set_state(payload["shuffle_rng"].cpu())
        if "cuda_rng" in payload and self.device.type == "cuda":
            torch.cuda.set_rng_state(payload["cuda_rng"].cpu(), self.device)

    @property
    def wall_seconds(self) -> float:
        """Wall time of the run so far, over every sitting: the earlier ones up to their last
        checkpoint (an epoch cut short is lost with its time), this one since it began."""
        return self.earlier_sittings + time.perf_counter() - self.sitting_started

    # -- loop --------------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> tuple[dict[str, float], float]:
        """One pass over the training batches; returns ({loss name: mean per position} with
        "loss" their sum, seconds)."""
        self.model.train()
        started = time.perf_counter()
        loss_sums: dict[str, torch.Tensor] = {}
        positions = 0
        bar = tqdm(
            self.train_batches,
            desc=f"epoch {epoch}",
            unit="batch",
            leave=False,
            disable=not self.progress,
            dynamic_ncols=True,
        )
        for step, batch in enumerate(bar, start=1):
            weight = batch.loss_weight  # 1, but for a process's share of a batch
            batch_positions = batch.positions if weight else 0  # a stand-in row counts for none
            batch = self.model.transform_batch(batch)
            with torch.autocast(
                self.device.type,
                dtype=self.amp_dtype or torch.bfloat16,
                enabled=self.amp_dtype is not None,
            ):
                losses = self.loss_fn(batch)
            if not isinstance(losses, dict):
                losses = {"loss": losses}
            elif self.config.train.aux_warmup_steps:
                losses = ramp_auxiliary(
                    losses, self.state.steps + step, self.config.train.aux_warmup_steps
                )
            loss = sum(losses.values())
            self.optimizer.zero_grad(set_to_none=True)
            (loss if weight == 1.0 else loss * weight).backward()
            self.optimizer.step()
            self.last_lr = self.optimizer.param_groups[0]["lr"]  # this step's rate
            self.scheduler.step()
            if len(losses) > 1:
                losses = {"loss": loss, **losses}
            for name, value in losses.items():
                total = value.detach().float() * batch_positions
                loss_sums[name] = loss_sums[name] + total if name in loss_sums else total
            positions += batch_positions
            if self.progress and (step % 20 == 0 or step == len(self.train_batches)):
                elapsed = time.perf_counter() - started
                bar.set_postfix(
                    loss=f"{float(loss_sums['loss']) / positions:.4f}",
                    pos_per_s=f"{positions / elapsed:,.0f}",
                )
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        loss_sums, positions = self.processes.sum_losses(loss_sums, positions)
        means = {name: float(value) / max(positions, 1) for name, value in loss_sums.items()}
        return means, time.perf_counter() - started

    def evaluate(self, batches: EvalBatches, desc: str = "validation", return_ranks: bool = False):
        return evaluate(
            self.model,
            batches,
            exclude_seen=not self.train_config.keep_seen,
            autocast_dtype=self.amp_dtype,
            progress=self.progress,
            desc=desc,
            return_ranks=return_ranks,
            shard=self.processes,
        )

    def fit(
        self, resume: bool = False, stop_after: int | None = None, deadline: float | None = None
    ) -> TrainState:
        """Train to early stop (or `epochs`); `stop_after` ends early after that epoch, as an
        interruption would (used to test resuming). With a `deadline` (`time.monotonic()`),
        an epoch starts only if it should end before it, as long as the epochs so far took;
        the run then pauses between epochs, resumable, and no time is lost to a cut epoch."""
        if resume:
            self.load_checkpoint()
        config = self.train_config
        logged = self.last_logged_epoch_seconds() if deadline is not None else None
        longest = 0.0  # this sitting's longest epoch (the log's may be from another machine)
        while self.state.epoch < config.epochs and not self.state.stopped:
            epoch = self.state.epoch + 1
            estimate = longest or logged  # the log's last epoch until this sitting timed one
            if not self.epoch_fits(deadline, estimate):
                log.info(
                    "paused %s: an epoch (about %.0fs) would end past the time limit",
                    f"after epoch {self.state.epoch}" if self.state.epoch else "before epoch 1",
                    estimate,
                )
                break
            epoch_started = time.perf_counter()
            losses, seconds, epoch_fields = self.train_one_epoch(epoch)
            valid, eval_seconds, improved = self.validate(epoch)
            self.end_epoch(epoch, losses, seconds, valid, eval_seconds, improved, epoch_fields)
            longest = max(longest, time.perf_counter() - epoch_started)
            if stop_after is not None and epoch >= stop_after:
                break
        self.warn_if_still_improving()
        return self.state

    def train_one_epoch(self, epoch: int) -> tuple[dict[str, float], float, dict[str, Any]]:
        """The model's epoch hook, then one pass over the training batches: (losses, seconds
        with the hook's, the fields the hook adds to the log); stops on a diverged loss."""
        context = EpochContext(
            epoch, self.train_tensors, self.device, self.train_config.batch_size, self.progress
        )
        hook_started = time.perf_counter()
        with self.processes.same_random_numbers():
            epoch_fields = self.model.on_epoch_start(context)
        hook_seconds = time.perf_counter() - hook_started
        losses, seconds = self.train_epoch(epoch)
        self.check_finite(epoch, losses["loss"])
        self.state.steps += len(self.train_batches)
        return losses, seconds + hook_seconds, epoch_fields  # an epoch's cost includes its hook

    def validate(self, epoch: int) -> tuple[dict[str, float], float, bool]:
        """Validation metrics, their seconds, and whether this epoch is the best so far (its
        weights are then saved)."""
        eval_started = time.perf_counter()
        valid = self.evaluate(self.valid_batches)
        eval_seconds = time.perf_counter() - eval_started
        metric = valid[EARLY_STOPPING_METRIC]
        improved = metric > self.state.best_metric
        if improved:
            self.state.best_metric, self.state.best_epoch = metric, epoch
            self.state.bad_epochs = 0
            if self.processes.is_main:
                save_weights(self.model, self.run_dir / WEIGHTS)
        else:
            self.state.bad_epochs += 1
        return valid, eval_seconds, improved

    def end_epoch(
        self,
        epoch: int,
        losses: dict[str, float],
        seconds: float,
        valid: dict[str, float],
        eval_seconds: float,
        improved: bool,
        epoch_fields: dict[str, Any],
    ) -> None:
        """Advance the state and the early-stopping rule, append the epoch to log.jsonl, save
        the checkpoint and say one line."""
        loss = losses["loss"]
        self.state.epoch = epoch
        self.state.train_seconds += seconds
        self.state.wall_seconds = self.wall_seconds
        stopping = self.rule.state(epoch, self.state.best_epoch, self.state.steps)
        self.state.stopped = stopping["stop"]
        record = {
            "epoch": epoch,
            "train_loss": round(loss, 6),
            **(
                {"train_losses": {k: round(v, 6) for k, v in losses.items()}}
                if len(losses) > 1
                else {}
            ),
            "train_seconds": round(seconds, 3),
            "eval_seconds": round(eval_seconds, 3),
            "lr": float(f"{self.last_lr:.6g}"),  # the rate of the epoch's last step
            "positions_per_second": round(self.num_positions / seconds, 1),
            "valid": {k: round(v, 6) for k, v in valid.items()},
            "best": improved,
            **epoch_fields,
            "stopping": stopping,
        }
        if self.processes.is_main:
            self.run_dir.append_log(record)
            self.save_checkpoint()
        log.info(
            "epoch %3d  loss %.4f  valid HR@10 %.4f NDCG@10 %.4f  (%.1fs train, %.1fs eval)%s",
            epoch,
            loss,
            valid["HR@10"],
            valid["NDCG@10"],
            seconds,
            eval_seconds,
            "  *best" if improved else "",
        )

    def warn_if_still_improving(self) -> None:
        """At the --epochs cap with the best epoch within the patience window: say that more
        epochs may find a better model."""
        config = self.train_config
        wait = self.rule.wait(self.state.best_epoch)
        at_cap = self.state.epoch >= config.epochs and not self.state.stopped
        if at_cap and config.epochs - self.state.best_epoch < wait:
            log.warning(
                "the best epoch (%d) is within the last %d epochs of --epochs %d: validation "
                "NDCG@10 may still be improving, and more --epochs may find a better model",
                self.state.best_epoch,
                wait,
                config.epochs,
            )

    def last_logged_epoch_seconds(self) -> float | None:
        """Training and validation seconds of the log's last epoch (a resumed run's estimate of
        its next one; a --pretrain run's second stage has its first stage's); None before the
        first."""
        return self.processes.on_main(self.run_dir.last_epoch_seconds)

    def epoch_fits(self, deadline: float | None, estimate: float | None) -> bool:
        """Whether an epoch of about `estimate` seconds would end before `deadline`; every
        process of a torchrun job must agree (else they would wait on each other for ever)."""
        if deadline is None or estimate is None:
            return True
        fits = torch.tensor([float(time.monotonic() + estimate <= deadline)], device=self.device)
        self.processes.sum_(fits)
        return int(fits.item()) == self.processes.world_size

    def check_finite(self, epoch: int, loss: float) -> None:
        """A NaN or infinite loss or weight means training diverged: stop before the epoch is
        recorded, so that the checkpoint, the log and the best weights stay finite."""
        if not math.isfinite(loss):
            problem = f"the train loss is {loss}"
        elif not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            problem = "the weights are no longer finite"
        else:
            return
        raise FamerecError(f"training diverged in epoch {epoch}: {problem} (try a lower --lr)")

    def test_best(self, return_ranks: bool = False) -> tuple:
        """Validation and test metrics of the best-validation weights (the only test pass);
        with `return_ranks`, each as (metrics, per-user target ranks)."""
        self.processes.barrier()  # process 0 has written them
        load_weights(self.model, self.run_dir / WEIGHTS)
        return (
            self.evaluate(self.valid_batches, return_ranks=return_ranks),
            self.evaluate(self.test_batches, desc="test", return_ranks=return_ranks),
        )
