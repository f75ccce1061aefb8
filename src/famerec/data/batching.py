"""Tensors built once, then sliced into batches: no per-sample Python work while training.

Sequences are left-padded with 0 and keep their most recent `max_len` items. Batches are
drawn at random, as usual; to avoid computing on padding, each batch is split into parts of
similar length (lengths 1, 2, 3-4, 5-8, 9-16, ...), each cut only as wide as its longest
sequence. The loss is the mean over all real positions of the batch, so the gradient is the
one of the whole random batch: only the padding is gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from famerec.data.split import PrefixSet


def left_padded(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """(users, width): the last `width` items of each `items[starts:ends]`, left-padded with 0."""
    positions = ends[:, None] - width + np.arange(width)  # (users, width)
    real = positions >= starts[:, None]
    return np.where(real, items[np.clip(positions, 0, None)], 0).astype(np.int64)


@dataclass(frozen=True)
class TrainTensors:
    inputs: torch.Tensor  # (users, max_len) item ids, left-padded
    targets: torch.Tensor  # (users, max_len) next item at each position, 0 = no loss
    lengths: torch.Tensor  # (users,) real positions per row, on the CPU

    @property
    def num_positions(self) -> int:
        return int(self.lengths.sum())


def train_tensors(train: PrefixSet, max_len: int) -> TrainTensors:
    """Inputs `seq[:-1]` and targets `seq[1:]` of each training sequence; empty rows dropped."""
    inputs = left_padded(train.items, train.starts, train.ends - 1, max_len)
    targets = left_padded(train.items, train.starts + 1, train.ends, max_len)
    lengths = (targets != 0).sum(1)
    keep = lengths > 0
    return TrainTensors(
        torch.from_numpy(inputs[keep]),
        torch.from_numpy(targets[keep]),
        torch.from_numpy(lengths[keep]),
    )


@dataclass(frozen=True)
class TrainBatch:
    """One random batch, as parts of similar length: (inputs, targets) pairs of shape (b, w)."""

    parts: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    positions: int  # real positions (targets != 0) in all parts together
    # The factor of this batch's mean loss in the training step: 1 for a whole batch. In
    # data-parallel training, the process count times this process's share of the global
    # batch's real positions (0 for a stand-in row, where a process got none of the batch).
    loss_weight: float = 1.0

    @property
    def num_sequences(self) -> int:
        return sum(inputs.shape[0] for inputs, _ in self.parts)


def length_classes(lengths: torch.Tensor) -> torch.Tensor:
    """Class c holds lengths in (2^(c-1), 2^c]: 1 -> 0, 2 -> 1, 3-4 -> 2, 5-8 -> 3, ..."""
    return torch.ceil(torch.log2(lengths.clamp(min=1).double())).long()


class TrainBatches:
    """One epoch of shuffled training batches of `batch_size` sequences.

    With `split_by_length` (the default), a batch is computed as parts of similar length;
    without it, as one part cut to its longest sequence; with `pad_to_max_len`, as one part of
    full width (the slow reference layout). All three give the same loss.
    """

    def __init__(
        self,
        tensors: TrainTensors,
        batch_size: int,
        generator: torch.Generator,
        split_by_length: bool = True,
        pad_to_max_len: bool = False,
        device: torch.device | str = "cpu",
    ):
        self.inputs = tensors.inputs.to(device)
        self.targets = tensors.targets.to(device)
        self.lengths = tensors.lengths
        self.classes = length_classes(tensors.lengths)
        self.batch_size = batch_size
        self.generator = generator
        self.split_by_length = split_by_length and not pad_to_max_len
        self.pad_to_max_len = pad_to_max_len
        self.device = torch.device(device)

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def batch_indices(self) -> list[torch.Tensor]:
        """One epoch's random batches of row indices (consumes the generator)."""
        return list(
            torch.randperm(len(self.lengths), generator=self.generator).split(self.batch_size)
        )

    def batch(self, rows: torch.Tensor) -> TrainBatch:
        """The training batch of these rows."""
        max_len = self.inputs.shape[1]
        if self.split_by_length:
            classes = self.classes[rows]
            counts = torch.bincount(classes)
            groups = rows[torch.argsort(classes, stable=True)].split(counts[counts > 0].tolist())
        else:
            groups = [rows]
        parts = []
        for group in groups:
            width = max_len if self.pad_to_max_len else int(self.lengths[group].max())
            on_device = group.to(self.device, non_blocking=True)
            parts.append(
                (
                    self.inputs[on_device, max_len - width :],
                    self.targets[on_device, max_len - width :],
                )
            )
        return TrainBatch(tuple(parts), int(self.lengths[rows].sum()))

    def __iter__(self) -> Iterator[TrainBatch]:
        for rows in self.batch_indices():
            yield self.batch(rows)


