import pytest
import torch
import torch.nn.functional as F

from famerec.config import ModelConfig, RunConfig
from famerec.data.batching import TrainBatch, prefix_batch
from famerec.errors import ConfigError
from famerec.models import build_model, miasrec
from famerec.models.miasrec import MiasRec, MiasRecOptions, entmax
from tests.conftest import tiny_overrides
from tests.models import session_checks

NUM_ITEMS = 30


def model(**options) -> MiasRec:
    torch.manual_seed(0)
    config = ModelConfig(name="miasrec", hidden_size=16, num_heads=2, max_len=10, dropout=0.0)
    return build_model(config, NUM_ITEMS, MiasRecOptions(**options)).eval()


@pytest.mark.parametrize("alpha", [1.5, 1.25, 2.0])
def test_entmax_is_sparse_and_sums_to_one(alpha):
    scores = torch.tensor([[3.0, 1.0, 0.5, -2.0, 0.0], [0.3, 0.2, 0.25, 0.1, -3.0]])
    p = entmax(scores, alpha)
    torch.testing.assert_close(p.sum(-1), torch.ones(2))
    assert (p >= 0).all() and (p == 0).any(dim=-1).all()  # exact zeros on spread-out scores
    assert (p[:, :1] > 0).all()  # the best entry is always kept
    higher = scores.unsqueeze(-1) > scores.unsqueeze(-2)
    assert (p.unsqueeze(-1) >= p.unsqueeze(-2))[higher].all()  # order preserved


def test_entmax_matches_the_closed_form_at_alpha_two():
    """alpha = 2 is sparsemax: the Euclidean projection onto the simplex."""
    scores = torch.tensor([[1.0, 0.4, 0.3, -1.0]])
    # support {0, 1, 2}: tau = (1.0 + 0.4 + 0.3 - 1) / 3
    tau = (1.0 + 0.4 + 0.3 - 1) / 3
    expected = (scores - tau).clamp(min=0)
    torch.testing.assert_close(entmax(scores, 2.0), expected)


def test_entmax_gradient_is_exact():
    scores = (torch.randn(4, 7, dtype=torch.float64) * 2).requires_grad_()
    weights = torch.arange(7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: (entmax(z, 1.5) * weights).sum(), (scores,))


def test_padding_gets_weight_zero():
    mias = model()
    seq = torch.tensor([[0, 0, 0, 4, 5, 6], [0, 0, 0, 0, 0, 9], [1, 2, 3, 1, 2, 8]])
    intents = mias.intents(seq)  # (3, 7): the six positions and the mean token
    assert (intents.weights[0, :3] == 0).all() and (intents.weights[1, :5] == 0).all()
    assert (intents.vectors[0, :3] == 0).all() and not intents.kept[0, :3].any()
    torch.testing.assert_close(intents.weights.sum(-1), torch.ones(3))
    masked = entmax(torch.zeros(1, 5), 1.5, torch.tensor([[False, True, True, False, True]]))
    torch.testing.assert_close(masked, torch.tensor([[0.0, 1 / 3, 1 / 3, 0.0, 1 / 3]]))


def test_padding_never_reaches_a_readout():
    mias = model()
    expected = mias.score(torch.tensor([[3, 4, 5, 3]]))
    torch.testing.assert_close(
        mias.score(torch.tensor([[0, 0, 0, 3, 4, 5, 3]])), expected, atol=1e-5, rtol=1e-5
    )
    with torch.no_grad():
        mias.item_embedding.weight[0] = torch.randn(16)
        mias.frequency_embedding.weight[0] = torch.randn(16)
    scores = mias.score(torch.tensor([[0, 0, 3, 4, 5, 3]]))
    torch.testing.assert_close(scores[:, 1:], expected[:, 1:], atol=1e-5, rtol=1e-5)


