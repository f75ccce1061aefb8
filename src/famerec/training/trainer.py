"""The training loop: Adam, early stopping on validation NDCG@10, resumable checkpoints.

The test split is evaluated once, after training, with the best-validation weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from famerec.config import RunConfig
from famerec.data.batching import EvalBatches, TrainBatches, train_tensors
from famerec.data.split import LeaveOneOut
from famerec.evaluation import evaluate
from famerec.models.base import EpochContext, SequentialRecommender
from famerec.models.losses import NegativeSampler
from famerec.rundir import CHECKPOINT, WEIGHTS, RunDir, atomic_write
from famerec.runs import load_weights, resolve_device, save_weights

__all__ = ["Trainer", "TrainState", "load_weights", "resolve_device", "save_weights"]

log = logging.getLogger("famerec")

EARLY_STOPPING_METRIC = "NDCG@10"


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


class Trainer:
    def __init__(
        self,
        model: SequentialRecommender,
        config: RunConfig,
        split: LeaveOneOut,
        run_dir: RunDir,
        device: torch.device,
        progress: bool = True,
    ):
        self.config = config
        self.train_config = config.train
        self.run_dir = run_dir
        self.device = device
        self.progress = progress
        self.amp_dtype = autocast_dtype(config.train.precision, device)
        self.model = model.to(device)
        self.model.loss_chunk = config.train.loss_chunk
        # torch.compile of a module compiles forward() only; the training step calls loss().
        self.loss_fn = (
            torch.compile(self.model.loss, dynamic=True) if config.train.compile else model.loss
        )
        self.optimizer = torch.optim.Adam(
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
        self.train_batches = TrainBatches(
            tensors,
            config.train.batch_size,
            self.shuffle_rng,
            split_by_length=config.train.bucketing,
            device=device,
        )
        self.valid_batches = EvalBatches(split.valid, max_len, config.train.eval_batch_size, device)
        self.test_batches = EvalBatches(split.test, max_len, config.train.eval_batch_size, device)
        self.state = TrainState()

    # -- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "state": vars(self.state),
            "torch_rng": torch.get_rng_state(),
            "shuffle_rng": self.shuffle_rng.get_state(),
        }
        if self.device.type == "cuda":
            payload["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        atomic_write(self.run_dir / CHECKPOINT, lambda tmp: torch.save(payload, tmp))

    def load_checkpoint(self) -> bool:
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            return False
        payload = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = TrainState(**payload["state"])
        torch.set_rng_state(payload["torch_rng"].cpu())
        self.shuffle_rng.set_state(payload["shuffle_rng"].cpu())
        if "cuda_rng" in payload and self.device.type == "cuda":
            torch.cuda.set_rng_state(payload["cuda_rng"].cpu(), self.device)
        self.run_dir.truncate_log(self.state.epoch)
        log.info("resumed %s after epoch %d", self.run_dir, self.state.epoch)
        return True

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
            batch_positions = batch.positions
            batch = self.model.transform_batch(batch)
            with torch.autocast(
                self.device.type,
                dtype=self.amp_dtype or torch.bfloat16,
                enabled=self.amp_dtype is not None,
            ):
                losses = self.loss_fn(batch)
            if not isinstance(losses, dict):
                losses = {"loss": losses}
            loss = sum(losses.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
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
        means = {name: float(value) / max(positions, 1) for name, value in loss_sums.items()}
        return means, time.perf_counter() - started

    def evaluate(self, batches: EvalBatches, return_ranks: bool = False):
        return evaluate(
            self.model,
            batches,
            exclude_seen=not self.train_config.keep_seen,
            autocast_dtype=self.amp_dtype,
            return_ranks=return_ranks,
        )

    def fit(self, resume: bool = False, stop_after: int | None = None) -> TrainState:
        """Train to early stop (or `epochs`); `stop_after` ends early after that epoch, as an
        interruption would (used to test resuming)."""
        if resume:
            self.load_checkpoint()
        config = self.train_config
        while self.state.epoch < config.epochs and self.state.bad_epochs < config.patience:
            epoch = self.state.epoch + 1
            context = EpochContext(
                epoch, self.train_tensors, self.device, config.batch_size, self.progress
            )
            hook_started = time.perf_counter()
            epoch_fields = self.model.on_epoch_start(context)
            hook_seconds = time.perf_counter() - hook_started
            losses, seconds = self.train_epoch(epoch)
            seconds += hook_seconds  # an epoch's cost includes its hook (e.g. clustering)
            loss = losses["loss"]
            eval_started = time.perf_counter()
            valid = self.evaluate(self.valid_batches)
            eval_seconds = time.perf_counter() - eval_started
            metric = valid[EARLY_STOPPING_METRIC]
            improved = metric > self.state.best_metric
            if improved:
                self.state.best_metric, self.state.best_epoch = metric, epoch
                self.state.bad_epochs = 0
                save_weights(self.model, self.run_dir / WEIGHTS)
            else:
                self.state.bad_epochs += 1
            self.state.epoch = epoch
            self.state.train_seconds += seconds
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
                "positions_per_second": round(self.num_positions / seconds, 1),
                "valid": {k: round(v, 6) for k, v in valid.items()},
                "best": improved,
                **epoch_fields,
            }
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
            if stop_after is not None and epoch >= stop_after:
                break
        return self.state

    def test_best(self, return_ranks: bool = False) -> tuple:
        """Validation and test metrics of the best-validation weights (the only test pass);
        with `return_ranks`, each as (metrics, per-user target ranks)."""
        load_weights(self.model, self.run_dir / WEIGHTS)
        return (
            self.evaluate(self.valid_batches, return_ranks),
            self.evaluate(self.test_batches, return_ranks),
        )
