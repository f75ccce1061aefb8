"""Building blocks shared by the Transformer models: attention, feed-forward, a block.

The block follows SASRec's reference implementation: it normalizes its input to form the
queries, attends over the un-normalized input as keys and values (no output projection), adds
the normalized queries back, then applies a point-wise feed-forward network to the normalized
result with a residual (the SASRec paper's Eqs. 2-6).

PyTorch SASRecs built on `nn.MultiheadAttention` (e.g. Xu et al., arXiv 2408.14238, whose
full-softmax SASRec is the best published on our Beauty split) differ in four parts, each of
which `TransformerBlock(..., parts=...)` or the model can turn on (`block_parts`):
"projection", an output projection after the heads; "input-residual", the residual added to the
un-normalized input instead of the normalized queries; "torch-init", PyTorch's default
initialization of the attention's input projections and of the feed-forward layers; and
"padded-keys", padded keys left visible (the model's mask: `causal_only_mask`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-8  # as in SASRec


def causal_mask(real: torch.Tensor) -> torch.Tensor:
    """(B, L) real-item mask -> (B, 1, L, L), True where query i may attend to key j: j <= i
    and j is a real item. The diagonal is always allowed so that padding rows stay finite."""
    length = real.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=real.device).tril()
    diagonal = torch.eye(length, dtype=torch.bool, device=real.device)
    return ((causal & real[:, None, None, :]) | diagonal).contiguous()


def causal_only_mask(real: torch.Tensor) -> torch.Tensor:
    """(B, L) real-item mask -> (1, 1, L, L), True where j <= i, padded keys included: as
    `nn.MultiheadAttention` with only a causal `attn_mask`. Padding is zero at every block's
    input, so a padded key is the key projection's bias and its value the value's bias."""
    length = real.shape[1]
    return torch.ones(length, length, dtype=torch.bool, device=real.device).tril()[None, None]


def bidirectional_mask(real: torch.Tensor) -> torch.Tensor:
    """(B, L) real-item mask -> (B, 1, L, L), True where key j is a real item (any direction);
    the diagonal is always allowed so that padding rows stay finite."""
    length = real.shape[1]
    diagonal = torch.eye(length, dtype=torch.bool, device=real.device)
    return (real[:, None, None, :] | diagonal).contiguous()


class MultiHeadAttention(nn.Module):
    """Multi-head attention with SASRec's Q, K, V projections (Eqs. 2-4); heads concatenated.

    The mask decides the direction: `causal_mask` for SASRec, `bidirectional_mask` for BERT4Rec.
    `output_projection` adds a d x d linear layer after the heads (`nn.MultiheadAttention`'s
    out_proj; SASRec's reference has none).
    """

    def __init__(
        self, hidden_size: int, num_heads: int, dropout: float, output_projection: bool = False
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.dropout = dropout
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.output = nn.Linear(hidden_size, hidden_size) if output_projection else None

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_size).transpose(
            1, 2
        )  # (B, H, L, d')

    def forward(self, queries_in: torch.Tensor, keys_in: torch.Tensor, mask: torch.Tensor):
        # queries_in, keys_in: (B, L, d); mask: (B, 1, L, L)
        q = self.split_heads(self.query(queries_in))  # Eq. 2
        k = self.split_heads(self.key(keys_in))
        v = self.split_heads(self.value(keys_in))
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # Eqs. 3-4
        batch, _, length, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, length, -1)  # (B, L, d)
        return out if self.output is None else self.output(out)

    @torch.no_grad()
    def reset_pytorch(self) -> None:
        """`nn.MultiheadAttention`'s initialization: Xavier-uniform over the stacked (3d, d)
        input projection, zero biases; Xavier-normal output projection (as Xu et al.'s model
        re-initializes every `nn.Linear`), zero bias."""
        size = self.query.weight.shape[1]
        bound = math.sqrt(6.0 / (size + 3 * size))  # fan_in d, fan_out 3d
        for layer in (self.query, self.key, self.value):
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.zeros_(layer.bias)
        if self.output is not None:
            nn.init.xavier_normal_(self.output.weight)
            nn.init.zeros_(self.output.bias)


class FeedForward(nn.Module):
    """Point-wise two-layer ReLU network with dropout after each layer (Eq. 5's FFN)."""

    def __init__(self, size: int, dropout: float):
        super().__init__()
        self.inner = nn.Linear(size, size)
        self.outer = nn.Linear(size, size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.outer(self.dropout(F.relu(self.inner(x)))))


BLOCK_PARTS = ("projection", "input-residual", "torch-init", "padded-keys")


def block_parts(block: str) -> frozenset[str]:
    """A --block value -> the parts of the PyTorch SASRecs' block it turns on: "sasrec" (the
    reference) none, "pytorch" all four, else a comma-separated list of `BLOCK_PARTS`."""
    if block == "sasrec":
        return frozenset()
    if block == "pytorch":
        return frozenset(BLOCK_PARTS)
    parts = [part.strip() for part in block.split(",")]
    unknown = [part for part in parts if part not in BLOCK_PARTS]
    if unknown:
        raise ValueError(
            f"--block {block!r}: sasrec, pytorch, or a comma-separated list of "
            + ", ".join(BLOCK_PARTS)
        )
    return frozenset(parts)


def computing_parts(parts: frozenset[str]) -> frozenset[str]:
    """The parts that change what a block computes with given weights: all but "torch-init",
    which changes only how the weights are first drawn. Runs that agree on these can start one
    another (`--init-from`, FAME from SASRec)."""
    return parts - {"torch-init"}


class TransformerBlock(nn.Module):
    """One SASRec block: attention and feed-forward, each with LayerNorm and residual.

    The reference: x' = LN(x) + Attn(LN(x), x); with "input-residual" and "projection"
    (PyTorch SASRecs): x' = x + Proj(Attn(LN(x), x)). Then LN(x') + FFN(LN(x')).
    """

    def __init__(
        self, hidden_size: int, num_heads: int, dropout: float, parts: frozenset[str] = frozenset()
    ):
        super().__init__()
        self.parts = parts
        self.attn_norm = nn.LayerNorm(hidden_size, eps=LAYER_NORM_EPS)
        self.attn = MultiHeadAttention(
            hidden_size, num_heads, dropout, output_projection="projection" in parts
        )
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=LAYER_NORM_EPS)
        self.ffn = FeedForward(hidden_size, dropout)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """With "torch-init", PyTorch's initialization after the model's Xavier-normal one:
        the attention as `nn.MultiheadAttention`, the feed-forward layers as PyTorch's default
        (a width-1 `nn.Conv1d` in Xu et al.'s model: Kaiming-uniform, as `nn.Linear`). Without
        it, the block keeps the model's."""
        if "torch-init" not in self.parts:
            return
        self.attn.reset_pytorch()
        self.ffn.inner.reset_parameters()
        self.ffn.outer.reset_parameters()

    def forward(self, x: torch.Tensor, mask: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        queries = self.attn_norm(x)  # (B, L, d)
        residual = x if "input-residual" in self.parts else queries
        x = residual + self.attn(queries, x, mask)
        x = self.ffn_norm(x)
        x = x + self.ffn(x)
        return x * real.unsqueeze(-1)  # keep padding at zero


# The name SASRec's code used before the blocks were shared.
CausalSelfAttention = MultiHeadAttention
