"""FAME: Facet-Aware Multi-Head Mixture-of-Experts (Liu, Zhang & Long, WSDM 2025).

SASRec with its last Transformer layer replaced by `FacetLayer`:

* MoE attention (Sec. 4.3, Eqs. 12-17): every head h has N expert query matrices
  W_Q(n)^(h) (d x d'), SASRec's key and value matrices W_K^(h), W_V^(h), and a router
  W_exp^(h) ((N d') x N) that mixes the experts' outputs into the head's f_i^(h).
* Facet-aware multi-head prediction (Sec. 4.2, Eqs. 7-11): each head's f^(h) passes a
  feed-forward network FFN' shared by the heads (with dropout, residual and LayerNorm at d');
  head h scores item v with its sub-embedding x_v W_f^(h); a softmax gate over the heads mixes
  the head scores.

Choices where the paper is silent, following the backbone's block per head:
* the queries come from the LayerNorm-ed input and keys/values from the raw input, as in
  SASRec; dropout is applied to the attention probabilities, as in SASRec;
* a residual connection adds the normalized query input (split per head) to each head's
  attention output (`attn_residual`, on by default; switch off with --no-attn-residual);
* Eq. 7 replaces SASRec's last feed-forward block and its final LayerNorm.

Not in the paper, off by default: `--fusion softmax` mixes the heads' own softmaxes over the
items instead of their scores, p(v) = sum_h g_h softmax_h(v), trained with -log p(target).
Eq. 11's mixture of scores collapses to one dot product per user (below); a mixture of
softmaxes does not, so it is strictly more expressive, at H softmaxes per position.

Facet pressure, not in the paper, off by default: named losses beside the unchanged
next-item loss that push the heads toward facets (`--attribute-weight`,
`--attribute-gate-weight`, `--gate-balance-weight`, `--head-diversity-weight`). They live in
`models/facet_pressure.py`, a mixin of `FAME`.

With Eq. 11, training never forms the H per-head logit tensors: sum_h g_h (x_v W_f^(h)) . F^(h)
equals x_v . (sum_h g_h W_f^(h) F^(h)), one query vector per position scored like SASRec's.

Recipe (`RECIPE`; `--preset classic` trains without it), for the fine-tuning from SASRec: Adam
at a peak rate of 3e-3 on batches of 512, 50 warmup steps, cosine decay to 0 over 18 epochs.
Found here, on Beauty's validation split only, against one variant (benchmarks/RESULTS.md,
"Recipes"). The paper gives no schedule. `--pretrain` trains its SASRec stage with SASRec's
recipe wherever the run keeps FAME's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from famerec.config import ModelConfig, ModelOptions, TrainConfig, option, path_parts
from famerec.data.batching import TrainBatch
from famerec.data.sequences import SequenceData
from famerec.errors import ConfigError
from famerec.models.base import EpochContext, Explanation, Losses, SequentialRecommender
from famerec.models.facet_pressure import FacetPressure
from famerec.models.layers import LAYER_NORM_EPS, FeedForward, TransformerBlock
from famerec.models.losses import mixture_of_softmaxes_loss
from famerec.models.registry import cosine_recipe, register
from famerec.models.transfer import init_fame_from_sasrec, warm_start_new_parts

FAME_HEADS = (1, 2, 4, 8, 16)  # the paper's range of H
FAME_HIDDEN = (64, 128)  # the paper's range of d
MAX_EXPERTS = 32  # the paper's largest N


@dataclass
class FAMEOptions(ModelOptions):
    """FAME's own settings (`--model fame`)."""

    num_experts: int = option(4, "query experts N per head (1 = FAME w/o MoE)", flag="--experts")
    attn_residual: bool = option(
        True, "residual connection around the last layer's attention, per head"
    )
    freeze_epochs: int = option(
        0,
        "from SASRec: train only the new parts for this many epochs before fine-tuning "
        "everything (0 = end to end from the start, as in the paper)",
    )
    warm_start: bool = option(
        False,
        "from SASRec: start the new parts close to SASRec (expert queries from SASRec's last "
        "query, W_f as head slices, uniform gate, zero FFN') instead of random (not in the "
        "paper)",
    )
    fusion: str = option(
        "score",
        "how the heads combine: score (Eq. 11, the paper: gate-weighted sum of head scores) or "
        "softmax (mixture of the heads' own softmaxes, not in the paper)",
        choices=("score", "softmax"),
    )

    attribute_weight: float = option(
        0.0,
        "weight of the attribute loss: head h predicts the next item's attributes of kind h "
        "from its state F^(h) (0 = off, as in the paper)",
    )
    attributes: str | None = option(
        None,
        "item attributes of --attribute-(gate-)weight: comma-separated JSON files "
        "{item_id: [attribute_id, ...]}, one "
        "per attribute kind, for heads 1, 2, ... (at most --heads kinds; saved as absolute "
        "paths); default: a bundled dataset's attributes as one kind",
        paths=True,
    )
    attribute_gate_weight: float = option(
        0.0,
        "weight of a gate target from the attributes: the gate learns which head's kind best "
        "predicts the next item's attributes (needs 2+ kinds in --attributes; 0 = off; not in "
        "the paper)",
    )
    gate_balance_weight: float = option(
        0.0,
        "weight of a gate term that makes each position's gate confident and all positions "
        "together use the heads equally (0 = off; not in the paper)",
    )
    head_diversity_weight: float = option(
        0.0,
        "weight of a term penalizing the squared correlation, over all items, between the "
        "heads' score vectors at each position (0 = off; not in the paper)",
    )

    def validate(self, model: ModelConfig, train: TrainConfig) -> None:
        if model.num_heads not in FAME_HEADS:
            raise ConfigError(f"FAME needs --heads in {FAME_HEADS}, got {model.num_heads}")
        if model.hidden_size not in FAME_HIDDEN:
            raise ConfigError(f"FAME needs --hidden in {FAME_HIDDEN}, got {model.hidden_size}")
        if not 1 <= self.num_experts <= MAX_EXPERTS:
            raise ConfigError(
                f"FAME needs --experts from 1 to {MAX_EXPERTS}, got {self.num_experts}"
            )
        if self.freeze_epochs < 0:
            raise ConfigError(f"--freeze-epochs must be 0 or more, got {self.freeze_epochs}")
        if self.freeze_epochs and not train.starts_from_run:
            raise ConfigError("--freeze-epochs needs --init-from or --pretrain")
        if self.warm_start and not train.starts_from_run:
            raise ConfigError("--warm-start needs --init-from or --pretrain")
        if self.fusion == "softmax" and train.loss == "sampled":
            raise ConfigError("--fusion softmax trains with the full softmax; drop --loss sampled")
        weights = ("attribute_weight", "attribute_gate_weight")
        for name in (*weights, "gate_balance_weight", "head_diversity_weight"):
            if getattr(self, name) < 0:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be 0 or more, got {getattr(self, name)}")
        if self.attributes is not None and not self.uses_attributes:
            raise ConfigError(
                "--attributes is read for --attribute-weight or --attribute-gate-weight; set "
                "one above 0"
            )
        if self.attribute_gate_weight and len(self.attribute_sources) < 2:
            raise ConfigError("--attribute-gate-weight needs 2 or more kinds in --attributes")
        if (self.gate_balance_weight or self.head_diversity_weight) and model.num_heads < 2:
            raise ConfigError("--gate-balance-weight and --head-diversity-weight need --heads 2+")
        if len(self.attribute_sources) > model.num_heads:
            raise ConfigError(
                f"--attributes names {len(self.attribute_sources)} attribute kinds, more than "
                f"the {model.num_heads} heads (one kind per head)"
            )

    @property
    def attribute_sources(self) -> list[str | None]:
        """One source per attribute kind; None: the bundled dataset's attributes."""
        if self.attributes is None:
            return [None]
        return path_parts(self.attributes)

    @property
    def uses_attributes(self) -> bool:
        return bool(self.attribute_weight or self.attribute_gate_weight)

    @property
    def facet_pressure(self) -> bool:
        """Whether any of the auxiliary terms that push the heads apart is on."""
        return bool(self.uses_attributes or self.gate_balance_weight or self.head_diversity_weight)


