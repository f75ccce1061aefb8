"""The model contract: what every sequential model shares and what the trainer may call.

A model turns a left-padded item sequence into scores of every next item (`score`) and says
how it learns (`loss`, which may return named losses: the trainer sums and logs them). Most
models only say how a sequence becomes one query vector per position (`query_vectors`); the
score of item v is then the dot product with v's embedding (output layer tied to the item
embeddings) and the default `loss` is full-softmax cross-entropy at every position. A model
whose scores are not such a dot product sets `dot_product_scores = False`; serving then uses
its `score()` and says that vector indexes do not apply.

Hooks the trainer calls, all optional: `transform_batch` (augmentation, masking) before each
training step, `on_epoch_start` (clustering, freezing) before each epoch, `prepare` once,
when the run starts from another run (`--init-from` / `--pretrain`), and `attach_data` once
before training (fresh or resumed) with the run's data, for side information keyed by item.

Explanation is a capability: a model that can say why it recommends what it does sets
`explains = True` and implements `explain` (FAME: per-head lists, gate and router weights).
Callers ask `model.explains`, never the model's class or name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from famerec.config import ModelConfig, ModelOptions
from famerec.data.attributes import ItemAttributes, item_attributes
from famerec.data.batching import TrainBatch, TrainTensors
from famerec.data.sequences import SequenceData
from famerec.errors import ConfigError
from famerec.models.layers import LAYER_NORM_EPS, causal_mask
from famerec.models.losses import (
    NegativeSampler,
    sampled_softmax_cross_entropy,
    softmax_cross_entropy,
)

__all__ = ["LAYER_NORM_EPS", "EpochContext", "Explanation", "Losses", "SequentialRecommender"]

Losses = torch.Tensor | dict[str, torch.Tensor]


@dataclass
class EpochContext:
    """What a model may look at before an epoch: the training sequences and the device."""

    epoch: int  # 1-based epoch about to start
    train: TrainTensors  # every training sequence (inputs, targets), on the CPU
    device: torch.device
    batch_size: int
    progress: bool = False


@dataclass
class Explanation:
    """Why a model recommends what it does, for each sequence of a batch (FAME: Fig. 7 of the
    paper): each head's own top-k, its gate and router weights, and the integrated top-k."""

    gate: torch.Tensor  # (B, H) head weights, rows sum to 1
    router: torch.Tensor  # (B, H, N) expert weights at the last position, rows sum to 1
    head_items: torch.Tensor  # (B, H, k) each head's own top-k item ids
    head_scores: torch.Tensor  # (B, H, k) their scores under that head
    items: torch.Tensor  # (B, k) integrated top-k item ids
    scores: torch.Tensor  # (B, k) integrated scores


ATTRIBUTE_EMBEDDING = "item_attribute_embedding.weight"  # --item-attributes' parameter