def test_scores_mix_the_best_and_the_mean_kept_intent():
    mias = model(beta=0.7, temperature=0.5)
    with torch.no_grad():  # large importances: entmax drops some intents, which must not win
        mias.importance.weight.mul_(500.0)
    seq = torch.tensor([[0, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    intents = mias.intents(seq)
    assert (~intents.kept & (F.pad(seq, (0, 1), value=1) != 0)).any()  # a real intent dropped
    items = F.normalize(mias.item_embedding.weight[1:], dim=-1)
    for row in range(2):
        kept = intents.vectors[row, intents.kept[row]]  # (k, d) unit vectors
        assert kept.norm(dim=-1).allclose(torch.ones(len(kept)))
        cosines = kept @ items.T  # (k, V)
        expected = (0.7 * cosines.max(0).values + 0.3 * cosines.mean(0)) / 0.5
        torch.testing.assert_close(mias.score(seq)[row, 1:], expected)


def test_frequency_counts_repeats_up_to_max_repeat():
    mias = model(max_repeat=2)
    seq = torch.tensor([[0, 5, 5, 5, 6]])
    calls = []
    mias.frequency_embedding.register_forward_hook(lambda m, i, o: calls.append(i[0]))
    mias.intents(seq)
    assert calls[0].tolist() == [[0, 2, 2, 2, 1, 1]]  # padding 0, capped at 2, mean token 1


def test_loss_trains_on_every_prefix():
    session_checks.check_loss_is_the_mean_over_every_prefix(model())


def test_invalid_options():
    base = tiny_overrides("unused.txt", **{"model.name": "miasrec"})
    bad = (("entmax_alpha", 1.0), ("beta", 1.5), ("temperature", 0.0), ("max_repeat", 0))
    for key, value in bad:
        with pytest.raises(ConfigError):
            RunConfig().with_overrides({**base, f"miasrec.{key}": value}).validate()


class TestProtocol(session_checks.SessionProtocol):
    name = "miasrec"
    flags = ["--entmax-alpha", "--beta", "--temperature", "--max-repeat", "--inner-size"]


def reference_logits(mias: MiasRec, item_seq: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The logits as computed before the kept intents were packed (main 0719ca8): the mean of
    the cosines as its own product, the max over all T with dropped intents pushed down."""
    intents = mias.intents(item_seq)
    beta, temperature = mias.options.beta, mias.options.temperature
    mean = intents.vectors.sum(1) / intents.kept.sum(1, keepdim=True)
    offset = torch.where(intents.kept, 0.0, -4.0).unsqueeze(-1)  # (B, T, 1)
    vectors = torch.cat([intents.vectors, offset], -1)
    cosines = vectors @ F.pad(items, (0, 1), value=1.0).T  # (B, T, V')
    return (beta * cosines.max(1).values + (1 - beta) * mean @ items.T) / temperature


def reference_loss(mias: MiasRec, batch) -> torch.Tensor:
    items = F.normalize(mias.item_dropout(mias.item_embedding.weight[1:]), dim=-1)
    logits, targets = [], []
    for item_seq, target in prefix_batch(TrainBatch((batch,), 0)).parts:
        logits.append(reference_logits(mias, item_seq, items))
        targets.append(target[:, -1] - 1)
    return F.cross_entropy(torch.cat(logits), torch.cat(targets))


def random_batch(seed: int, rows: int = 12, width: int = 10):
    """Left-padded random sequences (some with repeats) and their next items."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (rows,), generator=generator)
    items = torch.randint(1, NUM_ITEMS + 1, (rows, width + 1), generator=generator)
    items[:, ::3] = items[:, 1::3][:, : items[:, ::3].shape[1]]  # repeats inside a sequence
    real = torch.arange(width + 1) >= width + 1 - (lengths[:, None] + 1)
    items = items * real
    return items[:, :-1], items[:, 1:] * real[:, :-1]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sharp", [False, True])
@pytest.mark.parametrize("chunk", [1 << 24, 31 * 7])  # and chunks of a few sessions
def test_packed_scores_loss_and_gradients_match_the_reference(seed, sharp, chunk, monkeypatch):
    """Packing the kept intents and moving the mean inside the max change nothing: the same
    scores, loss and parameter gradients as the former computation (dropout off; float64,
    so that only rounding can differ)."""
    monkeypatch.setattr(miasrec, "SCORE_CHUNK", chunk)
    mias = model(beta=0.8, temperature=0.2).double()
    if sharp:  # large importances: entmax drops intents
        with torch.no_grad():
            mias.importance.weight.mul_(300.0)
    inputs, targets = random_batch(seed)
    items = F.normalize(mias.item_embedding.weight, dim=-1)
    expected = reference_logits(mias, inputs, items)
    expected[:, 0] = float("-inf")
    torch.testing.assert_close(mias.score(inputs), expected)
    losses, gradients = [], []
    for compute in (reference_loss, lambda m, b: m.loss(b)):
        mias.zero_grad()
        loss = compute(mias, (inputs, targets))
        loss.backward()
        losses.append(loss.detach())
        gradients.append(
            {n: p.grad.clone() for n, p in mias.named_parameters() if p.grad is not None}
        )
    torch.testing.assert_close(losses[1], losses[0])
    assert gradients[1].keys() == gradients[0].keys()
    for name, grad in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], grad, atol=1e-12, rtol=1e-9, msg=name)


def test_loss_runs_under_bf16_autocast():
    mias = model().train()
    inputs, targets = random_batch(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = mias.loss((inputs, targets))
    loss.backward()
    reference = reference_loss(mias, (inputs, targets)).detach()
    torch.testing.assert_close(loss.detach(), reference, atol=0.05, rtol=0.02)
    assert all(
        p.grad.dtype == torch.float32 and p.grad.isfinite().all()
        for p in mias.parameters()
        if p.grad is not None
    )
