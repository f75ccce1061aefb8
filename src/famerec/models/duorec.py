"""DuoRec: Contrastive Learning for Representation Degeneration Problem in Sequential
Recommendation (Qiu, Huang, Yin & Wang, WSDM 2022); official code RuihongQiu/DuoRec.

SASRec trained with its next-item cross-entropy plus the paper's contrastive regularization:

    L = L_next_item + lambda * L_reg

between two views of an anchor s, one training prefix of each sequence of a batch (B of
them; `--anchor prefix`, drawn uniformly among the sequence's prefixes):
* the unsupervised, model-level augmentation: s encoded once more, with another dropout mask;
* the supervised positive: another training prefix with the same next item as s, drawn at
  random (`PositivePool` indexes every training prefix by the item that follows it).
L_reg is InfoNCE with in-batch negatives (`losses.info_nce`): each of the 2B views is
classified against the other 2B - 1, its partner being the positive; similarity is the dot
product of the last-position outputs, at temperature 1.

Defaults are the official ones (duorec.sh, seq.yaml, recbole/properties/model/DuoRec.yaml):
contrast "us_x" (the dropout view against the supervised positive; the output used by the
cross-entropy is a third pass), lmd_sem = 0.1, tau = 1, sim "dot"; dropout 0.5 is famerec's
shared default as in DuoRec.yaml.

Differences from the official code, and why:
* famerec's SASRec (block layout, ReLU, Xavier init, cross-entropy at every position) is the
  encoder, so that DuoRec differs from famerec's SASRec only by the regularization;
* the official code trains every prefix of a sequence as its own sample and regularizes each;
  famerec trains all prefixes of a training sequence in one row (as SASRec does) and
  regularizes one random prefix of it per epoch, so that, as in the official code, the
  anchors are spread over all training prefixes (`--anchor last`, famerec's first version,
  always takes the whole sequence). Prefixes are right-aligned like every sequence famerec
  ranks, so with either anchor the regularizer acts on the last column, and on Beauty that
  column's vectors (the ones ranking uses) collapse to nearly one direction (mean cosine 0.97
  between users; other columns 0.3). The official code, which pads on the right, collapses
  them at every position and learns as slowly on famerec's Beauty (records in
  benchmarks/records/duorec-anchor-last and duorec-official).
  The supervised positive is drawn, as in the official code, among all training prefixes with
  the same next item (prefixes of the most recent max_len items of a training sequence), never
  the anchor itself when another exists;
* sequences of the batch with the same next item as an anchor are not its negatives
  (`--exclude-same-target`, on by default): by DuoRec's own definition they are positives. The
  official code keeps them as negatives; `--no-exclude-same-target` does the same;
* a sequence whose next item follows no other training prefix is its own positive (the
  official data loader does the same when the candidate list is empty).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from famerec.config import ModelConfig, TrainConfig, option
from famerec.data.batching import TrainBatch
from famerec.models.augment import (
    ViewBatch,
    as_train_batch,
    batch_sequences,
    check_contrastive_weights,
    encode_by_length,
    uniform_below,
)
from famerec.models.base import EpochContext, Losses
from famerec.models.losses import info_nce
from famerec.models.registry import register
from famerec.models.sasrec import SASRec, SASRecOptions


@dataclass
class DuoRecOptions(SASRecOptions):
    """DuoRec's own settings (`--model duorec`)."""

    cl_weight: float = option(0.1, "lambda: weight of the contrastive regularization")
    temperature: float = option(1.0, "temperature of the contrastive regularization")
    exclude_same_target: bool = option(
        True, "do not use in-batch sequences with the anchor's next item as its negatives"
    )
    anchor: str = option(
        "prefix",
        "what the regularization contrasts: a random training prefix of each sequence (as the "
        "official per-prefix samples) or always the whole sequence (famerec's first version)",
        choices=("prefix", "last"),
    )

    def validate(self, model: ModelConfig, train: TrainConfig) -> None:
        super().validate(model, train)
        check_contrastive_weights(cl_weight=self.cl_weight, temperature=self.temperature)