class SequentialRecommender(nn.Module):
    """Base class: item and position embeddings, `loss(batch)` and `score(item_seq)`."""

    name = "base"  # set by @register
    dot_product_scores = True  # score(seq) == last_query_vectors(seq) @ item_vectors().T
    accepts_item_attributes = False  # --item-attributes: item vectors through the hooks below
    explains = False  # implements `explain` (explain, the explorer's heads, facet analysis)

    def __init__(self, num_items: int, config: ModelConfig, options: ModelOptions | None = None):
        super().__init__()
        self.num_items = num_items
        self.config = config
        self.options = options if options is not None else ModelOptions()
        self.hidden_size = config.hidden_size
        self.max_len = config.max_len
        self.loss_chunk = 0  # set by the trainer; 0 = plain cross-entropy
        self.negative_sampler: NegativeSampler | None = None  # set by the trainer: --loss sampled
        self.item_embedding = nn.Embedding(num_items + 1, config.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, config.hidden_size)
        self.embedding_dropout = nn.Dropout(config.dropout)
        if config.item_attributes and not self.accepts_item_attributes:
            raise ConfigError(f"--item-attributes is not available for {self.name}")

    def reset_parameters(self) -> None:
        """Xavier-normal init of every matrix (as the PyTorch SASRec), zero biases."""
        for name, parameter in self.named_parameters():
            if parameter.dim() > 1:
                nn.init.xavier_normal_(parameter)
            elif name.endswith("bias"):
                nn.init.zeros_(parameter)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def embed(self, item_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled item embeddings plus positions, dropout, padding zeroed; and the real-item mask.

        Positions are counted from the end of the sequence, as in SASRec's left-padded input,
        so a sequence gets the same representation however far its batch is padded.
        """
        item_seq = item_seq[:, -self.max_len :]  # (B, L)
        length = item_seq.shape[1]
        real = item_seq != 0  # (B, L)
        positions = torch.arange(self.max_len - length, self.max_len, device=item_seq.device)
        x = self.item_inputs(item_seq) * math.sqrt(self.hidden_size)
        x = self.embedding_dropout(x + self.position_embedding(positions))  # (B, L, d)
        return x * real.unsqueeze(-1), real

    def item_inputs(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L) item ids -> (B, L, d) their input embeddings; a model with extra input tokens
        (e.g. a [mask] token that is never scored) overrides it."""
        if self.has_item_attributes:
            return self.item_embedding(item_seq) + self.attribute_vectors()[item_seq]
        return self.item_embedding(item_seq)

    # -- item attributes (--item-attributes) ---------------------------------------------------

    @property
    def has_item_attributes(self) -> bool:
        return hasattr(self, "item_attribute_embedding")

    def set_item_attributes(self, members: ItemAttributes | torch.Tensor) -> None:
        """members: item v has attribute a (sparse, or a dense (V + 1, A) matrix). Adds the
        attribute embeddings (A, d), zero at first, so that a run started from a plain one
        begins exactly where it was."""
        if isinstance(members, torch.Tensor):
            members = ItemAttributes.from_matrix(members)
        self.register_buffer("attribute_ids", members.columns, persistent=False)  # (M,)
        # (V + 1,) where each item's bag starts
        self.register_buffer("attribute_offsets", members.offsets[:-1], persistent=False)
        self.register_buffer("attribute_vocabulary", members.vocabulary, persistent=False)
        self.item_attribute_embedding = nn.Embedding(members.width, self.hidden_size)
        nn.init.zeros_(self.item_attribute_embedding.weight)
        self.register_load_state_dict_pre_hook(_rows_by_column)

    def by_column(self, table: torch.Tensor) -> torch.Tensor:
        """A table of the attribute embeddings' shape as runs before the compact vocabulary
        saved it, one row per attribute id 0..max (weights, optimizer moments): its rows of
        this model's columns. Any other table is returned as it is."""
        rows = self.item_attribute_embedding.weight.shape[0]
        if table.dim() != 2 or table.shape[0] == rows or table.shape[0] != self.rows_per_id:
            return table
        return table[self.attribute_vocabulary.to(table.device)]

    @property
    def rows_per_id(self) -> int:
        """How many rows the attribute embeddings had when runs kept a row per id 0..largest."""
        return int(self.attribute_vocabulary[-1]) + 1

    def loads_older_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        """Whether saved weights whose tensor `name` has `shape`, not this model's own, load
        all the same: the attribute embeddings of a run saved with a row per id (`by_column`)."""
        older = (self.rows_per_id, self.hidden_size) if self.has_item_attributes else None
        return name == ATTRIBUTE_EMBEDDING and tuple(shape) == older

    def by_column_moments(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer's moments of the attribute embeddings, after a checkpoint saved before
        the compact vocabulary was loaded: fit to the columns as `by_column` fits the weights."""
        if not self.has_item_attributes:
            return
        state = optimizer.state.get(self.item_attribute_embedding.weight, {})
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                state[name] = self.by_column(value)

    def attribute_vectors(self) -> torch.Tensor:
        """(V + 1, d) the mean attribute embedding of each item (zero without attributes)."""
        return F.embedding_bag(
            self.attribute_ids,
            self.item_attribute_embedding.weight,
            self.attribute_offsets,
            mode="mean",
        )

    @staticmethod
    def attention_mask(real: torch.Tensor) -> torch.Tensor:
        """(B, 1, L, L) True where query i may attend to key j: j <= i and j is a real item."""
        return causal_mask(real)

    def query_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item ids -> (B, L, d) vectors whose dot product with an item
        embedding is that item's score as the next item."""
        raise NotImplementedError

    def last_query_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, d) the query vector after the last position (models may skip the others)."""
        return self.query_vectors(item_seq)[:, -1]

    def loss(self, batch: TrainBatch | tuple[torch.Tensor, torch.Tensor]) -> Losses:
        """The training loss of a batch: one tensor, or named losses that the trainer sums
        (the first is the main one). By default the next-item cross-entropy."""
        return self.next_item_loss(batch)

    def next_item_loss(
        self,
        batch: TrainBatch | tuple[torch.Tensor, torch.Tensor],
        *,
        item_vectors: torch.Tensor | None = None,
        part_queries: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Full-softmax cross-entropy of the next item at every real position (Eq. 18), averaged
        over all real positions of the batch.

        `batch` is (item_seq, targets), both (B, L) with target 0 at padding (no loss), or a
        TrainBatch whose parts of similar length are encoded separately. `item_vectors`
        (num_items + 1, d) are what the queries are scored against; default the item embeddings.
        `part_queries` are the parts' `query_vectors` when the caller has them already (it uses
        them for more).
        """
        queries, targets = self.real_position_queries(batch, part_queries)
        weights = self.loss_item_vectors() if item_vectors is None else item_vectors[1:]
        return self.item_loss(queries, weights, targets - 1)

    def real_position_queries(
        self,
        batch: TrainBatch | tuple[torch.Tensor, torch.Tensor],
        part_queries: Sequence[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions, d) query vectors and (positions,) target ids at every real position of
        the batch (padding is never a target)."""
        parts = batch.parts if isinstance(batch, TrainBatch) else (batch,)
        if part_queries is None:
            part_queries = [self.query_vectors(item_seq) for item_seq, _ in parts]
        queries, targets = [], []
        for part_query, (_, target) in zip(part_queries, parts):
            real = target != 0
            queries.append(part_query[real])  # (positions, d)
            targets.append(target[real])
        if len(parts) == 1:
            return queries[0], targets[0]
        return torch.cat(queries), torch.cat(targets)

    def item_loss(
        self, queries: torch.Tensor, item_weights: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Cross-entropy of `targets` (N,) in [0, V) given `queries` (N, d) scored against
        `item_weights` (V, d): over all items (chunked as the trainer sets), or with
        `--loss sampled` over the target and the sampled negatives shared by the batch."""
        sampler = self.negative_sampler
        if sampler is not None and torch.is_grad_enabled():
            negatives = sampler.sample()
            return sampled_softmax_cross_entropy(
                queries, item_weights, targets, negatives, sampler.log_q
            )
        return softmax_cross_entropy(queries, item_weights, targets, self.loss_chunk)

    def score(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item ids -> (B, num_items + 1) scores of every next item.

        Column 0 (padding) is -inf, so it never wins.
        """
        last = self.last_query_vectors(item_seq)  # (B, d)
        # Always in float32: rounding scores to bf16 would create ties in the ranking.
        with torch.autocast(last.device.type, enabled=False):
            scores = last.float() @ self.item_vectors().float().T  # (B, V + 1)
        scores[:, 0] = float("-inf")
        return scores

    def explain(
        self, item_seq: torch.Tensor, k: int = 10, exclude: torch.Tensor | None = None
    ) -> Explanation:
        """Per-head top-k, integrated top-k, gate and router weights for each sequence; only
        models with `explains = True`. `exclude`: an optional (B, V + 1) boolean mask of items
        to leave out of every list."""
        raise NotImplementedError(f"{self.name} has nothing to explain")

    def item_vectors(self) -> torch.Tensor:
        """(num_items + 1, d) the vectors that `query_vectors` are scored against."""
        if self.has_item_attributes:
            return self.item_embedding.weight + self.attribute_vectors()
        return self.item_embedding.weight

    def loss_item_vectors(self) -> torch.Tensor:
        """(num_items, d) the item vectors `next_item_loss` scores against (no padding row):
        `item_vectors()` unless a model adds training-time noise such as dropout."""
        return self.item_vectors()[1:]

    # -- hooks the trainer calls ---------------------------------------------------------------

    def transform_batch(self, batch: TrainBatch) -> Any:
        """The batch `loss` receives in training (augmentation, masking); unchanged by default.

        Randomness must come from torch's global generator, which checkpoints save.
        """
        return batch

    def on_epoch_start(self, context: EpochContext) -> dict[str, Any]:
        """Called before each training epoch; returns fields to add to the epoch's log line."""
        return {}

    def attach_data(self, data: SequenceData) -> None:
        """Called once before training (fresh or resumed run), and with --item-attributes
        before loading a finished run's weights, with the run's data: a model that uses side
        information keyed by item (e.g. item attributes) reads it here, into buffers that are
        not saved with the weights. By default only --item-attributes."""
        if self.config.item_attributes:
            self.set_item_attributes(item_attributes(self.config.item_attributes, data))

    def prepare(self, source: SequentialRecommender, seed: int) -> list[str]:
        """Start from a finished run's model (`--init-from`, `--pretrain`); returns the names
        of the parameters that were set from it. Only models whose registration lists the
        source's model in `starts_from` are asked."""
        raise NotImplementedError(f"{self.name} cannot start from another run")

    def copy_matching(self, source: SequentialRecommender) -> list[str]:
        """Copy every tensor of `source` whose name and shape this model shares."""
        target = self.state_dict()
        copied = []
        with torch.no_grad():
            for name, tensor in source.state_dict().items():
                if name in target and target[name].shape == tensor.shape:
                    target[name].copy_(tensor)
                    copied.append(name)
        return copied


def _rows_by_column(model: SequentialRecommender, state_dict: dict, prefix: str, *_: Any) -> None:
    """Loading the attribute embeddings of a run saved before the compact vocabulary: its
    rows of this model's columns (`by_column`)."""
    key = prefix + ATTRIBUTE_EMBEDDING
    if key in state_dict and model.has_item_attributes:
        state_dict[key] = model.by_column(state_dict[key])
