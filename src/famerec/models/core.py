"""CORE (Hou, Hu, Zhang & Zhao, SIGIR 2022): "Simple and Effective Session-based Recommendation
within Consistent Representation Space", following the official code (RUCAIBox/CORE,
core_trm.py and core_ave.py; the same model is RecBole's sequential_recommender/core.py, which
the FAME paper ran, Sec. 5.3).

Two parts (paper Sec. 2):
* Representation-consistent encoding (RCE, Sec. 2.1): the session vector is a weighted sum of
  the session's own (dropped-out) item embeddings, h = sum_i alpha_i x_i, so it lies in the item
  embeddings' space. CORE-trm (`--encoder trm`, the default) gets the weights from a Transformer
  over the session, alpha = softmax(w^T F + b) over its real items; CORE-ave (`--encoder ave`)
  weighs the items uniformly.
* Robust distance measuring (RDM, Sec. 2.2): the score of item v is cos(h, x_v) / tau, trained
  with full-softmax cross-entropy; dropout on the session's item embeddings (`--session-dropout`)
  and on the candidate item embeddings in the loss (`--item-dropout`) fight overfitting.

Defaults: the official/RecBole settings: temperature 0.07, item and session dropout 0.2,
Transformer of 2 layers and 2 heads (`--layers 2 --heads 2`, the shared defaults) with hidden
and attention dropout 0.5 (`--dropout 0.5`), GELU feed-forward of inner size 256
(`--inner-size`), LayerNorm eps 1e-12; embedding size 64 (`--hidden 64`; RecBole's default,
the official repository used 100 on its session datasets).

Recipe (`RECIPE`; `--preset classic` trains without it, at a constant 1e-3 on batches of 256
for up to 200 epochs): Adam at a peak rate of 2e-3 on batches of 256, 100 warmup steps, cosine
decay to 0 over 40 epochs. Found here, on Beauty's validation split only (benchmarks/RESULTS.md,
"CORE's recipe"): over three seeds its best validation NDCG@10 is 0.0625 against the old
recipe's 0.0629 (99.4 %), its test NDCG@10 0.0482 against 0.0482 (paired p = 0.98), and a run
takes 10.4 minutes of one thread instead of 20.6. SASRec's recipe (3e-3, batches of 512, 25
epochs) stopped 2 % short. The original's configs set neither rate nor batch size, so it
trains at RecBole's defaults: a constant 1e-3 on batches of 2,048, stopping after 5 epochs
without a gain.

Where famerec differs from the original, and why:
* training targets: CORE is a session model that predicts the last item of a session. In
  famerec's protocol every prefix of a training sequence predicts its next item (as SASRec and
  every other famerec model train), so the session vector is computed at every position t from
  items 1..t. The official Transformer is already causal (a left-to-right mask) and counts
  positions from the session's first item, so the encoder output at item j does not depend on
  later items: encoding the whole sequence once and renormalizing the weights over j <= t (one
  masked softmax over a (t, j) matrix) equals encoding every prefix on its own, exactly (tested)
  and without a loop over prefixes. CORE thus sees as many training targets as SASRec.
* left padding: famerec's sequences are left-padded (RecBole's are right-padded); positions are
  counted from the first real item, so padding changes nothing (tested).
* the output layer and the loss exclude the padding id (RecBole's softmax includes it).
* the Transformer layer is RecBole's (post-LayerNorm, output projection, GELU feed-forward); it
  reuses famerec's shared attention (Q, K, V projections and softmax with dropout).
* initialization follows the official repository: item embeddings uniform in +-1/sqrt(d) (the
  padding row at zero), the weight network normal(0, 0.02) with zero biases and unit
  LayerNorms. RecBole's library version re-initializes every parameter, LayerNorms included,
  uniformly in +-1/sqrt(d) after building the network; we do not copy that.

Scores are exact dot products: `query_vectors` are the normalized session vectors divided by
tau and `item_vectors()` the normalized item embeddings, so ANN indexes apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from famerec.config import ModelConfig, ModelOptions, TrainConfig, option
from famerec.data.batching import TrainBatch
from famerec.errors import ConfigError
from famerec.models.base import Losses, SequentialRecommender
from famerec.models.layers import MultiHeadAttention, causal_mask
from famerec.models.registry import cosine_recipe, register

CORE_LAYER_NORM_EPS = 1e-12  # as the official code
CORE_INIT_STD = 0.02  # initializer_range of the official code


@dataclass
class COREOptions(ModelOptions):
    """CORE's own settings (`--model core`)."""

    encoder: str = option(
        "trm",
        "how the session's items are weighted: trm (a Transformer, CORE-trm) or ave (uniformly, "
        "CORE-ave)",
        choices=("trm", "ave"),
    )
    temperature: float = option(0.07, "tau: scores are cosine similarities divided by tau")
    item_dropout: float = option(0.2, "dropout on the candidate item embeddings in the loss")
    session_dropout: float = option(0.2, "dropout on the session's item embeddings")
    inner_size: int = option(256, "CORE-trm: inner size of the Transformer's feed-forward layer")

    def validate(self, model: ModelConfig, train: TrainConfig) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"--temperature must be positive, got {self.temperature}")
        for name in ("item_dropout", "session_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be in [0, 1), got {getattr(self, name)}")
        if self.inner_size <= 0:
            raise ConfigError(f"--inner-size must be positive, got {self.inner_size}")
        if self.encoder == "trm":
            model.check_heads_divide_hidden()


