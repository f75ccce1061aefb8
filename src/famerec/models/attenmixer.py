"""Atten-Mixer (Zhang et al., WSDM 2023): multi-level attention mixture readout, no GNN.

"Efficiently Leveraging Multi-level User Intent for Session-based Recommendation via
Atten-Mixer Network". Follows the paper's GNN-free model and the authors' code for it
(github.com/Peiyance/Atten-Mixer-torch, `src/models/CCSGNN.py`, `SessionGraphAttn` with
`LastAttenion`; defaults from `src/main_area_semantic.py`):

* items are L2-normalized embeddings (the NISER-style normalization, `--norm`), with dropout;
  there is no position embedding and no propagation between items: the order of a session
  enters only through which of its items are the last ones;
* instance view: the last item; concept view, level l = 1..L: a query built from the set of
  the last l items (the paper's deep-sets operation over the last l normalized items: their
  sum, mapped by a linear layer of its own level), each query L2-normalized;
* multi-head level-l attention: for each level query and head, sigmoid(q . k) with every item
  of the session, then softmax(2 x) over the session;
* the mixer: Lp pooling (p = 4) of the L levels' attention maps of a head (the paper's
  inductive-bias-pruned mixture of attention maps), softmax(2 x) again, and the readout
  sum_j a_j v_j, heads concatenated, LayerNorm;
* the session vector is a linear map of [readout; last item]; scores are scale * cosine of
  the session and item vectors (scale 16 in `src/`, 12 in the GNN-AM / SGNN-HN-AM variants).

Defaults: the original's levels (`last_k` 7), p (`l_p` 4) and scale (16) are this model's
flags; the shared flags keep famerec's defaults (64, 2 heads, dropout 0.5), where the original
uses `--hidden 256 --heads 8 --dropout 0.1` (the FAME paper ran its baselines at d = 64/128).
The original also trains with Adam L2 1e-5 (`--weight-decay 1e-5` here) and divides the
learning rate by 10 every 3 epochs (`--lr-schedule step --step-epochs 3 --step-factor 0.1`;
not the default here: see benchmarks/RESULTS.md, "Recipes").

Where famerec differs, and why:
* Concept-view queries sum the last l items, as the paper's deep-sets formulation says; the
  official code feeds their concatenation to the level's linear layer (order-dependent).
* Each level query is L2-normalized on its own; the official code normalizes each feature
  across the levels (`dim=1`), which looks unintended.
* Heads split the hidden size as usual; the official `view` calls interleave levels and
  positions into its "heads".
* The first softmax runs over the session's real items only; the official one also spreads
  mass over the batch's padding, so a session's scores depended on its batch.
* Training follows famerec's session protocol: every prefix of a user's most recent max_len
  items predicts its next item. Every part of the model reads only the items up to a
  position, so one causal pass computes each prefix's session vector exactly as a separate
  pass over that prefix would (no prefix batches needed).
* Selection and stopping use the validation split. The official script validates on the test
  split (`validation=False`) and reports the best test MRR/HR over epochs; famerec never does.
* LayerNorm starts at weight 1, bias 0; the official code re-draws every parameter, LayerNorm
  included, from U(-1/sqrt(d), 1/sqrt(d)). Other weights keep that uniform init.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from famerec.config import ModelConfig, ModelOptions, TrainConfig, option
from famerec.errors import ConfigError
from famerec.models.base import SequentialRecommender
from famerec.models.layers import causal_mask
from famerec.models.registry import register

ATTENTION_SHARPNESS = 2.0  # softmax(2 x) of both attention steps, as the official code


@dataclass
class AttenMixerOptions(ModelOptions):
    """Atten-Mixer's own settings (`--model attenmixer`)."""

    levels: int = option(7, "concept-view levels: queries from the last 1..L items")
    lp_norm: float = option(4.0, "p of the Lp pooling that mixes the levels' attention maps")
    scale: float = option(16.0, "scale of the cosine scores (official: 16; 12 with a GNN)")

    def validate(self, model: ModelConfig, train: TrainConfig) -> None:
        model.check_heads_divide_hidden()
        if not 1 <= self.levels <= model.max_len:
            raise ConfigError(f"--levels must be from 1 to --max-len, got {self.levels}")
        if self.lp_norm < 1:
            raise ConfigError(f"--lp-norm must be 1 or more, got {self.lp_norm}")
        if self.scale <= 0:
            raise ConfigError(f"--scale must be positive, got {self.scale}")


def last_item_sums(x: torch.Tensor, levels: int) -> torch.Tensor:
    """(B, L, d) item vectors, zero at padding -> (B, L, levels, d): at position t and level
    l, the sum of the last l items up to t (x_t + ... + x_{t-l+1}). Padding adds zeros, so a
    session shorter than l sums only its own items."""
    windows = F.pad(x, (0, 0, levels - 1, 0)).unfold(1, levels, 1)  # (B, L, d, levels)
    newest_first = windows.flip(-1).transpose(2, 3)  # (B, L, levels, d): j-th is x_{t-j}
    return newest_first.cumsum(2)


