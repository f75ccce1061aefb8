"""MiaSRec (Choi et al., SIGIR 2024): one session representation per item, sparsely selected.

"Multi-intent-aware Session-based Recommendation". Follows the paper and the authors' code
(github.com/jin530/MiaSRec, `miasrec.py` on RecBole; defaults from `props/miasrec.yaml`):

* embedding layer: each item's embedding v_i plus a position embedding (counted from the end of
  the session) plus a frequency embedding (how often the item occurs in the session, capped
  at `max_repeat`); a mean token m (the mean of the session's item embeddings, position 0)
  joins the session; LayerNorm and dropout;
* a bidirectional Transformer encoder (RecBole's post-LayerNorm layer: attention with an
  output projection, GELU feed-forward of `inner_size`) gives c_1..c_n, c_m;
* a highway gate merges each c_i with its item embedding: h_i = g_i v_i + (1 - g_i) c_i,
  g_i = sigmoid(W [v_i; c_i]) -- one candidate intent per item, plus the mean token's;
* intent selection: importance w . [h_m; h_i] + b of every candidate, alpha-entmax over the
  session (alpha = 1.5 by default): a sparse distribution gamma whose zeros drop intents;
* each kept intent is the unit vector of gamma_i h_i; its score of item v is the cosine with
  v's embedding; the session's score of v mixes the best and the average kept intent:
  (beta * max_i cos_i(v) + (1 - beta) * mean_i cos_i(v)) / temperature.

Defaults: the original's alpha (see below), beta (`beta_logit` 0.9; 0.7-0.9 per dataset),
temperature (0.07), `max_repeat` (2) and feed-forward size (256) are this model's flags; the
shared flags keep famerec's defaults (64, 2 layers, 2 heads; the original uses d = 100) -- the
FAME paper ran its baselines at d = 64/128. Full-softmax cross-entropy on all items, as the
original.

Recipe (`RECIPE`; `--preset classic` trains without it, at famerec's shared dropout 0.5 and a
constant 1e-3 on batches of 256): the original's dropout of 0.1, Adam at a peak rate of 3e-3
on batches of 512, 50 warmup steps, cosine decay to 0 over 30 epochs. Found here, on Beauty's
validation split only (benchmarks/RESULTS.md, "MiaSRec's recipe"): three seeds pass 99 % of
the old recipe's best validation NDCG@10 at epochs 12-14 and end 6-10 % above that best, where
the old recipe needed 88 epochs (505 minutes of one thread, against 41); test NDCG@10 0.0548
against the old recipe's 0.0467 (one seed of it: its other seeds would cost 17 hours). The original
trains at RecBole's constant 1e-3 on batches of 1,024 and stops after 5 epochs without a gain.

Where famerec differs, and why:
* alpha-entmax is our own bisection (Blondel et al. 2019 / Peters et al. 2019) with the exact
  entmax gradient. The released code calls `entmax_bisect` with `entmax_alpha`, which neither
  of its config files sets, so it runs with the fallback alpha = -1: a dense distribution
  without exact zeros, i.e. no selection. We use alpha = 1.5 (`--entmax-alpha`, > 1), the
  sparse selection the paper describes.
* As in the official code, intents are normalized after the gamma weighting, so gamma only
  decides which intents are kept: the importance layer receives no gradient through the
  scores (it keeps its initialization and selects by the encoder's outputs alone).
* The max runs over the kept intents only. The official max also runs over the batch's
  padding rows and the dropped intents, whose cosine is 0, so a session's scores depended on
  how far its batch was padded.
* The mean token's frequency is 1; the official code counts the positions holding item id 1
  (its placeholder id for the mean token), which includes real occurrences of item 1.
* Training follows famerec's session protocol: every prefix of a user's most recent max_len
  items is a session that predicts its next item (the bidirectional encoder sees the whole
  prefix, so each prefix is encoded on its own: `prefix_batch`). RecBole's session datasets
  are augmented the same way.
* Selection and stopping use the validation split (the original does too: MRR@20, patience 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from famerec.config import ModelConfig, ModelOptions, TrainConfig, option
from famerec.data.batching import TrainBatch, prefix_batch
from famerec.errors import ConfigError
from famerec.models.base import SequentialRecommender
from famerec.models.layers import MultiHeadAttention, bidirectional_mask
from famerec.models.registry import cosine_recipe, register

LAYER_NORM_EPS = 1e-12  # RecBole's
INIT_STD = 0.02  # RecBole's initializer_range
SCORE_CHUNK = 1 << 24  # intent x item products computed at once (64 MB of float32)


@dataclass
class MiasRecOptions(ModelOptions):
    """MiaSRec's own settings (`--model miasrec`)."""

    entmax_alpha: float = option(1.5, "alpha of the entmax that selects intents (> 1)")
    beta: float = option(0.9, "weight of the best intent's score; 1 - beta: the mean's")
    temperature: float = option(0.07, "temperature of the cosine scores")
    max_repeat: int = option(2, "frequency embedding: counts from this on share one vector")
    inner_size: int = option(256, "feed-forward inner size of the Transformer layers")

    def validate(self, model: ModelConfig, train: TrainConfig) -> None:
        model.check_heads_divide_hidden()
        if self.entmax_alpha <= 1:
            raise ConfigError(f"--entmax-alpha must be more than 1, got {self.entmax_alpha}")
        if not 0 <= self.beta <= 1:
            raise ConfigError(f"--beta must be in [0, 1], got {self.beta}")
        if self.temperature <= 0 or self.max_repeat < 1 or self.inner_size < 1:
            raise ConfigError("--temperature, --max-repeat and --inner-size must be positive")