class MoEAttention(nn.Module):
    """Per head, N expert queries attend over shared keys/values; a router mixes them."""

    def __init__(self, hidden_size: int, num_heads: int, num_experts: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.num_experts = num_experts
        self.head_size = hidden_size // num_heads
        self.dropout = dropout
        # All W_Q(n)^(h) in one projection: output column block (h, n) is expert n of head h.
        self.expert_queries = nn.Linear(hidden_size, num_heads * num_experts * self.head_size)
        self.key = nn.Linear(hidden_size, hidden_size)  # W_K^(h) side by side
        self.value = nn.Linear(hidden_size, hidden_size)  # W_V^(h) side by side
        # W_exp^(h) in R^{(N d') x N}, stored as (H, N, d', N) for the einsum below.
        self.router = nn.Parameter(torch.empty(num_heads, num_experts, self.head_size, num_experts))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal with the fans of one expert's matrices; zero biases."""
        hidden, experts, size = self.key.in_features, self.num_experts, self.head_size
        # Each expert's queries for all heads form one d x d matrix, like SASRec's W_Q.
        nn.init.normal_(self.expert_queries.weight, std=(1.0 / hidden) ** 0.5)
        nn.init.normal_(self.router, std=(2.0 / (experts * size + experts)) ** 0.5)
        for linear in (self.key, self.value):
            nn.init.xavier_normal_(linear.weight)
        for linear in (self.expert_queries, self.key, self.value):
            nn.init.zeros_(linear.bias)

    def forward(self, queries_in: torch.Tensor, keys_in: torch.Tensor, mask: torch.Tensor):
        """(B, Lq, d), (B, L, d), (B, 1, Lq, L) -> f (B, Lq, H, d'), beta (B, Lq, H, N)."""
        batch, length, _ = queries_in.shape
        keys_length = keys_in.shape[1]
        heads, experts, size = self.num_heads, self.num_experts, self.head_size
        q = self.expert_queries(queries_in).view(batch, length, heads * experts, size)  # Eq. 12
        q = q.transpose(1, 2)  # (B, H*N, Lq, d')
        k = self.key(keys_in).view(batch, keys_length, heads, 1, size)  # Eq. 13
        v = self.value(keys_in).view(batch, keys_length, heads, 1, size)
        k = k.expand(-1, -1, -1, experts, -1).reshape(batch, keys_length, heads * experts, size)
        v = v.expand(-1, -1, -1, experts, -1).reshape(batch, keys_length, heads * experts, size)
        dropout = self.dropout if self.training else 0.0
        expert_out = F.scaled_dot_product_attention(
            q, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, dropout_p=dropout
        )  # Eqs. 14-15: (B, H*N, L, d'), softmax(q k^T / sqrt(d')) v per head and expert
        expert_out = expert_out.transpose(1, 2).reshape(batch, length, heads, experts, size)
        router_logits = torch.einsum("blhnk,hnkm->blhm", expert_out, self.router)  # Eq. 16
        beta = torch.softmax(router_logits.float(), dim=-1).to(expert_out.dtype)  # (B, L, H, N)
        f = torch.einsum("blhn,blhnk->blhk", beta, expert_out)  # Eq. 17: (B, L, H, d')
        return f, beta


@dataclass
class FacetOutput:
    head_states: torch.Tensor  # (B, L, H, d') F^(h) of Eq. 7
    gate: torch.Tensor  # (B, L, H) head weights g~ of Eq. 10
    router: torch.Tensor  # (B, L, H, N) expert weights beta of Eq. 16


class FacetLayer(nn.Module):
    """FAME's last layer: MoE attention, shared FFN' per head, head sub-embeddings and gate."""

    def __init__(self, config: ModelConfig, options: FAMEOptions):
        super().__init__()
        hidden, heads = config.hidden_size, config.num_heads
        self.num_heads = heads
        self.head_size = hidden // heads
        self.attn_residual = options.attn_residual
        self.attn_norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.attention = MoEAttention(hidden, heads, options.num_experts, config.dropout)
        self.head_ffn = FeedForward(self.head_size, config.dropout)  # FFN', shared by heads
        self.head_norm = nn.LayerNorm(self.head_size, eps=LAYER_NORM_EPS)
        self.facet_projection = nn.Parameter(torch.empty(heads, hidden, self.head_size))  # W_f^(h)
        self.head_gate = nn.Linear(hidden, heads)  # W_g, b_g
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """W_f^(h) Xavier-normal with fans (d, d'); the submodules initialize themselves."""
        hidden = self.facet_projection.shape[1]
        nn.init.normal_(self.facet_projection, std=(2.0 / (hidden + self.head_size)) ** 0.5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> FacetOutput:
        """Every position's head states (training), or the last position's only (scoring)."""
        queries = self.attn_norm(x)  # (B, L, d)
        if last_only:
            queries, mask = queries[:, -1:], mask[:, :, -1:]
        batch, length, _ = queries.shape
        f, beta = self.attention(queries, x, mask)  # (B, L, H, d'), (B, L, H, N)
        if self.attn_residual:
            f = f + queries.view(batch, length, self.num_heads, self.head_size)
        head_states = self.head_norm(f + self.head_ffn(f))  # Eq. 7 (FFN' ends in dropout)
        gate = torch.softmax(self.head_gate(head_states.flatten(2)).float(), dim=-1)  # Eq. 10
        return FacetOutput(head_states, gate.to(head_states.dtype), beta)

    def query_vectors(self, out: FacetOutput) -> torch.Tensor:
        """(B, L, d): sum_h g_h W_f^(h) F^(h), so that x_v . q equals Eq. 11's score."""
        gated = out.gate.unsqueeze(-1) * out.head_states  # (B, L, H, d'): g_h F^(h)
        projection = self.facet_projection.transpose(1, 2).reshape(
            -1, self.facet_projection.shape[1]
        )
        return gated.flatten(2) @ projection  # (B, L, H d') @ (H d', d) = sum_h g_h W_f^(h) F^(h)

    def item_sub_embeddings(self, item_weights: torch.Tensor) -> torch.Tensor:
        """(V, d) item embeddings -> (H, V, d') sub-embeddings x_v^(h) = x_v W_f^(h) (Eq. 9)."""
        return torch.einsum("vd,hde->hve", item_weights, self.facet_projection)


RECIPE = cosine_recipe(18)


@register(
    "fame",
    summary="FAME (Liu, Zhang & Long, WSDM 2025): SASRec with facet-aware heads and "
    "mixture-of-experts queries in the last layer",
    options=FAMEOptions,
    pretrain="sasrec",
    starts_from=("sasrec",),
    recipe=RECIPE,
)
class FAME(FacetPressure, SequentialRecommender):
    options: FAMEOptions
    accepts_item_attributes = True
    explains = True

    def __init__(self, num_items: int, config: ModelConfig, options: FAMEOptions | None = None):
        super().__init__(num_items, config, options or FAMEOptions())
        self.blocks = nn.ModuleList(
            TransformerBlock(config.hidden_size, config.num_heads, config.dropout)
            for _ in range(config.num_layers - 1)
        )
        self.facet_layer = FacetLayer(config, self.options)
        self.pretrained: list[str] = []  # parameters copied from SASRec by `prepare`
        # Eq. 11 collapses to one dot product per user; a mixture of softmaxes does not.
        self.dot_product_scores = self.options.fusion == "score"
        self.reset_parameters()

    def prepare(self, source: SequentialRecommender, seed: int) -> list[str]:
        """Start from SASRec as the paper does (Sec. 4.4.2); optionally warm-start the rest."""
        self.pretrained = init_fame_from_sasrec(self, source)
        if self.options.warm_start:
            generator = torch.Generator().manual_seed(seed)
            warm_start_new_parts(self, source, generator=generator)
        return self.pretrained

    def attach_data(self, data: SequenceData) -> None:
        """With --attribute-(gate-)weight: read the item attributes, one kind per head."""
        super().attach_data(data)  # --item-attributes
        if self.options.uses_attributes:
            self.read_attribute_kinds(data)

    def on_epoch_start(self, context: EpochContext) -> dict[str, Any]:
        """With --freeze-epochs K, the copied SASRec parameters stay fixed for K epochs."""
        if not self.pretrained:
            return {}
        frozen = context.epoch <= self.options.freeze_epochs
        names = set(self.pretrained)
        for name, parameter in self.named_parameters():
            if name in names:
                parameter.requires_grad_(not frozen)
        return {"pretrained_frozen": frozen}

    def reset_parameters(self) -> None:
        """Xavier-normal init of the backbone; the facet layer's per-head and per-expert
        matrices keep the fans their own modules use."""
        super().reset_parameters()
        self.facet_layer.attention.reset_parameters()
        self.facet_layer.reset_parameters()

    def facets(self, item_seq: torch.Tensor, last_only: bool = False) -> FacetOutput:
        x, real = self.embed(item_seq)  # (B, L, d)
        mask = self.attention_mask(real)
        for block in self.blocks:
            x = block(x, mask, real)
        return self.facet_layer(x, mask, last_only=last_only)

    def query_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        return self.facet_layer.query_vectors(self.facets(item_seq))  # (B, L, d)

    def last_query_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        out = self.facets(item_seq, last_only=True)  # the last layer at the last position only
        return self.facet_layer.query_vectors(out)[:, -1]  # (B, d)

    def loss(self, batch: TrainBatch | tuple[torch.Tensor, torch.Tensor]) -> Losses:
        """Eq. 18 over the integrated scores (Eq. 11), or with --fusion softmax the mixture of
        the heads' softmaxes: -log sum_h g_h p_h(target). With facet pressure on, named losses:
        that next-item loss plus the weighted attribute, gate-balance and head-diversity terms.
        """
        options = self.options
        if options.fusion == "score" and not options.facet_pressure:
            return self.next_item_loss(batch)
        parts = batch.parts if isinstance(batch, TrainBatch) else (batch,)
        outs = [self.facets(item_seq) for item_seq, _ in parts]
        reals = [target != 0 for _, target in parts]
        states = torch.cat([o.head_states[r] for o, r in zip(outs, reals)])  # (P, H, d')
        gates = torch.cat([o.gate[r] for o, r in zip(outs, reals)])  # (P, H)
        targets = torch.cat([target[r] for (_, target), r in zip(parts, reals)])  # (P,) 1..V
        if options.fusion == "score":
            queries = [self.facet_layer.query_vectors(out) for out in outs]
            next_item = self.next_item_loss(batch, part_queries=queries)
        else:
            items = self.facet_layer.item_sub_embeddings(self.item_vectors()[1:])
            next_item = mixture_of_softmaxes_loss(
                states, items, gates, targets - 1, self.loss_chunk
            )  # items (H, V, d')
        if not options.facet_pressure:
            return next_item
        return {"next_item": next_item, **self.pressure_losses(states, gates, targets)}

    def fuse(self, head_scores: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """(B, H, V + 1) head scores, (B, H) gate -> (B, V + 1) integrated scores: Eq. 11's
        gated sum, or with --fusion softmax log sum_h g_h softmax_h (a log-probability)."""
        if self.options.fusion == "score":
            scores = torch.einsum("bh,bhv->bv", gate, head_scores.nan_to_num(neginf=0.0))
        else:
            log_p = torch.log_softmax(head_scores, dim=-1)  # column 0 (-inf) gets probability 0
            scores = torch.logsumexp(log_p + torch.log(gate.clamp_min(1e-30))[:, :, None], dim=1)
        scores[:, 0] = float("-inf")
        return scores

    def score(self, item_seq: torch.Tensor) -> torch.Tensor:
        if self.options.fusion == "score":
            return super().score(item_seq)  # the collapsed query vector: one matmul
        with torch.autocast(item_seq.device.type, enabled=False):
            head_scores, out = self.head_scores(item_seq)
            return self.fuse(head_scores, out.gate[:, -1].float())

    def head_scores(self, item_seq: torch.Tensor) -> tuple[torch.Tensor, FacetOutput]:
        """(B, H, V + 1) every head's score of every item after the last position (Eq. 8)."""
        out = self.facets(item_seq, last_only=True)
        items = self.facet_layer.item_sub_embeddings(self.item_vectors())  # (H, V+1, d')
        scores = torch.einsum("bhe,hve->bhv", out.head_states[:, -1], items).float()
        scores[:, :, 0] = float("-inf")
        return scores, out

    @torch.no_grad()
    def explain(
        self, item_seq: torch.Tensor, k: int = 10, exclude: torch.Tensor | None = None
    ) -> Explanation:
        """Per-head top-k, integrated top-k, gate and router weights for each sequence.

        `exclude` is an optional (B, V + 1) boolean mask of items to leave out of every list.
        """
        head_scores, out = self.head_scores(item_seq)  # (B, H, V+1)
        gate = out.gate[:, -1].float()  # (B, H)
        scores = self.fuse(head_scores, gate)  # Eq. 11 (or the mixture of softmaxes)
        if exclude is not None:
            head_scores = head_scores.masked_fill(exclude[:, None, :], float("-inf"))
            scores = scores.masked_fill(exclude, float("-inf"))
        k = min(k, self.num_items)
        head_top = head_scores.topk(k, dim=-1)
        top = scores.topk(k, dim=-1)
        return Explanation(
            gate=gate,
            router=out.router[:, -1].float(),
            head_items=head_top.indices,
            head_scores=head_top.values,
            items=top.indices,
            scores=top.values,
        )
