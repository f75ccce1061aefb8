import pytest
import torch
import torch.nn.functional as F

from famerec.models import softmax_cross_entropy


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_cross_entropy_matches_plain(chunk):
    torch.manual_seed(0)
    queries = torch.randn(50, 8, requires_grad=True)
    weights = torch.randn(30, 8, requires_grad=True)
    targets = torch.randint(0, 30, (50,))
    plain = F.cross_entropy(queries @ weights.T, targets)
    plain_grads = torch.autograd.grad(plain, (queries, weights))
    fused = softmax_cross_entropy(queries, weights, targets, chunk_size=chunk)
    fused_grads = torch.autograd.grad(fused, (queries, weights))
    assert fused.item() == pytest.approx(plain.item(), rel=1e-6)
    for ours, theirs in zip(fused_grads, plain_grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_chunked_cross_entropy_survives_extreme_logits():
    queries = torch.tensor([[100.0, 0.0], [0.0, 1.0]], requires_grad=True)
    weights = torch.tensor([[10.0, 0.0], [-10.0, 0.0], [0.0, 1.0]], requires_grad=True)
    targets = torch.tensor([1, 2])  # first target's probability underflows to 0 in float32
    fused = softmax_cross_entropy(queries, weights, targets, chunk_size=2)
    plain = F.cross_entropy(queries @ weights.T, targets)
    assert torch.isfinite(fused) and fused.item() == pytest.approx(plain.item(), rel=1e-6)
