"""GRU4Rec (Hidasi, Karatzoglou, Baltrunas & Tikk, ICLR 2016), in RecBole's version.

The FAME paper ran GRU4Rec through RecBole (Sec. 5.3; RUCAIBox/RecBole,
recbole/model/sequential_recommender/gru4rec.py), and this file follows that code:

    item embedding x_t (d) -> dropout -> GRU, `--layers` layers of hidden size `--gru-hidden`,
    no biases -> dense projection back to d -> score of item v: dot product with x_v

trained on the next item at every position with full-softmax cross-entropy (RecBole's
`loss_type: CE`, the protocol of every famerec model; the shared `--loss sampled` applies too).
`--ranking-loss bpr` / `--ranking-loss top1` train with the 2016 paper's ranking losses instead
(Sec. 3.1.3), with the other targets of the mini-batch as negatives (its Sec. 3.1.2).

Defaults: RecBole's GRU4Rec settings are embedding size 64 (`--hidden 64`, the shared default),
GRU hidden size 128 (`--gru-hidden 128`, the default here), 1 GRU layer and dropout 0.3. The
layer count and the dropout are famerec's shared `--layers` and `--dropout`; the registration
sets GRU4Rec's own defaults for them to RecBole's 1 and 0.3 (SASRec's are 2 and 0.5).

Recipe (`RECIPE`; `--preset classic` trains without it, at a constant 1e-3 on batches of 256
for up to 200 epochs): Adam at a peak rate of 2e-3 on batches of 256, 100 warmup steps, cosine
decay to 0 over 30 epochs (CORE's recipe, decayed sooner). Found here, on Beauty's validation
split only (benchmarks/RESULTS.md, "GRU4Rec's recipe"): over three seeds its best validation
NDCG@10 is 0.0522 against the old recipe's 0.0505, its test NDCG@10 0.0389 against 0.0373
(paired p < 0.001), and a run takes 6.0 minutes of one thread instead of 10.0. SASRec's recipe
(3e-3, batches of 512, 25 epochs) stopped at 0.0488, 3 % below the old recipe's best. RecBole
trains GRU4Rec at its defaults: a constant 1e-3 on batches of 2,048, stopping after 10 epochs
without a gain.

Where famerec differs from RecBole, and why:
* famerec's sequences are left-padded; RecBole's are right-padded and read the GRU output at
  the last real item. Here the GRU has no biases (as RecBole's `nn.GRU(bias=False)`) and the
  padding's input is zero, so the state stays exactly zero through the padded prefix: with
  x = 0 and h = 0 the gates are sigma(0) = 1/2, the candidate state tanh(0) = 0 and the new state
  (1 - z) * 0 + z * 0 = 0. The first real item therefore starts from h_0 = 0, as it would without
  padding, and the outputs at real positions do not depend on the padding (tested).
* training: RecBole predicts the last item of every prefix (one training example per prefix);
  famerec reads the GRU output at every position of the training sequence (the same prefixes,
  computed in one pass), as for every famerec model. The output layer excludes the padding id.
* initialization: RecBole initializes only the first GRU layer with Xavier-uniform (deeper
  layers keep PyTorch's default); here every layer is (identical with one layer). The item
  embeddings are Xavier-normal as in RecBole, with the padding row at zero.
* `--ranking-loss bpr|top1`: the 2016 paper's session-parallel mini-batches and its negatives
  (the next items of the other sessions in the mini-batch) become famerec's random batches and
  the targets of all other real positions of the batch; a position is not its own negative.
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
from famerec.models.registry import cosine_recipe, register


@dataclass
class GRU4RecOptions(ModelOptions):
    """GRU4Rec's own settings (`--model gru4rec`)."""

    gru_hidden: int = option(
        128, "GRU hidden state size (RecBole: 128); --hidden is the item embedding size"
    )
    ranking_loss: str = option(
        "none",
        "none: the next-item cross-entropy of --loss (RecBole's CE, the FAME protocol); bpr or "
        "top1: instead, the 2016 paper's ranking losses with in-batch negatives",
        choices=("none", "bpr", "top1"),
    )

    def validate(self, model: ModelConfig, train: TrainConfig) -> None:
        if self.gru_hidden <= 0:
            raise ConfigError(f"--gru-hidden must be positive, got {self.gru_hidden}")


def in_batch_ranking_loss(
    queries: torch.Tensor, targets: torch.Tensor, item_vectors: torch.Tensor, kind: str
) -> torch.Tensor:
    """BPR or TOP1 of the 2016 paper (Sec. 3.1.3), each position's negatives being the targets
    of the other positions of the batch. queries (N, d), targets (N,) ids, item_vectors (V+1, d).
    """
    scores = (queries @ item_vectors[targets].T).float()  # (N, N): r_{i, target_j}
    positive = scores.diagonal().unsqueeze(1)  # (N, 1): r_{i, target_i}
    if kind == "bpr":
        pairs = -F.logsigmoid(positive - scores)  # -log sigma(r_i - r_j)
    else:  # top1: sigma(r_j - r_i) + sigma(r_j^2)
        pairs = torch.sigmoid(scores - positive) + torch.sigmoid(scores.square())
    negatives = ~torch.eye(len(targets), dtype=torch.bool, device=scores.device)
    return pairs[negatives].mean()


RECIPE = cosine_recipe(30, lr=2e-3, batch_size=256, warmup_steps=100)


@register(
    "gru4rec",
    summary="GRU4Rec (Hidasi et al., ICLR 2016), RecBole's version: a GRU over item embeddings "
    "(defaults: RecBole's --layers 1 --dropout 0.3)",
    options=GRU4RecOptions,
    defaults={"model.num_layers": 1, "model.dropout": 0.3},
    recipe=RECIPE,
)
class GRU4Rec(SequentialRecommender):
    def __init__(self, num_items: int, config: ModelConfig, options: GRU4RecOptions | None = None):
        super().__init__(num_items, config, options or GRU4RecOptions())
        del self.position_embedding  # GRU4Rec has none; self.embedding_dropout is its dropout
        self.gru = nn.GRU(
            config.hidden_size,
            self.options.gru_hidden,
            num_layers=config.num_layers,
            bias=False,  # as RecBole; this is also what keeps the left padding inert
            batch_first=True,
        )
        self.dense = nn.Linear(self.options.gru_hidden, config.hidden_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """RecBole's init: Xavier-normal item embeddings, Xavier-uniform GRU weights; the dense
        layer keeps PyTorch's default."""
        nn.init.xavier_normal_(self.item_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        for weight in self.gru.parameters():
            nn.init.xavier_uniform_(weight)
        self.dense.reset_parameters()

    def gru_states(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded ids -> (B, L, gru_hidden) GRU states; zero throughout the padding."""
        item_seq = item_seq[:, -self.max_len :]
        real = (item_seq != 0).unsqueeze(-1)  # (B, L, 1)
        x = self.embedding_dropout(self.item_embedding(item_seq)) * real  # (B, L, d), 0 at padding
        states, _ = self.gru(x)  # h_0 = 0; zero input keeps it 0 (no biases)
        return states

    def query_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        return self.dense(self.gru_states(item_seq))  # (B, L, d)

    def last_query_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        return self.dense(self.gru_states(item_seq)[:, -1])  # (B, d)

    def loss(self, batch: TrainBatch | tuple[torch.Tensor, torch.Tensor]) -> Losses:
        kind = self.options.ranking_loss
        if kind == "none":
            return self.next_item_loss(batch)
        queries, targets = self.real_position_queries(batch)
        return in_batch_ranking_loss(queries, targets, self.item_embedding.weight, kind)
