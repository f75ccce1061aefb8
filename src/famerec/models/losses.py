"""Losses shared by the models: full-softmax cross-entropy (plain or fused in chunks),
InfoNCE / NT-Xent with in-batch negatives, and a sampled binary cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint


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


def info_nce(
    first: torch.Tensor,
    second: torch.Tensor,
    temperature: float = 1.0,
    similarity: str = "dot",
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """NT-Xent over a batch of positive pairs (first[i], second[i]), both (B, d).

    Each of the 2B views is classified against the other 2B - 1 views: its partner is the
    positive, every other view of the batch a negative (SimCLR's NT-Xent, as CL4SRec, DuoRec
    and ICLRec use it). `similarity` is "dot" or "cosine". `exclude` (B, B), True where
    sequence j must not be a negative for sequence i (false negatives, e.g. the same target);
    a pair is never excluded from itself.
    """
    if similarity == "cosine":
        first, second = F.normalize(first, dim=-1), F.normalize(second, dim=-1)
    elif similarity != "dot":
        raise ValueError(f"unknown similarity '{similarity}'")
    batch = first.shape[0]
    views = torch.cat([first, second]).float()  # (2B, d)
    logits = views @ views.T / temperature  # (2B, 2B)
    self_pairs = torch.eye(2 * batch, dtype=torch.bool, device=views.device)
    mask = self_pairs
    if exclude is not None:
        exclude = exclude & ~torch.eye(batch, dtype=torch.bool, device=views.device)
        mask = mask | exclude.repeat(2, 2)
    logits = logits.masked_fill(mask, float("-inf"))
    partner = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(views.device)
    return F.cross_entropy(logits, partner)


def sampled_binary_cross_entropy(
    positive_logits: torch.Tensor, negative_logits: torch.Tensor
) -> torch.Tensor:
    """Mean of -log sigmoid(positive) - log(1 - sigmoid(negative)), the original SASRec and
    GRU4Rec-style loss with sampled negatives; logits of any matching shapes."""
    positive = F.binary_cross_entropy_with_logits(
        positive_logits.float(), torch.ones_like(positive_logits, dtype=torch.float32)
    )
    negative = F.binary_cross_entropy_with_logits(
        negative_logits.float(), torch.zeros_like(negative_logits, dtype=torch.float32)
    )
    return positive + negative


def mixture_of_softmaxes_loss(
    head_queries: torch.Tensor,
    head_items: torch.Tensor,
    gate: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 0,
) -> torch.Tensor:
    """Mean of -log sum_h g_h softmax_v(q_h . x_v^(h))[target]: each head's own softmax over
    all items, mixed by the gate (a mixture of softmaxes).

    head_queries (N, H, d'), head_items (H, V, d'), gate (N, H) rows summing to 1, targets (N,)
    in [0, V). With `chunk_size` > 0 the (N, H, V) logits are computed chunk by chunk and
    recomputed in the backward pass, so that they never exist in full.
    """
    count, heads = head_queries.shape[0], head_queries.shape[1]

    def chunk_loss(queries: torch.Tensor, weights: torch.Tensor, target: torch.Tensor):
        logits = torch.einsum("nhe,hve->nhv", queries, head_items).float()  # (n, H, V)
        picked = logits.gather(2, target[:, None, None].expand(-1, heads, 1)).squeeze(2)
        log_p = picked - torch.logsumexp(logits, dim=2)  # (n, H): log p_h(target)
        log_gate = torch.log(weights.float().clamp_min(1e-30))
        return -torch.logsumexp(log_gate + log_p, dim=1).sum()

    if chunk_size <= 0 or not torch.is_grad_enabled():
        return chunk_loss(head_queries, gate, targets) / count
    total = head_queries.new_zeros((), dtype=torch.float32)
    for start in range(0, count, chunk_size):
        end = start + chunk_size
        total = total + torch.utils.checkpoint.checkpoint(
            chunk_loss,
            head_queries[start:end],
            gate[start:end],
            targets[start:end],
            use_reentrant=False,
        )
    return total / count


def gate_balance_loss(gate: torch.Tensor) -> torch.Tensor:
    """mean_n H(g_n) - H(mean_n g_n) of a gate (N, H) whose rows sum to 1: low when each row
    is confident (one head) and the rows together use every head equally. It equals minus the
    mutual information between the row and the chosen head; its range is [-log H, log H].
    """
    gate = gate.float()
    log_gate = torch.log(gate.clamp_min(1e-30))
    per_row = -(gate * log_gate).sum(1).mean()  # mean entropy of each row's head weights
    usage = gate.mean(0)  # (H,) share of the rows' weight each head gets
    overall = -(usage * torch.log(usage.clamp_min(1e-30))).sum()
    return per_row - overall


def sampled_softmax_cross_entropy(
    queries: torch.Tensor,
    item_weights: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of each target against K sampled items shared by the whole batch, for
    catalogs too large for the full softmax.

    queries (N, d), item_weights (V, d), targets (N,) and negatives (K,) in [0, V). With
    `log_q` (V,), the log-probability of sampling each item, every logit is corrected by
    -log q (the logQ correction), so that popular, often-sampled items are not over-penalized.
    A negative that equals the row's target (an accidental hit) is left out of that row.
    """
    positive = (queries * item_weights[targets]).sum(-1).float()  # (N,)
    negative = (queries @ item_weights[negatives].T).float()  # (N, K)
    if log_q is not None:
        positive = positive - log_q[targets]
        negative = negative - log_q[negatives][None, :]
    negative = negative.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([positive[:, None], negative], dim=1)  # (N, 1 + K): the target first
    return F.cross_entropy(logits, torch.zeros_like(targets))


class NegativeSampler:
    """Draws the negatives of `sampled_softmax_cross_entropy`: uniform over the items, or in
    proportion to their training frequency (popularity), with the log-probabilities for the
    logQ correction. Randomness comes from torch's global generator (saved in checkpoints)."""

    def __init__(self, item_counts: torch.Tensor, num_negatives: int, kind: str = "uniform"):
        # item_counts (V,): training occurrences of items 1..V (index 0 = item 1)
        counts = item_counts.double()
        if kind == "uniform":
            probs = torch.full_like(counts, 1.0 / len(counts))
        elif kind == "popularity":
            smoothed = counts + 1.0  # never-seen items keep a small chance
            probs = smoothed / smoothed.sum()
        else:
            raise ValueError(f"unknown negative sampling '{kind}'")
        self.kind = kind
        self.num_negatives = num_negatives
        self.probs = probs.float()
        self.log_q = torch.log(probs).float()

    def to(self, device: torch.device) -> NegativeSampler:
        self.probs, self.log_q = self.probs.to(device), self.log_q.to(device)
        return self

    def sample(self) -> torch.Tensor:
        """(K,) item indices in [0, V), with replacement."""
        if self.kind == "uniform":
            return torch.randint(len(self.probs), (self.num_negatives,), device=self.probs.device)
        return torch.multinomial(self.probs, self.num_negatives, replacement=True)
