"""The training loop: Adam, early stopping on validation NDCG@10, resumable checkpoints.

The test split is evaluated once, after training, with the best-validation weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from famerec.config import RunConfig
from famerec.data.batching import EvalBatches, TrainBatches, train_tensors
from famerec.data.split import LeaveOneOut
from famerec.errors import ConfigError
from famerec.evaluation import evaluate
from famerec.models.base import SequentialRecommender
from famerec.training.rundir import CHECKPOINT, WEIGHTS, RunDir, atomic_write

log = logging.getLogger("famerec")

EARLY_STOPPING_METRIC = "NDCG@10"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA by default; fp32 on the CPU unless bf16 is asked for."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def save_weights(model: SequentialRecommender, path) -> None:
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))


def load_weights(model: SequentialRecommender, path) -> None:
    model.load_state_dict(load_file(str(path)))


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
        pretrained: list[str] | None = None,
    ):
        """`pretrained`: names of parameters copied from another run; with --freeze-epochs
        they stay fixed during the first epochs while the new parts learn."""
        self.config = config
        self.pretrained = [p for n, p in model.named_parameters() if n in set(pretrained or [])]
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

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training batches; returns (mean loss per position, seconds)."""
        self.model.train()
        frozen = epoch <= self.train_config.freeze_epochs
        for parameter in self.pretrained:
            parameter.requires_grad_(not frozen)
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
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
            with torch.autocast(
                self.device.type,
                dtype=self.amp_dtype or torch.bfloat16,
                enabled=self.amp_dtype is not None,
            ):
                loss = self.loss_fn(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach().float() * batch.positions
            positions += batch.positions
            if self.progress and (step % 20 == 0 or step == len(self.train_batches)):
                elapsed = time.perf_counter() - started
                bar.set_postfix(
                    loss=f"{float(loss_sum) / positions:.4f}",
                    pos_per_s=f"{positions / elapsed:,.0f}",
                )
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return float(loss_sum) / max(positions, 1), time.perf_counter() - started

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
            loss, seconds = self.train_epoch(epoch)
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
                "train_seconds": round(seconds, 3),
                "eval_seconds": round(eval_seconds, 3),
                "positions_per_second": round(self.num_positions / seconds, 1),
                "valid": {k: round(v, 6) for k, v in valid.items()},
                "best": improved,
                "pretrained_frozen": bool(self.pretrained) and epoch <= config.freeze_epochs,
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