class Entmax(torch.autograd.Function):
    """alpha-entmax over the last dimension (alpha > 1): p_i = [(alpha - 1) z_i - tau]_+ ^
    (1 / (alpha - 1)) with tau such that p sums to 1, found by bisection. Entries at -inf
    (masked) get exactly 0; unlike softmax, low scores get exact zeros too."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, alpha: float, iterations: int = 50):
        z = scores.to(torch.promote_types(scores.dtype, torch.float32)) * (alpha - 1)  # (..., n)
        top = z.max(-1, keepdim=True).values
        low = top - 1.0  # the top entry alone is 1 here: the sum is >= 1
        high = top - (1.0 / z.shape[-1]) ** (alpha - 1)  # every entry <= 1/n: the sum is <= 1
        for _ in range(iterations):  # bisection on tau, over the whole tensor at once
            tau = (low + high) / 2
            total = (z - tau).clamp(min=0).pow(1 / (alpha - 1)).sum(-1, keepdim=True)
            low, high = torch.where(total >= 1, tau, low), torch.where(total >= 1, high, tau)
        p = (z - low).clamp(min=0).pow(1 / (alpha - 1))
        p = p / p.sum(-1, keepdim=True)
        ctx.alpha = alpha
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (p,) = ctx.saved_tensors
        slope = torch.where(p > 0, p.pow(2 - ctx.alpha), 0.0)  # zero off the support
        grad_in = slope * grad
        grad_in = grad_in - slope * grad_in.sum(-1, keepdim=True) / slope.sum(-1, keepdim=True)
        return grad_in, None, None


def entmax(scores: torch.Tensor, alpha: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """alpha-entmax of `scores` over the last dimension; False in `mask` gives weight 0."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return Entmax.apply(scores, alpha)


def padded_products(queries: torch.Tensor, counts: torch.Tensor, items: torch.Tensor):
    """(c, w, d) vectors of c sessions (rows from counts (c,) on are padding), items (V', d)
    -> (c, w, V') products q . v, padding rows at -inf."""
    products = queries @ items.T  # (c, w, V')
    padding = torch.arange(queries.shape[1], device=counts.device) >= counts.unsqueeze(1)
    rows = padding.flatten().nonzero().squeeze(1)  # (p,) padding rows of the (c w) rows
    products.view(-1, products.shape[-1]).index_fill_(0, rows, float("-inf"))
    return products


class MaxProduct(torch.autograd.Function):
    """max_i q_i . v over each session's vectors: (c, w, d), counts (c,), items (V', d) ->
    (c, V'). The backward sends the gradient of each (session, item) to the vector that
    attains the max, as torch.max does, through a 0/1 mask of the winners that overwrites
    the products (4 bytes per product until the backward, which uses it up): torch.max's
    argmax over the middle dimension costs more on the CPU than the product itself, and so
    do out-of-place masks. (An exact tie would send the gradient to both vectors; products
    of distinct vectors do not tie.)"""

    @staticmethod
    def forward(ctx, queries: torch.Tensor, counts: torch.Tensor, items: torch.Tensor):
        products = padded_products(queries, counts, items)  # (c, w, V')
        best = products.amax(1)  # (c, V')
        ctx.save_for_backward(queries, items, products.eq_(best.unsqueeze(1)))  # 0/1
        device = queries.device.type  # the backward runs under the forward's autocast
        ctx.autocast = {
            "device_type": device,
            "dtype": torch.get_autocast_dtype(device),
            "enabled": torch.is_autocast_enabled(device),
        }
        return best

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        queries, items, winners = ctx.saved_tensors
        with torch.autocast(**ctx.autocast):  # as torch.amp.custom_bwd does
            grad_products = winners.mul_(grad.unsqueeze(1))  # (c, w, V'), in place
            grad_queries = grad_products @ items  # (c, w, d)
            grad_items = grad_products.flatten(0, 1).T @ queries.flatten(0, 1)  # (V', d)
        return grad_queries, None, grad_items


