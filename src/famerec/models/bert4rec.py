"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional Transformer trained with the cloze task.

Follows the paper (Sec. 3) and the official TensorFlow code (FeiSun/BERT4Rec: `modeling.py`,
`run.py`, `gen_data_fin.py`, with the Beauty settings of `run_beauty.sh` and
`bert_config_beauty_64.json`); RecBole's `bert4rec.py` was read for comparison.

* Embedding (Sec. 3.4): h_i^0 = v_i + p_i, a learnable position embedding, then LayerNorm and
  dropout as in BERT. Positions count from the oldest item of the window, as in the original's
  right-padded input; famerec's batches are left-padded, so the position is a running count of
  real items and padding never shifts it.
* Transformer layers (Sec. 3.3): post-LN BERT layers, A = LN(H + Dropout(MH(H))) and
  Trm(H) = LN(A + Dropout(PFFN(A))), with an output projection W^O after the heads and a GELU
  feed-forward network of inner size 4d. Attention is bidirectional: every position sees every
  real item (`bidirectional_mask`). The Q, K, V projections are the shared `MultiHeadAttention`.
* Output layer (Sec. 3.5): P(v) = softmax(GELU(h W^P + b^P) E^T + b^O), tied to the item
  embeddings E, with the official code's LayerNorm after the GELU.
* Cloze task (Sec. 3.6): a training sequence gets max(1, round(n * rho)) of its n items, at
  random positions, replaced by the [MASK] token (item id num_items + 1, the embedding's last
  row); the loss is the cross-entropy over all items at the masked positions only. A share of
  the sequences instead masks only the last item, "to better match the sequential
  recommendation task". At inference [MASK] is appended after the history (dropping the
  oldest item of a full window) and the items are scored at its position.

The options' own defaults are the official Beauty run's: rho = 0.6 (`--mask-prob`; RecBole
uses 0.2), mask-last share 1/11 (`--mask-last`), hidden dropout 0.5 (the shared `--dropout`),
attention dropout 0.2 (`--attn-dropout`), d = 64, 2 layers, 2 heads, max_len 50 (the shared
defaults), inner size 4d = 256, LayerNorm epsilon 1e-12, truncated-normal initialization with
std 0.02. The recipe below replaces five of them; `--preset classic` keeps them all.

Recipe (`RECIPE`; `--preset classic` trains without it, at the official settings and a constant
1e-3 for up to 200 epochs): the Beauty settings Xu et al. published for a PyTorch BERT4Rec
(arXiv 2408.14238: 4 heads, hidden and attention dropout 0.1, rho = 0.2, no mask-last samples,
Adam at 5e-3 with an L2 weight decay of 1e-4, batches of 256), trained on famerec's schedule
instead of theirs: 100 warmup steps, then a cosine decay to 0 over 60 epochs (they train 200
epochs at the constant rate). Found here, on Beauty's validation split only (benchmarks/
RESULTS.md, "BERT4Rec at Xu et al.'s settings on a cosine schedule"): over three seeds its
best validation NDCG@10 is 0.0514 against 0.0435 and its test NDCG@10 0.0383 against 0.0326
(+17 %, paired p < 0.001), in the same 60 epochs; it reaches the time-to-quality target at
epochs 18, 20 and 31 against 29, 25 and 30. The recipe before it, the official settings at
a peak of 2e-3 over the same schedule: `--heads 2 --dropout 0.5 --attn-dropout 0.2 --mask-prob
0.6 --mask-last 0.09090909090909091 --weight-decay 0 --lr 2e-3`. Xu et al.'s own schedule:
`--lr-schedule constant --warmup-steps 0 --epochs 200 --patience 200` (2.5 times as long a run;
benchmarks/RESULTS.md, "BERT4Rec at Xu et al.'s published recipe").
The 60 epochs were found on Beauty and do not carry over to Sports, whose climb at 5e-3 lasts
about 150 epochs: there the recipe's three seeds get test NDCG@10 0.0163 +- 0.0019, below the
official settings searched (0.0184) and Xu et al.'s 200 constant epochs (0.0197); on Toys it
gets 0.0356 +- 0.0012, above both (results/table2_init.md, control `bert4rec-recipe`). A
longer decay (`--epochs`) may suit larger datasets; not measured.