@dataclass(frozen=True)
class EvalBatch:
    inputs: torch.Tensor  # (B, width) item ids, left-padded
    targets: torch.Tensor  # (B,)
    seen_rows: torch.Tensor  # (S,) row in the batch of each seen item (for exclusion)
    seen_items: torch.Tensor  # (S,) item id


class EvalBatches:
    """Evaluation batches over all users of a PrefixSet, sorted by length to keep them narrow.

    Each batch carries the user's whole history (not only the most recent max_len items) as
    (row, item) pairs, so that seen items can be excluded from the ranking.
    """

    def __init__(
        self,
        prefixes: PrefixSet,
        max_len: int,
        batch_size: int,
        device: torch.device | str = "cpu",
    ):
        lengths = prefixes.ends - prefixes.starts
        order = np.argsort(lengths, kind="stable")
        starts, ends = prefixes.starts[order], prefixes.ends[order]
        self.inputs = torch.from_numpy(left_padded(prefixes.items, starts, ends, max_len))
        self.targets = torch.from_numpy(prefixes.targets[order].astype(np.int64))
        self.widths = np.minimum(lengths[order], max_len)
        self.users = order  # (users,) the PrefixSet row (user index) of each batch row
        history_lengths = ends - starts
        self.seen_offsets = np.concatenate([[0], np.cumsum(history_lengths)])
        within = np.arange(self.seen_offsets[-1]) - np.repeat(
            self.seen_offsets[:-1], history_lengths
        )
        self.seen_items = torch.from_numpy(
            prefixes.items[np.repeat(starts, history_lengths) + within]
        )
        self.seen_users = torch.from_numpy(np.repeat(np.arange(len(order)), history_lengths))
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.inputs, self.targets = self.inputs.to(self.device), self.targets.to(self.device)
        self.seen_items = self.seen_items.to(self.device)
        self.seen_users = self.seen_users.to(self.device)

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    @property
    def num_users(self) -> int:
        return len(self.targets)

    def rows(self, index: int) -> slice:
        """The rows (users, in length order) of batch `index`."""
        first = index * self.batch_size
        return slice(first, min(first + self.batch_size, self.num_users))

    def batch(self, index: int) -> EvalBatch:
        rows = self.rows(index)
        max_len = self.inputs.shape[1]
        width = max(1, int(self.widths[rows].max()))
        lo, hi = int(self.seen_offsets[rows.start]), int(self.seen_offsets[rows.stop])
        return EvalBatch(
            inputs=self.inputs[rows, max_len - width :],
            targets=self.targets[rows],
            seen_rows=self.seen_users[lo:hi] - rows.start,
            seen_items=self.seen_items[lo:hi],
        )

    def __iter__(self) -> Iterator[EvalBatch]:
        for index in range(len(self)):
            yield self.batch(index)


def prefix_batch(batch: TrainBatch) -> TrainBatch:
    """Every prefix of every sequence of `batch` as a sequence of its own (the session
    protocol): real position t of (inputs, targets) becomes the sequence inputs[:t+1] whose
    only target, targets[t], sits at its last position (the other targets are 0).

    For models that read a whole session (bidirectional encoders, readouts of the full
    session), which cannot score every position of a sequence in one causal pass. The
    prefixes are grouped into parts of similar length, each left-padded only as wide as its
    longest prefix; one prefix per real position, so `positions` is unchanged.
    """
    width = max(inputs.shape[1] for inputs, _ in batch.parts)
    inputs = torch.cat([pad_left(part, width) for part, _ in batch.parts])  # (B, W)
    targets = torch.cat([pad_left(part, width) for _, part in batch.parts])  # (B, W)
    real = targets != 0  # inputs and targets are real at the same positions
    rows, ends = real.nonzero(as_tuple=True)  # (P,) one prefix per real position
    starts = width - real.sum(1)  # (B,) first real column of each row (left padding)
    lengths = ends - starts[rows] + 1  # (P,) real items in each prefix
    classes = length_classes(lengths)
    parts = []
    for group in torch.argsort(classes, stable=True).split(torch.bincount(classes).tolist()):
        if len(group) == 0:
            continue
        prefix_width = int(lengths[group].max())
        columns = ends[group, None] - prefix_width + 1 + torch.arange(prefix_width).to(ends)
        inside = columns >= starts[rows[group], None]  # (n, w) False left of the prefix
        items = inputs[rows[group, None], columns.clamp(min=0)].masked_fill(~inside, 0)
        target = torch.zeros_like(items)
        target[:, -1] = targets[rows[group], ends[group]]
        parts.append((items, target))
    return TrainBatch(tuple(parts), batch.positions)


def pad_left(x: torch.Tensor, width: int) -> torch.Tensor:
    """(b, w) -> (b, width) with zeros on the left."""
    return torch.nn.functional.pad(x, (width - x.shape[1], 0))