class PostNormBlock(nn.Module):
    """RecBole's (BERT's) Transformer layer: attention with an output projection, then a GELU
    feed-forward network, each followed by dropout, a residual and LayerNorm."""

    def __init__(self, hidden_size: int, num_heads: int, inner_size: int, dropout: float):
        super().__init__()
        self.attention = MultiHeadAttention(hidden_size, num_heads, dropout)
        self.attention_out = nn.Linear(hidden_size, hidden_size)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=LAYER_NORM_EPS)
        self.inner = nn.Linear(hidden_size, inner_size)
        self.outer = nn.Linear(inner_size, hidden_size)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 0.02) weights, zero biases, as RecBole."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=INIT_STD)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attended = self.attention_out(self.attention(x, x, mask))  # (B, T, d)
        x = self.attention_norm(x + self.dropout(attended))
        return self.ffn_norm(x + self.dropout(self.outer(F.gelu(self.inner(x)))))


@dataclass
class Intents:
    vectors: torch.Tensor  # (B, T, d) unit vectors of the kept intents, 0 for dropped ones
    weights: torch.Tensor  # (B, T) entmax weights gamma, 0 at padding and dropped intents
    kept: torch.Tensor  # (B, T) weights > 0


RECIPE = cosine_recipe(30, dropout=0.1)