Where famerec differs from the original, and why:
* Protocol (shared by every famerec model): leave-one-out with a validation item, Adam (with
  the recipe's L2 weight decay, no gradient clipping) at the recipe above, early stopping on
  validation NDCG@10, full ranking over all items. The original trains on the
  validation item too, uses AdamW (lr 1e-4, weight decay 0.01, 100 warm-up steps, linear decay
  over 400k steps, clipping at norm 5) and ranks the test item against 100 negatives sampled
  by popularity.
* Masks are drawn afresh each time a sequence is batched (from torch's global generator), and
  each sequence is a mask-last sample with probability `--mask-last`. The original writes a
  static file with 10 randomly masked copies of every sequence (`dupe_factor`) plus one
  mask-last copy; 1/11 is that copy's share.
* Only the most recent max_len items of each training sequence are used (the trainer's data);
  the original also trains on older windows of long sequences (sliding step 0.1 * max_len).
* The output softmax covers the items only: padding and [MASK] are never targets nor scored.
  The original's vocabulary also holds its special tokens, which the softmax includes.
* The original caps the masks at 30 per sequence (`max_predictions_per_seq`), which never
  binds at max_len 50 with rho = 0.6; famerec has no cap.
* The original adds a token-type embedding that is the same for every position; it is left
  out (a constant added to every position embedding changes nothing).
* To keep scores one dot product (for vector indexes), the query vector carries a trailing 1
  and `item_vectors()` the bias b^O as last column: scores are GELU(...)E^T + b^O exactly.
* The FAME paper ran BERT4Rec through SSLRec (rho 0.2 with 80/10/10 replacement, dropout 0.1,
  an untied output layer, no mask-last samples); like the paper's own statement ("hyper-
  parameters as in the respective papers"), the options' defaults follow the original. The
  recipe's settings (Xu et al.'s) share SSLRec's rho, dropout and lack of mask-last samples,
  not its replacement scheme nor its untied output layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from famerec.config import ModelConfig, ModelOptions, TrainConfig, option
from famerec.data.batching import TrainBatch
from famerec.errors import ConfigError
from famerec.models.base import SequentialRecommender
from famerec.models.layers import MultiHeadAttention, bidirectional_mask
from famerec.models.losses import softmax_cross_entropy
from famerec.models.registry import cosine_recipe, register

BERT_LAYER_NORM_EPS = 1e-12  # as in BERT
INIT_STD = 0.02  # BERT's initializer_range


def bert_normal_(weight: torch.Tensor) -> None:
    """BERT's initializer: a normal with std 0.02 truncated at two standard deviations."""
    nn.init.trunc_normal_(weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)


@dataclass
class BERT4RecOptions(ModelOptions):
    """BERT4Rec's own settings (`--model bert4rec`)."""

    mask_prob: float = option(
        0.6,
        "cloze proportion rho: share of a training sequence's items replaced by [MASK] "
        "(0.6: the official Beauty setting; RecBole uses 0.2)",
    )
    mask_last: float = option(
        1 / 11,
        "share of training sequences that mask only their last item instead (1/11: one such "
        "copy per ten cloze copies in the official code)",
    )
    attn_dropout: float = option(
        0.2, "dropout on the attention probabilities (--dropout is the hidden dropout)"
    )

    def validate(self, model: ModelConfig, train: TrainConfig) -> None:
        model.check_heads_divide_hidden()
        if model.max_len < 2:
            raise ConfigError(f"BERT4Rec needs --max-len 2 or more, got {model.max_len}")
        if not 0.0 < self.mask_prob <= 1.0:
            raise ConfigError(f"--mask-prob must be in (0, 1], got {self.mask_prob}")
        if not 0.0 <= self.mask_last <= 1.0:
            raise ConfigError(f"--mask-last must be in [0, 1], got {self.mask_last}")
        if not 0.0 <= self.attn_dropout < 1.0:
            raise ConfigError(f"--attn-dropout must be in [0, 1), got {self.attn_dropout}")


@dataclass(frozen=True)
class ClozeBatch:
    """A training batch after masking: per part, the masked sequences and the labels, both
    (b, w) left-padded; a label is the item hidden under [MASK], 0 where there is no loss."""

    parts: tuple[tuple[torch.Tensor, torch.Tensor], ...]


class BertLayer(nn.Module):
    """One post-LN Transformer layer (Sec. 3.3): multi-head attention and a GELU PFFN."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.attention = MultiHeadAttention(hidden_size, num_heads, attn_dropout)  # W^Q, W^K, W^V
        self.attention_out = nn.Linear(hidden_size, hidden_size)  # W^O
        self.attention_norm = nn.LayerNorm(hidden_size, eps=BERT_LAYER_NORM_EPS)
        self.inner = nn.Linear(hidden_size, 4 * hidden_size)  # W^(1), b^(1)
        self.outer = nn.Linear(4 * hidden_size, hidden_size)  # W^(2), b^(2)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=BERT_LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT's initialization of the layer's own matrices and of the shared attention's."""
        attention = self.attention
        projections = (attention.query, attention.key, attention.value, self.attention_out)
        for linear in (*projections, self.inner, self.outer):
            bert_normal_(linear.weight)
            nn.init.zeros_(linear.bias)
        for norm in (self.attention_norm, self.ffn_norm):
            norm.reset_parameters()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, L, d); mask: (B, 1, L, L)
        heads = self.attention(x, x, mask)  # (B, L, d): [head_1; ...; head_h]
        a = self.attention_norm(x + self.dropout(self.attention_out(heads)))  # A = LN(H + Drop(MH))
        ffn = self.outer(F.gelu(self.inner(a)))  # PFFN(A) = GELU(A W1 + b1) W2 + b2
        return self.ffn_norm(a + self.dropout(ffn))  # Trm(H) = LN(A + Dropout(PFFN(A)))


class ClozeHead(nn.Module):
    """The output layer (Sec. 3.5): GELU(h W^P + b^P), LayerNorm, and the item bias b^O."""

    def __init__(self, hidden_size: int, num_items: int):
        super().__init__()
        self.transform = nn.Linear(hidden_size, hidden_size)  # W^P, b^P
        self.norm = nn.LayerNorm(hidden_size, eps=BERT_LAYER_NORM_EPS)
        self.item_bias = nn.Parameter(torch.empty(num_items + 1))  # b^O by item id; 0: padding
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bert_normal_(self.transform.weight)
        nn.init.zeros_(self.transform.bias)
        self.norm.reset_parameters()
        nn.init.zeros_(self.item_bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) final hidden states -> (..., d + 1) query vectors [GELU(h W^P + b^P), 1]."""
        query = self.norm(F.gelu(self.transform(hidden)))
        return torch.cat([query, torch.ones_like(query[..., :1])], dim=-1)

    def item_vectors(self, item_embeddings: torch.Tensor) -> torch.Tensor:
        """(num_items + 1, d) rows of E -> (num_items + 1, d + 1) rows [e_v, b^O_v]."""
        return torch.cat([item_embeddings, self.item_bias.unsqueeze(1)], dim=1)


# Xu et al.'s published Beauty settings on famerec's warmup and cosine schedule (docstring).
RECIPE = {
    **cosine_recipe(60, dropout=0.1, lr=5e-3, batch_size=256, warmup_steps=100),
    "train.weight_decay": 1e-4,
    "model.num_heads": 4,
    "bert4rec.attn_dropout": 0.1,
    "bert4rec.mask_prob": 0.2,
    "bert4rec.mask_last": 0.0,
}


@register(
    "bert4rec",
    summary="BERT4Rec (Sun et al., CIKM 2019): bidirectional Transformer, cloze task",
    options=BERT4RecOptions,
    recipe=RECIPE,
)
class BERT4Rec(SequentialRecommender):
    def __init__(self, num_items: int, config: ModelConfig, options: BERT4RecOptions | None = None):
        super().__init__(num_items, config, options or BERT4RecOptions())
        self.mask_id = num_items + 1  # the [MASK] token: one row after the items
        self.item_embedding = nn.Embedding(num_items + 2, config.hidden_size, padding_idx=0)
        self.embedding_norm = nn.LayerNorm(config.hidden_size, eps=BERT_LAYER_NORM_EPS)
        self.layers = nn.ModuleList(
            BertLayer(
                config.hidden_size, config.num_heads, config.dropout, self.options.attn_dropout
            )
            for _ in range(config.num_layers)
        )
        self.head = ClozeHead(config.hidden_size, num_items)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The embeddings this class owns; the layers and the head initialize themselves."""
        bert_normal_(self.item_embedding.weight)
        bert_normal_(self.position_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()  # padding
        self.embedding_norm.reset_parameters()

    # -- the network ---------------------------------------------------------------------------

    def encode(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded ids, [MASK] allowed -> (B, L, d) final hidden states h^L."""
        item_seq = item_seq[:, -self.max_len :]
        real = item_seq != 0  # (B, L); [MASK] counts as an item
        positions = (real.cumsum(1) - 1).clamp(min=0)  # (B, L): 0 at the oldest item
        x = self.item_embedding(item_seq) + self.position_embedding(positions)  # h^0 = v + p
        x = self.embedding_dropout(self.embedding_norm(x))  # (B, L, d)
        mask = bidirectional_mask(real)  # (B, 1, L, L): every real item, both directions
        for layer in self.layers:
            x = layer(x, mask)  # H^l = Trm(H^(l-1))
        return x

    def query_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, d + 1): at each position, the vector that scores the item
        hidden there (meaningful where the position holds [MASK]), against `item_vectors()`."""
        return self.head(self.encode(item_seq))

    def last_query_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L) history -> (B, d + 1): append [MASK] and read the query vector there."""
        mask = torch.full_like(item_seq[:, :1], self.mask_id)  # (B, 1)
        with_mask = torch.cat([item_seq, mask], dim=1)[:, -self.max_len :]  # drop the oldest
        return self.head(self.encode(with_mask)[:, -1])

    def item_vectors(self) -> torch.Tensor:
        """(num_items + 1, d + 1): [e_v, b^O_v] for padding and the items; no [MASK] row."""
        return self.head.item_vectors(self.item_embedding.weight[: self.num_items + 1])

    # -- the cloze task --------------------------------------------------------------------------

    def cloze(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One part of a TrainBatch, (b, w) inputs and next-item targets -> (b, w') masked
        sequences and labels (0 = no loss), w' = min(w + 1, max_len)."""
        # The whole training sequence: the inputs followed by the last target.
        seq = torch.cat([inputs, targets[:, -1:]], dim=1)[:, -self.max_len :]  # (b, w')
        real = seq != 0
        count = real.sum(1, keepdim=True)  # (b, 1) items per sequence
        wanted = torch.floor(count * self.options.mask_prob + 0.5).clamp(min=1)  # round(n rho)
        # A random order of each sequence's items (padding last); mask the first `wanted`.
        keys = torch.rand(seq.shape, device=seq.device).masked_fill(~real, 2.0)
        order = keys.argsort(dim=1).argsort(dim=1)  # (b, w') rank of each position
        masked = order < wanted
        # Some sequences mask only their last item (always real: batches are left-padded).
        only_last = torch.rand(seq.shape[0], 1, device=seq.device) < self.options.mask_last
        last = torch.zeros_like(masked)
        last[:, -1] = True
        masked = torch.where(only_last, last, masked)
        return seq.masked_fill(masked, self.mask_id), seq * masked

    def transform_batch(self, batch: TrainBatch) -> ClozeBatch:
        """Mask every part of the batch (the trainer calls this before `loss`)."""
        return ClozeBatch(tuple(self.cloze(inputs, targets) for inputs, targets in batch.parts))

    def loss(self, batch: ClozeBatch | TrainBatch) -> torch.Tensor:
        """Cross-entropy over all items at the masked positions only (Sec. 3.6), averaged
        over the masked positions of the whole batch."""
        if isinstance(batch, TrainBatch):
            batch = self.transform_batch(batch)
        hidden, labels = [], []
        for masked_seq, label in batch.parts:
            at = label != 0  # (b, w) masked positions
            hidden.append(self.encode(masked_seq)[at])  # (positions, d)
            labels.append(label[at] - 1)  # item ids 1..V -> classes 0..V-1
        queries = self.head(torch.cat(hidden))  # (P, d + 1)
        item_vectors = self.item_vectors()[1:]  # (V, d + 1): never padding nor [MASK]
        return softmax_cross_entropy(queries, item_vectors, torch.cat(labels), self.loss_chunk)
