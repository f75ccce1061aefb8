"""What every sequential model shares: embeddings, the training loss and full-item scoring.

A model only has to say how it turns a left-padded item sequence into one query vector per
position (`query_vectors`); the score of item v after position t is then the dot product of
that vector with v's embedding (the output layer is tied to the item embeddings).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from famerec.config import ModelConfig
from famerec.data.batching import TrainBatch

LAYER_NORM_EPS = 1e-8  # as in SASRec


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean full-softmax cross-entropy of `queries @ item_weights.T`, in chunks of positions.

    The gradients are computed chunk by chunk during the forward pass, so the full
    (positions x items) logit matrix never exists; each chunk's logits stay in cache.
    """

    @staticmethod
    def forward(ctx, queries, item_weights, targets, chunk_size):
        # queries (N, d), item_weights (V, d), targets (N,) in [0, V)
        count = queries.shape[0]
        grad_queries = torch.empty_like(queries)
        grad_items = torch.zeros(item_weights.shape, dtype=torch.float32, device=queries.device)
        total = torch.zeros((), dtype=torch.float32, device=queries.device)
        for start in range(0, count, chunk_size):
            chunk = queries[start : start + chunk_size]  # (c, d)
            target = targets[start : start + chunk_size]  # (c,)
            logits = (chunk @ item_weights.T).float()  # (c, V)
            prob = torch.softmax(logits, dim=1)
            rows = torch.arange(len(target), device=target.device)
            target_prob = prob[rows, target]
            # -log p is exact unless p underflows; then fall back to logsumexp for those rows.
            loss = -torch.log(target_prob)
            tiny = target_prob < 1e-30
            if bool(tiny.any()):
                exact = torch.logsumexp(logits[tiny], dim=1) - logits[tiny, target[tiny]]
                loss = loss.masked_scatter(tiny, exact)
            total += loss.sum()
            prob[rows, target] -= 1.0  # d(loss)/d(logits)
            prob = prob.to(chunk.dtype)
            grad_queries[start : start + chunk_size] = prob @ item_weights.to(chunk.dtype)
            grad_items += (prob.T @ chunk).float()
        ctx.save_for_backward(grad_queries / count, (grad_items / count).to(item_weights.dtype))
        return total / count

    @staticmethod
    def backward(ctx, grad_output):
        grad_queries, grad_items = ctx.saved_tensors
        return grad_output * grad_queries, grad_output * grad_items, None, None


def softmax_cross_entropy(
    queries: torch.Tensor, item_weights: torch.Tensor, targets: torch.Tensor, chunk_size: int = 0
) -> torch.Tensor:
    """Cross-entropy over all items; `chunk_size` > 0 uses the fused chunked version."""
    if chunk_size > 0 and torch.is_grad_enabled() and queries.requires_grad:
        return ChunkedCrossEntropy.apply(queries, item_weights, targets, chunk_size)
    return F.cross_entropy((queries @ item_weights.T).float(), targets)


class SequentialRecommender(nn.Module):
    """Base class: item and position embeddings, `loss(batch)` and `score(item_seq)`."""

    def __init__(self, num_items: int, config: ModelConfig):
        super().__init__()
        self.num_items = num_items
        self.config = config
        self.hidden_size = config.hidden_size
        self.max_len = config.max_len
        self.loss_chunk = 0  # set by the trainer; 0 = plain cross-entropy
        self.item_embedding = nn.Embedding(num_items + 1, config.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, config.hidden_size)
        self.embedding_dropout = nn.Dropout(config.dropout)

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
        x = self.item_embedding(item_seq) * math.sqrt(self.hidden_size)
        x = self.embedding_dropout(x + self.position_embedding(positions))  # (B, L, d)
        return x * real.unsqueeze(-1), real

    @staticmethod
    def attention_mask(real: torch.Tensor) -> torch.Tensor:
        """(B, 1, L, L) True where query i may attend to key j: j <= i and j is a real item.

        The diagonal is always allowed so that padding rows stay finite (they are discarded).
        """
        length = real.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=real.device).tril()
        diagonal = torch.eye(length, dtype=torch.bool, device=real.device)
        return ((causal & real[:, None, None, :]) | diagonal).contiguous()

    def query_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item ids -> (B, L, d) vectors whose dot product with an item
        embedding is that item's score as the next item."""
        raise NotImplementedError

    def last_query_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, d) the query vector after the last position (models may skip the others)."""
        return self.query_vectors(item_seq)[:, -1]

    def loss(self, batch: TrainBatch | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Full-softmax cross-entropy of the next item at every real position (Eq. 18), averaged
        over all real positions of the batch.

        `batch` is (item_seq, targets), both (B, L) with target 0 at padding (no loss), or a
        TrainBatch whose parts of similar length are encoded separately.
        """
        parts = batch.parts if isinstance(batch, TrainBatch) else (batch,)
        queries, targets = [], []
        for item_seq, target in parts:
            real = target != 0
            queries.append(self.query_vectors(item_seq)[real])  # (positions, d)
            targets.append(target[real] - 1)  # padding is never a target
        queries = queries[0] if len(parts) == 1 else torch.cat(queries)
        targets = targets[0] if len(parts) == 1 else torch.cat(targets)
        item_weights = self.item_embedding.weight[1:]
        return softmax_cross_entropy(queries, item_weights, targets, self.loss_chunk)

    def score(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item ids -> (B, num_items + 1) scores of every next item.

        Column 0 (padding) is -inf, so it never wins.
        """
        last = self.last_query_vectors(item_seq)  # (B, d)
        # Always in float32: rounding scores to bf16 would create ties in the ranking.
        with torch.autocast(last.device.type, enabled=False):
            scores = last.float() @ self.item_embedding.weight.float().T  # (B, V + 1)
        scores[:, 0] = float("-inf")
        return scores

    def item_vectors(self) -> torch.Tensor:
        """(num_items + 1, d) the vectors that `query_vectors` are scored against."""
        return self.item_embedding.weight
