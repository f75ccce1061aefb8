"""SASRec (Kang & McAuley, ICDM 2018), the backbone FAME builds on.

The layer structure follows the reference implementation: each block normalizes its input to
form the queries, attends over the un-normalized input as keys and values (no output
projection), adds the normalized queries back, then applies a point-wise feed-forward network
to the normalized result with a residual. A final LayerNorm gives F_t (the paper's Eq. 5-6).

Recipe (`RECIPE`; `--preset classic` trains without it): Adam at a peak rate of 3e-3 on
batches of 512, 50 warmup steps, cosine decay to 0 over 25 epochs. Found here, on Beauty's
validation split only, among five variants (benchmarks/RESULTS.md, "Recipes"): it reaches the
old recipe's best validation NDCG@10 in 16 epochs instead of 24, each epoch cheaper (larger
batches). The original trains at a constant 1e-3 on batches of 128.
The recipe also draws the weights as PyTorch's layers do (`--block torch-init`; the
reference's Xavier-normal with `--block sasrec` or `--preset classic`): the same model and
cost per epoch, trained further in the recipe's 25 epochs (results/sasrec_init_beauty.md).
Where we differ from the original and why: its TensorFlow layers start Glorot-uniform; PyTorch
SASRecs (Xu et al.'s, arXiv 2408.14238, among them) keep PyTorch's smaller Kaiming-uniform
feed-forward weights with non-zero biases, and learn faster from them.

`--block pytorch` (not the reference; off by default) builds the blocks as PyTorch SASRecs on
`nn.MultiheadAttention` do, Xu et al.'s (arXiv 2408.14238) among them: an output projection,
the residual from the un-normalized input, padded keys visible, PyTorch's initialization of
the attention and feed-forward layers (`famerec.models.layers`). It exists to measure whether
those differences explain the gap between our SASRec and theirs on the same Beauty split;
`--block` also takes any of those parts, comma-separated (projection, input-residual,
torch-init, padded-keys), to find which of them matter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from famerec.config import ModelConfig, ModelOptions, TrainConfig, option
from famerec.errors import ConfigError
from famerec.models.base import ATTRIBUTE_EMBEDDING, SequentialRecommender
from famerec.models.layers import (
    BLOCK_PARTS,
    LAYER_NORM_EPS,
    TransformerBlock,
    block_parts,
    causal_only_mask,
    computing_parts,
)
from famerec.models.registry import cosine_recipe, register


@dataclass
class SASRecOptions(ModelOptions):
    """SASRec's own settings (`--model sasrec` and the models built on it)."""

    block: str = option(
        "sasrec",
        "Transformer block: sasrec (the reference: residual from the normalized queries, no "
        "output projection, padded keys masked) or pytorch (as SASRecs on PyTorch's "
        "nn.MultiheadAttention: output projection, residual from the input, padded keys "
        "visible, PyTorch's initialization; not the reference), or some of those parts: a "
        "comma-separated list of " + ", ".join(BLOCK_PARTS),
    )

    def validate(self, model: ModelConfig, train: TrainConfig) -> None:
        model.check_heads_divide_hidden()
        try:
            block_parts(self.block)
        except ValueError as error:
            raise ConfigError(str(error)) from None


# PyTorch's initialization (`--block torch-init`) is part of the recipe: the same model and
# cost per epoch, a better model after the recipe's 25 epochs (results/sasrec_init_beauty.md).
RECIPE = {**cosine_recipe(25), "sasrec.block": "torch-init"}


@register(
    "sasrec",
    summary="SASRec (Kang & McAuley, ICDM 2018): causal self-attention, full-softmax loss",
    options=SASRecOptions,
    starts_from=("sasrec",),
    recipe=RECIPE,
)
class SASRec(SequentialRecommender):
    accepts_item_attributes = True

    def __init__(self, num_items: int, config: ModelConfig, options: SASRecOptions | None = None):
        super().__init__(num_items, config, options or SASRecOptions())
        self.block_parts = block_parts(self.options.block)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                config.hidden_size, config.num_heads, config.dropout, parts=self.block_parts
            )
            for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=LAYER_NORM_EPS)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()  # Xavier-normal matrices, zero biases
        for block in self.blocks:
            block.reset_parameters()  # "torch-init": PyTorch's (the reference's: none)

    def query_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        length = min(item_seq.shape[1], self.max_len)
        visible_padding = "padded-keys" in self.block_parts
        if visible_padding:
            # Padded keys are visible, so every sequence is padded to max_len (as the models
            # this style follows always are), whatever its batch's padding: (B, max_len).
            item_seq = F.pad(item_seq[:, -self.max_len :], (self.max_len - length, 0))
        x, real = self.embed(item_seq)  # (B, L, d)
        # (1, 1, L, L) with padded keys visible, else (B, 1, L, L)
        mask = causal_only_mask(real) if visible_padding else self.attention_mask(real)
        for block in self.blocks:
            x = block(x, mask, real)
        return self.final_norm(x)[:, -length:]  # F_t at every position (Eq. 5)

    def check_same_block(self, source: SASRec) -> None:
        """--init-from: a run of another --block computes something else with those weights
        (the initialization alone does not: its weights are replaced)."""
        if computing_parts(source.block_parts) != computing_parts(self.block_parts):
            raise ConfigError(
                f"--init-from: that SASRec run has --block {source.options.block}, "
                f"this one --block {self.options.block}"
            )

    def prepare(self, source: SequentialRecommender, seed: int) -> list[str]:
        """Continue training a SASRec run (e.g. at another learning rate): copy everything;
        attribute embeddings that the source lacks (--item-attributes) start at zero."""
        self.check_same_block(source)
        mine, theirs = self.state_dict(), source.state_dict()
        added = {ATTRIBUTE_EMBEDDING} if self.has_item_attributes else set()
        if not set(theirs) <= set(mine) or set(mine) - set(theirs) - added:
            raise ConfigError("--init-from: that SASRec run has other sizes than this one")
        if any(mine[k].shape != theirs[k].shape for k in theirs):
            raise ConfigError("--init-from: that SASRec run has other sizes than this one")
        return self.copy_matching(source)
