"""Data-parallel training on PyTorch's own engine (torch.distributed), for runs started by
`torchrun --nproc_per_node P -m famerec train ...`.

Without torchrun (WORLD_SIZE absent or 1) nothing here runs: `join` returns `ONE_PROCESS`,
whose methods hand back exactly what the single-process trainer used before.

Under torchrun, every process loads the same data and builds the same model, and:

* batches: every process draws the same shuffled batches from the same seeded generator (its
  state is in the checkpoint), so they agree on each global batch of `batch_size` sequences;
  process r computes the r-th of P near-equal slices of the batch's rows (in parts of similar
  length, as one process would). Where a batch has fewer rows than processes, a process without
  rows computes a stand-in row with weight 0, so that every process takes part in every step.
* loss: a model's loss is the mean over its batch's real positions; process r multiplies it by
  P * n_r / N (n_r its real positions, N the global batch's), so that the mean of the processes'
  gradients, which DistributedDataParallel computes, is the gradient of the global batch's mean
  loss: the single-process gradient of the same batch. Named losses are weighted alike. This is
  exact for losses that are means over real positions (the next-item cross-entropy: SASRec,
  FAME, GRU4Rec, CORE, ...); losses over other units (BERT4Rec's masked positions, the contrastive
  terms of CL4SRec, DuoRec and ICLRec, whose negatives are the other sequences of the batch: here
  of the process's slice) get the usual data-parallel approximation, as do `--loss sampled`
  negatives, drawn per process. The logged training loss is summed over the processes.
* gradients: DistributedDataParallel wraps a small module whose forward is `model.loss(batch)`
  (DDP hooks forward; named losses come back as a dict). `find_unused_parameters=True` because
  parameters may get no gradient in a step: FAME's `--freeze-epochs` sets requires_grad off for
  some epochs. DDP is built before any hook runs, while every parameter requires a gradient, so
  that it all-reduces every parameter; a parameter that no process used keeps no gradient, as
  in one process, and Adam skips it. Buffers are not broadcast: the hooks compute them (ICLRec's
  intents) identically on every process.
* randomness: before each epoch's hook, process 0 draws a seed from its global torch generator
  (the one checkpoints save) and every process seeds its generators with it, so hooks that draw
  random numbers (ICLRec's k-means) compute the same on every process; after the hook, process r
  reseeds with that seed + 1 + r, so dropout and augmentations differ between processes (as
  they differ between the rows of one batch in one process). A run therefore repeats exactly
  for a given process count, but not across process counts.
* evaluation: each process scores every P-th evaluation batch; the per-user ranks are summed
  over the processes and the metrics added up in the single-process order, so every process
  gets exactly the single-process metrics (`famerec.evaluation.evaluate(shard=...)`), and so
  the same early-stopping decisions.
* files: process 0 alone writes the run directory (config, log, checkpoints, weights, metrics);
  the others read it (checkpoint on `--resume`, best weights for the test, the SASRec run of
  `--pretrain`) after a barrier. Every node must see `--out` (and the data) at the same path.
  A checkpoint holds the global state (weights, optimizer, epoch, early stopping, the shuffle
  generator, process 0's torch generator), so `--resume` works with another process count;
  the other processes' dropout generators are not saved.

Each process uses `gloo` on the CPU and `nccl` with cuda:LOCAL_RANK on CUDA.
"""

from __future__ import annotations

import atexit
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from famerec.data.batching import TrainBatch, TrainBatches, TrainTensors
from famerec.errors import ConfigError, FamerecError
from famerec.runs.load import resolve_device

__all__ = ["ONE_PROCESS", "OneProcess", "Processes", "ShardedTrainBatches", "join", "leave"]

T = TypeVar("T")
LossFn = Callable[[Any], Any]
# DDP without broadcasting buffers before each forward (torch 2.13 renamed the flag).
NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


class OneProcess:
    """A run in one process: every method gives what the single-process trainer always did."""

    rank = 0
    world_size = 1
    local_world_size = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory."""
        return self.rank == 0

    def own_device(self, device: torch.device) -> torch.device:
        """The device this process computes on, for a run on `device`."""
        return device

    def barrier(self) -> None:
        """Wait until every process got here (after process 0 wrote files the others read)."""

    def on_main(self, action: Callable[[], T]) -> T:
        """Run `action` on process 0 only; every process gets its result (pickled), or raises
        its FamerecError."""
        return action()

    def sum_(self, tensor: torch.Tensor) -> None:
        """Add `tensor` up over the processes, in place."""

    def sum_losses(
        self, sums: dict[str, torch.Tensor], positions: int
    ) -> tuple[dict[str, torch.Tensor], int]:
        """An epoch's loss sums and real positions, over all processes."""
        return sums, positions

    def train_batches(
        self,
        tensors: TrainTensors,
        batch_size: int,
        generator: torch.Generator,
        split_by_length: bool,
        device: torch.device,
    ) -> TrainBatches:
        """Each epoch's shuffled batches of `batch_size` sequences, this process's share."""
        return TrainBatches(
            tensors, batch_size, generator, split_by_length=split_by_length, device=device
        )

    def wrap_loss(self, model: nn.Module, loss_fn: LossFn) -> LossFn:
        """The training step's loss function (gradients averaged over the processes)."""
        return loss_fn

    @contextmanager
    def same_random_numbers(self) -> Iterator[None]:
        """Within, every process draws the same random numbers (for the epoch hook)."""
        yield