@register(
    "miasrec",
    summary="MiaSRec (Choi et al., SIGIR 2024): bidirectional encoder, one intent per item, "
    "sparse intent selection by alpha-entmax, max and mean of the intents' scores",
    options=MiasRecOptions,
    recipe=RECIPE,
)
class MiasRec(SequentialRecommender):
    options: MiasRecOptions
    dot_product_scores = False  # the max over intents is not one dot product

    def __init__(self, num_items: int, config: ModelConfig, options: MiasRecOptions | None = None):
        super().__init__(num_items, config, options or MiasRecOptions())
        hidden, opts = config.hidden_size, self.options
        # position 0: the mean token; position k: the k-th most recent item
        self.position_embedding = nn.Embedding(config.max_len + 1, hidden)
        self.frequency_embedding = nn.Embedding(opts.max_repeat + 1, hidden, padding_idx=0)
        self.input_norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.blocks = nn.ModuleList(
            PostNormBlock(hidden, config.num_heads, opts.inner_size, config.dropout)
            for _ in range(config.num_layers)
        )
        self.highway = nn.Linear(2 * hidden, hidden)  # gate of [v_i; c_i]
        self.importance = nn.Linear(2 * hidden, 1)  # importance of [h_m; h_i]
        self.session_dropout = nn.Dropout(config.dropout)  # on the input item embeddings
        self.item_dropout = nn.Dropout(config.dropout)  # on the output item embeddings
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Item embeddings U(-1/sqrt(d), 1/sqrt(d)) and the rest N(0, 0.02), as the official
        code; the blocks initialize themselves."""
        bound = self.hidden_size**-0.5
        nn.init.uniform_(self.item_embedding.weight, -bound, bound)
        for module in (self.position_embedding, self.frequency_embedding):
            nn.init.normal_(module.weight, std=INIT_STD)
        for linear in (self.highway, self.importance):
            nn.init.normal_(linear.weight, std=INIT_STD)
            nn.init.zeros_(linear.bias)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
            self.frequency_embedding.weight[0].zero_()

    def intents(self, item_seq: torch.Tensor) -> Intents:
        """(B, L) left-padded sessions -> their candidate intents, the items' and the mean
        token's (T = L + 1, the mean token last)."""
        item_seq = item_seq[:, -self.max_len :]
        batch, length = item_seq.shape
        real = item_seq != 0  # (B, L)
        v = self.item_embedding(item_seq) * real.unsqueeze(-1)  # (B, L, d)
        mean = v.sum(1) / real.sum(1, keepdim=True).clamp(min=1)  # (B, d) the mean token
        v = self.session_dropout(torch.cat([v, mean.unsqueeze(1)], 1))  # (B, T, d)
        present = F.pad(real, (0, 1), value=True)  # (B, T) the mean token is always there
        # x_i = v_i + a_i + r_{f_i}: position from the end (mean token 0), frequency in session
        positions = torch.arange(length, -1, -1, device=item_seq.device)  # (T,)
        same = (item_seq.unsqueeze(1) == item_seq.unsqueeze(2)) & real.unsqueeze(1)  # (B, L, L)
        frequency = same.sum(-1).clamp(max=self.options.max_repeat) * real  # (B, L), 0 = pad
        frequency = F.pad(frequency, (0, 1), value=1)  # (B, T)
        x = v + self.position_embedding(positions) + self.frequency_embedding(frequency)
        x = self.embedding_dropout(self.input_norm(x))
        mask = bidirectional_mask(present)  # (B, 1, T, T)
        for block in self.blocks:
            x = block(x, mask)  # c_1 .. c_n, c_m
        gate = torch.sigmoid(self.highway(torch.cat([v, x], -1)))  # (B, T, d)
        h = gate * v + (1 - gate) * x  # highway: one candidate intent per token
        pairs = torch.cat([h[:, -1:].expand_as(h), h], -1)  # [h_m; h_i]: (B, T, 2d)
        importance = self.importance(pairs).squeeze(-1)  # (B, T)
        weights = entmax(importance, self.options.entmax_alpha, present)  # gamma: (B, T)
        vectors = F.normalize(weights.unsqueeze(-1).to(h.dtype) * h, dim=-1)  # gamma_i h_i
        return Intents(vectors, weights, weights > 0)

    def ranking_vectors(self, intents: Intents) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept intents as ranking vectors q_i = (beta u_i + (1 - beta) mean_j u_j) /
        temperature, so that a session's logit of item v is max_i q_i . v: the mean of the
        cosines is one product shared by all intents, so it moves inside the max. Returns
        (R, d) the kept ones, session after session, and (B,) how many each session has."""
        beta, temperature = self.options.beta, self.options.temperature
        mean = intents.vectors.sum(1) / intents.kept.sum(1, keepdim=True)  # (B, d) dropped: 0
        queries = (beta * intents.vectors + (1 - beta) * mean.unsqueeze(1)) / temperature
        return queries[intents.kept], intents.kept.sum(1)  # (R, d), (B,)

    @staticmethod
    def max_logits(queries: torch.Tensor, counts: torch.Tensor, items: torch.Tensor):
        """(R, d) ranking vectors of B sessions (`counts` (B,) of them each, in session order)
        and items (V', d) -> yields (sessions (c,), logits (c, V')), the max over each
        session's vectors of q . v, chunk after chunk of sessions. Sessions go in order of
        their count, so a chunk is padded little. No dropped intent is multiplied."""
        order = torch.argsort(counts)  # (B,)
        sorted_counts = counts[order].tolist()
        starts = counts.cumsum(0) - counts  # (B,) each session's first row
        limit = max(1, SCORE_CHUNK // items.shape[0])  # rows of a chunk
        first = 0
        while first < len(order):
            # sessions first..stop-1 hold at most `width` vectors each (bounded memory)
            provisional = min(first + max(1, limit // sorted_counts[first]), len(order))
            stop = min(first + max(1, limit // sorted_counts[provisional - 1]), len(order))
            sessions, width = order[first:stop], sorted_counts[stop - 1]
            column = torch.arange(width, device=counts.device)  # (w,)
            rows = starts[sessions, None] + torch.minimum(column, counts[sessions, None] - 1)
            chunk = queries[rows], counts[sessions], items  # (c, w, d), (c,), (V', d)
            if torch.is_grad_enabled() and (queries.requires_grad or items.requires_grad):
                yield sessions, MaxProduct.apply(*chunk)  # (c, V')
            else:
                yield sessions, padded_products(*chunk).amax(1)
            first = stop

    def item_vectors(self) -> torch.Tensor:
        """(V + 1, d) unit item vectors (the intents' cosines are taken with them)."""
        return F.normalize(self.item_embedding.weight, dim=-1)

    def loss(self, batch: TrainBatch | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of the next item of every prefix of the batch's sequences."""
        batch = batch if isinstance(batch, TrainBatch) else TrainBatch((batch,), 0)
        items = F.normalize(self.item_dropout(self.item_embedding.weight[1:]), dim=-1)
        queries, counts, targets = [], [], []
        for item_seq, target in prefix_batch(batch).parts:  # one session per prefix
            part_queries, part_counts = self.ranking_vectors(self.intents(item_seq))
            queries.append(part_queries)  # (r, d)
            counts.append(part_counts)  # (b,)
            targets.append(target[:, -1] - 1)  # (b,)
        queries, counts, targets = torch.cat(queries), torch.cat(counts), torch.cat(targets)
        dtype = torch.promote_types(queries.dtype, torch.float32)  # float32 under autocast
        total = sum(
            F.cross_entropy(logits.to(dtype), targets[sessions], reduction="sum")
            for sessions, logits in self.max_logits(queries, counts, items)
        )
        return total / len(targets)

    def score(self, item_seq: torch.Tensor) -> torch.Tensor:
        with torch.autocast(item_seq.device.type, enabled=False):
            queries, counts = self.ranking_vectors(self.intents(item_seq))
            sessions, logits = zip(*self.max_logits(queries, counts, self.item_vectors()))
            scores = torch.cat(logits)[torch.argsort(torch.cat(sessions))]  # (B, V + 1)
        scores[:, 0] = float("-inf")
        return scores