class EncoderLayer(nn.Module):
    """RecBole's Transformer layer: self-attention with output projection, dropout, residual and
    LayerNorm; then a GELU feed-forward network, dropout, residual and LayerNorm."""

    def __init__(self, hidden_size: int, num_heads: int, inner_size: int, dropout: float):
        super().__init__()
        self.attention = MultiHeadAttention(hidden_size, num_heads, dropout)  # attention dropout
        self.attention_out = nn.Linear(hidden_size, hidden_size)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=CORE_LAYER_NORM_EPS)
        self.inner = nn.Linear(hidden_size, inner_size)
        self.outer = nn.Linear(inner_size, hidden_size)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=CORE_LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x (B, L, d); mask (B, 1, L, L)
        attended = self.dropout(self.attention_out(self.attention(x, x, mask)))
        x = self.attention_norm(x + attended)
        x = self.ffn_norm(x + self.dropout(self.outer(F.gelu(self.inner(x)))))
        return x  # (B, L, d)


class ItemWeights(nn.Module):
    """CORE-trm's weight network (Sec. 2.1): a causal Transformer over the session's item
    embeddings, then one logit per item, w^T F_j + b (the softmax over items is the caller's)."""

    def __init__(self, config: ModelConfig, inner_size: int):
        super().__init__()
        hidden = config.hidden_size
        self.position_embedding = nn.Embedding(config.max_len, hidden)
        self.input_norm = nn.LayerNorm(hidden, eps=CORE_LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(hidden, config.num_heads, inner_size, config.dropout)
            for _ in range(config.num_layers)
        )
        self.logit = nn.Linear(hidden, 1)  # w, b
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.02) weights, zero biases, unit LayerNorms (the official init)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=CORE_INIT_STD)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()

    def forward(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """x (B, L, d) session item embeddings (0 at padding), real (B, L) -> logits (B, L)."""
        positions = (real.cumsum(1) - 1).clamp(min=0)  # (B, L) counted from the first real item
        h = self.dropout(self.input_norm(x + self.position_embedding(positions)))
        mask = causal_mask(real)  # (B, 1, L, L): item j <= i, real
        for layer in self.layers:
            h = layer(h, mask)  # F of Sec. 2.1, causal: F_j sees items 1..j only
        return self.logit(h).squeeze(-1)  # (B, L)


RECIPE = cosine_recipe(40, lr=2e-3, batch_size=256, warmup_steps=100)


@register(
    "core",
    summary="CORE (Hou et al., SIGIR 2022): session vector = weighted sum of its item "
    "embeddings, cosine scores over a temperature",
    options=COREOptions,
    recipe=RECIPE,
)
class CORE(SequentialRecommender):
    def __init__(self, num_items: int, config: ModelConfig, options: COREOptions | None = None):
        super().__init__(num_items, config, options or COREOptions())
        del self.position_embedding, self.embedding_dropout  # CORE's are its own (below)
        self.session_dropout = nn.Dropout(self.options.session_dropout)
        self.item_dropout = nn.Dropout(self.options.item_dropout)
        self.temperature = self.options.temperature
        self.item_weights = (
            ItemWeights(config, self.options.inner_size) if self.options.encoder == "trm" else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Item embeddings uniform in +-1/sqrt(d) (the official init), padding row at zero."""
        bound = self.hidden_size**-0.5
        nn.init.uniform_(self.item_embedding.weight, -bound, bound)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def session_vectors(self, item_seq: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, L) left-padded ids -> (B, L, d) normalized session vectors of every prefix
        1..t divided by tau, or (B, 1, d) of the whole sequence only with `last_only`."""
        item_seq = item_seq[:, -self.max_len :]
        real = item_seq != 0  # (B, L)
        x = self.session_dropout(self.item_embedding(item_seq)) * real.unsqueeze(-1)  # (B, L, d)
        if self.item_weights is None:  # CORE-ave: alpha_j = 1 / t
            logits = torch.zeros(real.shape, device=x.device)
        else:  # CORE-trm: alpha = softmax(w^T F + b)
            logits = self.item_weights(x, real).float()  # (B, L)
        allowed = causal_mask(real)[:, 0]  # (B, L, L): session prefix t may use item j <= t
        if last_only:
            allowed = allowed[:, -1:]  # (B, 1, L)
        logits = logits.unsqueeze(1).masked_fill(~allowed, float("-inf"))  # (B, t, L)
        alpha = torch.softmax(logits, dim=-1).to(x.dtype)  # weights over the prefix's items
        h = alpha @ x  # (B, t, d): h_t = sum_{j<=t} alpha_tj x_j (RCE, Sec. 2.1)
        return F.normalize(h, dim=-1) / self.temperature  # cos(h, .) / tau (RDM, Sec. 2.2)

    def query_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        return self.session_vectors(item_seq)  # (B, L, d)

    def last_query_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        return self.session_vectors(item_seq, last_only=True)[:, 0]  # (B, d)

    def item_vectors(self) -> torch.Tensor:
        """(num_items + 1, d) unit-length item embeddings: scores are cosines over tau."""
        return F.normalize(self.item_embedding.weight, dim=-1)

    def loss(self, batch: TrainBatch | tuple[torch.Tensor, torch.Tensor]) -> Losses:
        """Cross-entropy over cos(h, dropout(x_v)) / tau (RDM, Sec. 2.2)."""
        items = F.normalize(self.item_dropout(self.item_embedding.weight), dim=-1)
        return self.next_item_loss(batch, item_vectors=items)
