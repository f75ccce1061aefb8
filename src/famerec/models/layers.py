"""Building blocks shared by the Transformer models: attention, feed-forward, a block.

The block follows SASRec's reference implementation: it normalizes its input to form the
queries, attends over the un-normalized input as keys and values (no output projection), adds
the normalized queries back, then applies a point-wise feed-forward network to the normalized
result with a residual (the SASRec paper's Eqs. 2-6).
"""

from __future__ import annotations

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


def bidirectional_mask(real: torch.Tensor) -> torch.Tensor:
    """(B, L) real-item mask -> (B, 1, L, L), True where key j is a real item (any direction);
    the diagonal is always allowed so that padding rows stay finite."""
    length = real.shape[1]
    diagonal = torch.eye(length, dtype=torch.bool, device=real.device)
    return (real[:, None, None, :] | diagonal).contiguous()


class MultiHeadAttention(nn.Module):
    """Multi-head attention with SASRec's Q, K, V projections (Eqs. 2-4); heads concatenated.

    The mask decides the direction: `causal_mask` for SASRec, `bidirectional_mask` for BERT4Rec.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.dropout = dropout
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)

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
        return out.transpose(1, 2).reshape(batch, length, -1)  # (B, L, d)


class FeedForward(nn.Module):
    """Point-wise two-layer ReLU network with dropout after each layer (Eq. 5's FFN)."""

    def __init__(self, size: int, dropout: float):
        super().__init__()
        self.inner = nn.Linear(size, size)
        self.outer = nn.Linear(size, size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.outer(self.dropout(F.relu(self.inner(x)))))


class TransformerBlock(nn.Module):
    """One SASRec block: attention and feed-forward, each with LayerNorm and residual."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden_size, eps=LAYER_NORM_EPS)
        self.attn = MultiHeadAttention(hidden_size, num_heads, dropout)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=LAYER_NORM_EPS)
        self.ffn = FeedForward(hidden_size, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        queries = self.attn_norm(x)  # (B, L, d)
        x = queries + self.attn(queries, x, mask)
        x = self.ffn_norm(x)
        x = x + self.ffn(x)
        return x * real.unsqueeze(-1)  # keep padding at zero


# The name SASRec's code used before the blocks were shared.
CausalSelfAttention = MultiHeadAttention