class LevelQueries(nn.Module):
    """Concept-view queries: level l maps the sum of the last l items by its own W_l, b_l."""

    def __init__(self, hidden_size: int, levels: int):
        super().__init__()
        self.levels = levels
        self.weight = nn.Parameter(torch.empty(levels, hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(levels, hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = self.weight.shape[1] ** -0.5  # U(-1/sqrt(d), 1/sqrt(d)) as the official code
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d) item vectors (zero at padding) -> (B, L, levels, d) unit queries."""
        sums = last_item_sums(x, self.levels)  # deep sets: sum of the last l items
        queries = torch.einsum("btld,lde->btle", sums, self.weight) + self.bias
        return F.normalize(queries, dim=-1)


class LevelAttentionMixer(nn.Module):
    """Multi-head level attention of every level query, mixed over levels by Lp pooling."""

    def __init__(self, hidden_size: int, num_heads: int, lp_norm: float, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.lp_norm = lp_norm
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden_size, eps=1e-8)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = self.query.in_features**-0.5
        for linear in (self.query, self.key, self.value):
            nn.init.uniform_(linear.weight, -bound, bound)
            nn.init.uniform_(linear.bias, -bound, bound)

    def attention(self, queries: torch.Tensor, x: torch.Tensor, mask: torch.Tensor):
        """(B, T, levels, d) queries, (B, L, d) items, (B, 1, T, L) allowed keys ->
        (B, H, T, L) the mixed attention map of each head at each query position."""
        batch, positions, levels, _ = queries.shape
        heads, size = self.num_heads, self.head_size
        q = self.query(queries).view(batch, positions, levels, heads, size)
        k = self.key(x).view(batch, -1, heads, size)  # (B, L, H, d')
        affinity = torch.sigmoid(torch.einsum("btlhe,bjhe->bhtlj", q, k))  # (B, H, T, lv, L)
        allowed = mask[:, :, :, None, :]  # (B, 1, T, 1, L)
        per_level = torch.softmax(
            (ATTENTION_SHARPNESS * affinity).masked_fill(~allowed, float("-inf")), dim=-1
        )  # each level's attention map over the session
        power_sum = per_level.pow(self.lp_norm).sum(3).masked_fill(~mask, 1.0)  # (B, H, T, L)
        mixed = power_sum.pow(1.0 / self.lp_norm)  # Lp pool (masked keys kept off the root's
        # infinite slope at 0: they are dropped by the softmax below)
        return torch.softmax(
            (ATTENTION_SHARPNESS * mixed).masked_fill(~mask, float("-inf")), dim=-1
        )

    def forward(self, queries: torch.Tensor, x: torch.Tensor, mask: torch.Tensor):
        """-> (B, T, d) the readout of the session at each query position."""
        batch, positions = queries.shape[:2]
        weights = self.dropout(self.attention(queries, x, mask))  # (B, H, T, L)
        v = self.value(x).view(batch, -1, self.num_heads, self.head_size)  # (B, L, H, d')
        readout = torch.einsum("bhtj,bjhe->bthe", weights, v).reshape(batch, positions, -1)
        return self.norm(readout)


@register(
    "attenmixer",
    summary="Atten-Mixer (Zhang et al., WSDM 2023): multi-level attention mixture readout "
    "over normalized item embeddings, scaled cosine scores",
    options=AttenMixerOptions,
)
class AttenMixer(SequentialRecommender):
    options: AttenMixerOptions

    def __init__(
        self, num_items: int, config: ModelConfig, options: AttenMixerOptions | None = None
    ):
        super().__init__(num_items, config, options or AttenMixerOptions())
        del self.position_embedding  # no positions: order enters through the last items only
        hidden = config.hidden_size
        self.item_dropout = nn.Dropout(config.dropout)  # on session items and output items
        self.level_queries = LevelQueries(hidden, self.options.levels)
        self.mixer = LevelAttentionMixer(
            hidden, config.num_heads, self.options.lp_norm, config.dropout
        )
        self.session = nn.Linear(2 * hidden, hidden)  # [readout; last item] -> session
        self.scale = self.options.scale
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(d), 1/sqrt(d)) as the official code; the submodules init themselves."""
        bound = self.hidden_size**-0.5
        for parameter in (self.item_embedding.weight, self.session.weight, self.session.bias):
            nn.init.uniform_(parameter, -bound, bound)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def session_items(self, item_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids -> (B, L, d) unit item vectors (dropout, renormalized), zero at padding."""
        item_seq = item_seq[:, -self.max_len :]
        real = item_seq != 0
        x = self.item_dropout(F.normalize(self.item_embedding(item_seq), dim=-1))
        return F.normalize(x, dim=-1) * real.unsqueeze(-1), real

    def sessions(self, item_seq: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, L) -> (B, T, d) session vectors after each position (T = L), or after the last
        one only (T = 1). Position t reads items up to t only: the vector of prefix t."""
        x, real = self.session_items(item_seq)  # (B, L, d)
        mask = causal_mask(real)  # (B, 1, L, L): real items up to t (and t itself)
        if last_only:
            queries = self.level_queries(x[:, -self.options.levels :])[:, -1:]  # (B, 1, lv, d)
            mask, last = mask[:, :, -1:], x[:, -1:]
        else:
            queries, last = self.level_queries(x), x  # (B, L, lv, d), instance view (B, L, d)
        readout = self.mixer(queries, x, mask)  # (B, T, d)
        return self.session(torch.cat([readout, last], dim=-1))

    def query_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(self.sessions(item_seq), dim=-1)  # (B, L, d)

    def last_query_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(self.sessions(item_seq, last_only=True)[:, -1], dim=-1)

    def item_vectors(self) -> torch.Tensor:
        """(V + 1, d) unit item vectors: scores are scale * cosine."""
        return F.normalize(self.item_embedding.weight, dim=-1)

    def loss_item_vectors(self) -> torch.Tensor:
        return self.item_dropout(self.item_vectors()[1:])  # dropout on output items, as official