def cut_prefixes(item_seq: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """(B, L) left-padded rows and (B,) columns -> (B, L): row b's items up to column ends[b],
    right-aligned (left-padded) again."""
    width = item_seq.shape[1]
    columns = torch.arange(width, device=item_seq.device)
    source = columns - (width - 1 - ends).unsqueeze(1)  # (B, L) column in the input row
    items = item_seq.gather(1, source.clamp(min=0))
    return torch.where(source >= 0, items, 0)


def random_prefixes(
    item_seq: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, W) left-padded rows and their (B, W) targets -> one training prefix of each row,
    uniform among the row's prefixes: (B, W) the prefix, right-aligned, and (B,) its next item."""
    width = item_seq.shape[1]
    count = (targets != 0).sum(dim=1)  # (B,) prefixes of each row: its last `count` columns
    ends = width - count + uniform_below(count)  # (B,) the prefix's last column
    next_items = targets.gather(1, ends.unsqueeze(1)).squeeze(1)  # (B,)
    return cut_prefixes(item_seq, ends), next_items


class PositivePool:
    """Every training prefix, indexed by its next item: the supervised positives.

    A prefix is (row j, position p) of the left-padded training inputs with a real target: the
    items of row j up to p, followed by targets[j, p]. Prefixes are sorted by that next item, so
    the candidates of item v are entries start[v] .. start[v] + count[v] - 1.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, num_items: int):
        # inputs, targets: (N, L) left-padded rows, target 0 = no prefix ends there
        self.inputs = inputs
        flat = targets.flatten()
        positions = flat.nonzero().squeeze(1)  # (P,) every prefix, row-major
        next_items = flat[positions]
        self.prefixes = positions[torch.argsort(next_items, stable=True)]  # (P,) j * L + p
        self.count = torch.bincount(next_items, minlength=num_items + 1)  # (V + 1,)
        self.start = torch.cumsum(self.count, 0) - self.count  # (V + 1,) first entry of v

    def prefix_sequences(self, entries: torch.Tensor) -> torch.Tensor:
        """(B,) pool entries -> (B, L) their prefixes, left-padded (right-aligned); entries past
        the end (drawn for an item without candidates) give the last prefix."""
        width = self.inputs.shape[1]
        flat = self.prefixes[entries.clamp(max=len(self.prefixes) - 1)]
        rows, ends = flat // width, flat % width  # (B,), (B,): the prefix ends at column `ends`
        return cut_prefixes(self.inputs[rows], ends)

    def sample(self, anchors: torch.Tensor, next_items: torch.Tensor) -> torch.Tensor:
        """(B, W) anchor sequences and (B,) their next items -> (B, L) positives: a random
        prefix with the same next item, another than the anchor itself whenever there is one."""
        count, first = self.count[next_items], self.start[next_items]  # (B,), (B,)
        draw = uniform_below(count)  # (B,) in [0, count)
        positives = self.prefix_sequences(first + draw)  # (B, L)
        width = positives.shape[1]
        anchors = F.pad(anchors, (width - anchors.shape[1], 0))  # (B, L)
        # Drew the anchor itself: take the next candidate instead (another prefix).
        itself = (positives == anchors).all(dim=1) & (count > 1)  # (B,)
        redraw = self.prefix_sequences(first + (draw + 1) % count.clamp(min=1))
        positives = torch.where(itself.unsqueeze(1), redraw, positives)
        # No candidate at all: the anchor is its own positive.
        return torch.where((count > 0).unsqueeze(1), positives, anchors)


@register(
    "duorec",
    summary="DuoRec (Qiu et al., WSDM 2022): SASRec + dropout and same-target contrastive views",
    options=DuoRecOptions,
    starts_from=("sasrec", "duorec"),
)
class DuoRec(SASRec):
    accepts_item_attributes = False  # --item-attributes: SASRec and FAME only

    def __init__(self, num_items: int, config: ModelConfig, options: DuoRecOptions | None = None):
        super().__init__(num_items, config, options or DuoRecOptions())
        self.positives: PositivePool | None = None  # the training set's, built before epoch 1

    def on_epoch_start(self, context: EpochContext) -> dict[str, int]:
        if self.positives is None or self.positives.inputs.device != context.device:
            train = context.train
            self.positives = PositivePool(
                train.inputs.to(context.device), train.targets.to(context.device), self.num_items
            )
        return {}

    def transform_batch(self, batch: TrainBatch) -> ViewBatch:
        """The anchors (to encode again with other dropout) and their supervised positives."""
        sequences, targets = batch_sequences(batch)  # (B, W), (B, W)
        # Without the training set's pool (`loss` called directly), the batch is the pool.
        pool = self.positives or PositivePool(sequences, targets, self.num_items)
        if self.options.anchor == "prefix":
            anchors, next_items = random_prefixes(sequences, targets)  # (B, W), (B,)
        else:
            anchors, next_items = sequences, targets[:, -1]
        return ViewBatch(batch, anchors, pool.sample(anchors, next_items), next_items)

    def loss(self, batch: ViewBatch | TrainBatch | tuple[torch.Tensor, torch.Tensor]) -> Losses:
        if not isinstance(batch, ViewBatch):
            batch = self.transform_batch(as_train_batch(batch))
        next_item = self.next_item_loss(batch.batch)
        # A sequence's representation: the encoder's output at its last position.
        dropout_view = encode_by_length(self.last_query_vectors, batch.first)  # (B, d)
        supervised = encode_by_length(self.last_query_vectors, batch.second)  # (B, d)
        same_target = None
        if self.options.exclude_same_target:  # (B, B) True where the next items agree
            same_target = batch.last_targets.unsqueeze(1) == batch.last_targets.unsqueeze(0)
        regularization = info_nce(
            dropout_view, supervised, self.options.temperature, exclude=same_target
        )
        return {"next_item": next_item, "cl": self.options.cl_weight * regularization}
