"""Straightforward implementations to measure famerec against (speed only, same parameters).

* Every batch is padded to max_len and the loss computes logits at all B x max_len positions.
* FAME: a Python loop over the experts, and the H per-head logit tensors are materialized and
  mixed by the gate (Eq. 11 as written), instead of the collapsed query vector.
* Evaluation: batches padded to max_len in user order, every score sorted to find the rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from famerec.models import FAME, SequentialRecommender


def fame_head_states(model: FAME, item_seq: torch.Tensor):
    """FAME's forward with a Python loop over experts; returns F (B, L, H, d') and gate."""
    x, real = model.embed(item_seq)
    mask = model.attention_mask(real)
    for block in model.blocks:
        x = block(x, mask, real)
    layer = model.facet_layer
    attention = layer.attention
    batch, length, hidden = x.shape
    heads, experts, size = attention.num_heads, attention.num_experts, attention.head_size
    queries_in = layer.attn_norm(x)
    weight = attention.expert_queries.weight.view(heads, experts, size, hidden)
    bias = attention.expert_queries.bias.view(heads, experts, size)
    k = attention.key(x).view(batch, length, heads, size).transpose(1, 2)
    v = attention.value(x).view(batch, length, heads, size).transpose(1, 2)
    dropout = attention.dropout if model.training else 0.0
    outputs = []
    for n in range(experts):  # one attention call per expert
        q = F.linear(queries_in, weight[:, n].reshape(heads * size, hidden), bias[:, n].reshape(-1))
        q = q.view(batch, length, heads, size).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        outputs.append(out.transpose(1, 2))  # (B, L, H, d')
    expert_out = torch.stack(outputs, dim=3)  # (B, L, H, N, d')
    logits = torch.einsum("blhnk,hnkm->blhm", expert_out, attention.router)
    beta = torch.softmax(logits, dim=-1)
    f = (beta.unsqueeze(-1) * expert_out).sum(3)
    if layer.attn_residual:
        f = f + queries_in.view(batch, length, heads, size)
    head_states = layer.head_norm(f + layer.head_ffn(f))
    gate = torch.softmax(layer.head_gate(head_states.flatten(2)), dim=-1)
    return head_states, gate


def reference_logits(model: SequentialRecommender, item_seq: torch.Tensor) -> torch.Tensor:
    """(B, L, V) logits over the real items at every position."""
    items = model.item_embedding.weight[1:]
    if isinstance(model, FAME):
        head_states, gate = fame_head_states(model, item_seq)
        projection = model.facet_layer.facet_projection  # (H, d, d')
        logits = 0
        for head in range(projection.shape[0]):  # materialize each head's logits (Eq. 8)
            sub_embeddings = items @ projection[head]  # (V, d')
            logits = logits + gate[..., head : head + 1] * (
                head_states[:, :, head] @ sub_embeddings.T
            )
        return logits
    return model.query_vectors(item_seq) @ items.T


def reference_loss(model: SequentialRecommender, batch) -> torch.Tensor:
    """Cross-entropy from the full (B, max_len, V) logits of a one-part, max_len-wide batch."""
    ((item_seq, targets),) = batch.parts
    logits = reference_logits(model, item_seq)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten() - 1, ignore_index=-1)


@torch.inference_mode()
def reference_evaluate(model, prefixes, max_len: int, batch_size: int) -> int:
    """Rank every user's target by sorting all scores; returns the number of hits@10."""
    from famerec.data.batching import left_padded

    model.eval()
    hits = 0
    for start in range(0, len(prefixes), batch_size):
        stop = min(start + batch_size, len(prefixes))
        inputs = torch.from_numpy(
            left_padded(
                prefixes.items, prefixes.starts[start:stop], prefixes.ends[start:stop], max_len
            )
        )
        targets = torch.from_numpy(prefixes.targets[start:stop])
        scores = reference_logits(model, inputs)[:, -1]  # (B, V)
        order = scores.argsort(dim=1, descending=True) + 1
        ranks = (order == targets[:, None]).float().argmax(1)
        hits += int((ranks < 10).sum())
    return hits