ONE_PROCESS = OneProcess()


class LossModule(nn.Module):
    """DistributedDataParallel hooks a module's forward; the training step is `model.loss`."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Any:
        return self.loss_fn(batch)


class ShardedTrainBatches(TrainBatches):
    """The shuffled batches of every process (same generator state), each cut to this process's
    slice of its rows, weighted by its share of the batch's real positions."""

    def __init__(self, *args: Any, rank: int, world_size: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.rank, self.world_size = rank, world_size

    def batch(self, rows: torch.Tensor) -> TrainBatch:
        total = int(self.lengths[rows].sum())
        mine = rows.tensor_split(self.world_size)[self.rank]
        if len(mine) == 0:  # fewer rows than processes: take part in the step, add nothing
            return replace(super().batch(rows[:1]), loss_weight=0.0)
        share = super().batch(mine)
        return replace(share, loss_weight=self.world_size * share.positions / total)


class Processes(OneProcess):
    """This process's place in a torchrun job whose process group is initialized."""

    def __init__(self, rank: int, world_size: int, local_world_size: int, device: torch.device):
        self.rank, self.world_size = rank, world_size
        self.local_world_size = local_world_size
        self.device = device  # where collectives run: nccl needs CUDA tensors

    def own_device(self, device: torch.device) -> torch.device:
        if device.type != self.device.type:
            raise ConfigError(
                f"this torchrun job runs on {self.device.type}; a run in it cannot use {device}"
            )
        return self.device

    def barrier(self) -> None:
        dist.barrier()

    def on_main(self, action: Callable[[], T]) -> T:
        outcome: list[Any] = [None, None]  # its FamerecError, its result
        if self.is_main:
            try:
                outcome[1] = action()
            except FamerecError as error:
                outcome[0] = error
        dist.broadcast_object_list(outcome, src=0)
        if outcome[0] is not None:
            raise outcome[0]
        return outcome[1]

    def sum_(self, tensor: torch.Tensor) -> None:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)

    def sum_losses(
        self, sums: dict[str, torch.Tensor], positions: int
    ) -> tuple[dict[str, torch.Tensor], int]:
        names = list(sums)
        packed = torch.stack(
            [sums[name].double() for name in names]
            + [torch.tensor(float(positions), dtype=torch.float64, device=self.device)]
        )
        self.sum_(packed)
        return {name: packed[i] for i, name in enumerate(names)}, int(packed[-1])

    def train_batches(self, *args: Any, **kwargs: Any) -> TrainBatches:
        return ShardedTrainBatches(*args, rank=self.rank, world_size=self.world_size, **kwargs)

    def wrap_loss(self, model: nn.Module, loss_fn: LossFn) -> LossFn:
        return DistributedDataParallel(
            LossModule(model, loss_fn),
            device_ids=None,  # the batches are already on this process's device
            find_unused_parameters=True,
            **NO_BUFFER_SYNC,
        )

    @contextmanager
    def same_random_numbers(self) -> Iterator[None]:
        seed = torch.zeros((), dtype=torch.int64, device=self.device)
        if self.is_main:
            seed.fill_(int(torch.randint(2**62, ())))
        dist.broadcast(seed, src=0)
        shared = int(seed)
        torch.manual_seed(shared)  # the CPU generator and every CUDA device's
        try:
            yield
        finally:
            torch.manual_seed(shared + 1 + self.rank)


_joined: Processes | None = None


def environment_world_size() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def environment_rank() -> int:
    """This process's rank in a torchrun job (0 without torchrun, or where unreadable)."""
    try:
        return int(os.environ.get("RANK", "0")) if environment_world_size() > 1 else 0
    except (ValueError, ConfigError):
        return 0


def join(device: str) -> OneProcess:
    """This process's part of the job: `ONE_PROCESS` without torchrun (WORLD_SIZE absent or
    1); under torchrun, the process group, joined on first use (gloo on the CPU; nccl on
    CUDA, where this process computes on cuda:LOCAL_RANK) for `device` (auto, cpu, cuda)."""
    global _joined
    world_size = environment_world_size()
    if world_size <= 1:
        return ONE_PROCESS
    if _joined is None:
        _joined = _init_process_group(resolve_device(device), world_size)
    return _joined


def _init_process_group(device: torch.device, world_size: int) -> Processes:
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    except (KeyError, ValueError) as error:
        raise ConfigError(
            f"WORLD_SIZE={world_size} but RANK or LOCAL_RANK is missing or not a number ({error}):"
            " start distributed runs with torchrun"
        ) from None
    if device.type == "cuda":
        if device.index is not None:
            raise ConfigError(
                f"--device {device}: under torchrun each process uses cuda:LOCAL_RANK; "
                "pass --device cuda or auto"
            )
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} needs a CUDA device {local_rank}, but this node has "
                f"{torch.cuda.device_count()}: start at most that many processes per node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    atexit.register(leave)
    return Processes(rank, world_size, local_world_size, device)


def leave() -> None:
    """Leave the process group (at exit; tests that join several times call it)."""
    global _joined
    if dist.is_initialized():
        if dist.get_backend() == "gloo":
            # Every rank past its last collective before any tears the group down: a rank
            # leaving early once aborted another at exit ("terminate called without an active
            # exception") on a loaded CPU. Bounded, so a rank that failed cannot hang the rest.
            with suppress(RuntimeError):
                dist.monitored_barrier(timeout=timedelta(seconds=60))
        dist.destroy_process_group()
    _joined = None
