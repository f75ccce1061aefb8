import pytest
import torch

from famerec.config import ModelConfig, RunConfig
from famerec.errors import ConfigError, FamerecError
from famerec.models import FAME, FAMEOptions, MoEAttention, build_model
from famerec.models.layers import MultiHeadAttention

NUM_ITEMS = 40


def fame(heads=2, experts=4, **kwargs) -> FAME:
    torch.manual_seed(0)
    config = ModelConfig(name="fame", hidden_size=64, num_heads=heads, max_len=10, dropout=0.0)
    model = build_model(config, NUM_ITEMS, FAMEOptions(num_experts=experts, **kwargs)).eval()
    assert isinstance(model, FAME)
    return model


SEQ = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7], [0, 0, 0, 0, 0, 9]])


def test_shapes_and_weights_sum_to_one():
    model = fame(heads=4, experts=3)
    out = model.facets(SEQ)
    batch, length = SEQ.shape
    assert out.head_states.shape == (batch, length, 4, 16)
    assert out.gate.shape == (batch, length, 4)
    assert out.router.shape == (batch, length, 4, 3)
    torch.testing.assert_close(out.gate.sum(-1), torch.ones(batch, length))
    torch.testing.assert_close(out.router.sum(-1), torch.ones(batch, length, 4))
    assert model.score(SEQ).shape == (batch, NUM_ITEMS + 1)


def test_collapse_equals_explicit_per_head_sum():
    model = fame(heads=4, experts=2)
    head_scores, out = model.head_scores(SEQ)  # (B, H, V+1), Eq. 8
    gate = out.gate[:, -1]  # (B, H)
    explicit = (gate.unsqueeze(-1) * head_scores[:, :, 1:]).sum(1)  # Eq. 11
    torch.testing.assert_close(model.score(SEQ)[:, 1:], explicit, rtol=1e-5, atol=1e-5)


def test_head_scores_use_item_sub_embeddings():
    model = fame(heads=2, experts=2)
    head_scores, out = model.head_scores(SEQ)
    w_f = model.facet_layer.facet_projection  # (H, d, d')
    x_v = model.item_embedding.weight  # (V+1, d)
    head = 1
    expected = (x_v @ w_f[head]) @ out.head_states[:, -1, head].T  # (V+1, B)
    torch.testing.assert_close(head_scores[:, head, 1:], expected.T[:, 1:], rtol=1e-5, atol=1e-5)


def test_single_expert_is_plain_attention_with_the_same_query_weights():
    torch.manual_seed(0)
    moe = MoEAttention(hidden_size=64, num_heads=4, num_experts=1, dropout=0.0).eval()
    torch.nn.init.normal_(moe.router)
    plain = MultiHeadAttention(hidden_size=64, num_heads=4, dropout=0.0).eval()
    plain.query.load_state_dict(moe.expert_queries.state_dict())
    plain.key.load_state_dict(moe.key.state_dict())
    plain.value.load_state_dict(moe.value.state_dict())
    x = torch.randn(3, 7, 64)
    real = torch.ones(3, 7, dtype=torch.bool)
    real[0, :2] = False
    mask = FAME.attention_mask(real)
    f, beta = moe(x, x, mask)
    torch.testing.assert_close(beta, torch.ones_like(beta))
    torch.testing.assert_close(f.flatten(2), plain(x, x, mask))


def test_experts_are_mixed_by_the_router():
    torch.manual_seed(0)
    moe = MoEAttention(hidden_size=64, num_heads=2, num_experts=3, dropout=0.0).eval()
    x = torch.randn(2, 5, 64)
    mask = FAME.attention_mask(torch.ones(2, 5, dtype=torch.bool))
    f, beta = moe(x, x, mask)
    # recompute expert 0..2 of head 1 by hand (Eqs. 12-17)
    head, size = 1, 32
    k = moe.key(x)[..., head * size : (head + 1) * size]
    v = moe.value(x)[..., head * size : (head + 1) * size]
    q_all = moe.expert_queries(x).view(2, 5, 2, 3, size)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    outs = []
    for n in range(3):
        scores = q_all[:, :, head, n] @ k.transpose(1, 2) / size**0.5
        outs.append(torch.softmax(scores.masked_fill(~causal, float("-inf")), -1) @ v)
    experts = torch.stack(outs, dim=2)  # (B, L, N, d')
    logits = experts.flatten(2) @ moe.router[head].reshape(3 * size, 3)
    expected_beta = torch.softmax(logits, -1)
    torch.testing.assert_close(beta[:, :, head], expected_beta, rtol=1e-5, atol=1e-6)
    expected_f = (expected_beta.unsqueeze(-1) * experts).sum(2)
    torch.testing.assert_close(f[:, :, head], expected_f, rtol=1e-5, atol=1e-6)


def test_causality():
    model = fame()
    seq = torch.tensor([[1, 2, 3, 4, 5, 6]])
    changed = seq.clone()
    changed[0, 4:] = torch.tensor([20, 30])
    before, after = model.query_vectors(seq), model.query_vectors(changed)
    torch.testing.assert_close(before[:, :4], after[:, :4])
    assert not torch.allclose(before[:, 4:], after[:, 4:])


def test_explain_integrated_scores_equal_score():
    model = fame(heads=2, experts=4)
    explanation = model.explain(SEQ, k=5)
    scores = model.score(SEQ)
    torch.testing.assert_close(
        explanation.scores, scores.gather(1, explanation.items), rtol=1e-5, atol=1e-5
    )
    assert explanation.items.tolist() == scores.topk(5).indices.tolist()
    torch.testing.assert_close(explanation.gate.sum(-1), torch.ones(3))
    torch.testing.assert_close(explanation.router.sum(-1), torch.ones(3, 2))
    assert explanation.head_items.shape == (3, 2, 5)
    assert (explanation.head_items != 0).all() and (explanation.items != 0).all()


def test_explain_excludes_items():
    model = fame()
    exclude = torch.zeros(3, NUM_ITEMS + 1, dtype=torch.bool)
    top = model.explain(SEQ, k=3).items
    exclude[torch.arange(3), top[:, 0]] = True
    again = model.explain(SEQ, k=3, exclude=exclude)
    assert (again.items[:, 0] != top[:, 0]).all()
    assert not (again.head_items == top[:, :1, None]).any()


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"model.num_heads": 3}, "--heads in"),
        ({"model.hidden_size": 96, "model.num_heads": 2}, "--hidden in"),
        ({"fame.num_experts": 0}, "--experts from 1 to 32"),
        ({"fame.num_experts": 33}, "--experts from 1 to 32"),
    ],
)
def test_invalid_combinations(overrides, words):
    with pytest.raises(ConfigError, match=words):
        RunConfig().with_overrides({"model.name": "fame", **overrides}).validate()


@pytest.mark.parametrize("heads", [1, 2, 4, 8, 16])
def test_every_paper_head_count_runs(heads):
    model = fame(heads=heads, experts=2)
    assert model.score(SEQ).isfinite()[:, 1:].all()


def test_last_position_shortcut_equals_the_full_pass():
    model = fame(heads=4, experts=3)
    torch.testing.assert_close(
        model.last_query_vectors(SEQ), model.query_vectors(SEQ)[:, -1], rtol=1e-5, atol=1e-6
    )


def test_mixture_of_softmaxes_loss_matches_its_definition():
    from famerec.models.losses import mixture_of_softmaxes_loss

    torch.manual_seed(0)
    queries = torch.randn(7, 3, 4, requires_grad=True)
    items = torch.randn(3, 11, 4, requires_grad=True)
    gate = torch.softmax(torch.randn(7, 3), -1)
    targets = torch.randint(0, 11, (7,))
    probs = torch.softmax(torch.einsum("nhe,hve->nhv", queries, items), -1)  # (N, H, V)
    mixed = (gate[:, :, None] * probs).sum(1)  # (N, V)
    expected = -torch.log(mixed[torch.arange(7), targets]).mean()
    plain = mixture_of_softmaxes_loss(queries, items, gate, targets)
    chunked = mixture_of_softmaxes_loss(queries, items, gate, targets, chunk_size=3)
    torch.testing.assert_close(plain, expected)
    torch.testing.assert_close(chunked, expected)
    grads = torch.autograd.grad(chunked, (queries, items))
    expected_grads = torch.autograd.grad(expected, (queries, items))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


def test_softmax_fusion_scores_are_log_probabilities_of_the_mixture():
    model = fame(heads=4, experts=2, fusion="softmax")
    assert not model.dot_product_scores
    scores = model.score(SEQ)  # (B, V + 1)
    assert torch.isneginf(scores[:, 0]).all()
    torch.testing.assert_close(scores[:, 1:].exp().sum(1), torch.ones(3))
    head_scores, out = model.head_scores(SEQ)
    probs = torch.softmax(head_scores, -1)  # (B, H, V + 1)
    mixed = (out.gate[:, -1, :, None] * probs).sum(1)
    torch.testing.assert_close(scores[:, 1:], mixed[:, 1:].log())
    explanation = model.explain(SEQ, k=5)
    torch.testing.assert_close(explanation.scores, scores.topk(5).values)


def test_one_head_ranks_the_same_under_both_fusions():
    """With H = 1 the gate is 1 and log-softmax keeps the order of the scores."""
    by_score = fame(heads=1, experts=2)
    by_softmax = fame(heads=1, experts=2, fusion="softmax")
    by_softmax.load_state_dict(by_score.state_dict())
    a, b = by_score.score(SEQ)[:, 1:], by_softmax.score(SEQ)[:, 1:]
    assert torch.equal(a.argsort(1, descending=True)[:, :10], b.argsort(1, descending=True)[:, :10])


def test_softmax_fusion_trains_and_serves(seq_file, tmp_path):
    import json

    from famerec.recommender import load
    from famerec.training import train_run
    from tests.conftest import tiny_overrides

    overrides = tiny_overrides(
        seq_file,
        **{"model.name": "fame", "model.hidden_size": 64, "fame.fusion": "softmax"},
        **{"train.epochs": 3, "train.patience": 3},
    )
    metrics = train_run(RunConfig().with_overrides(overrides), tmp_path / "mos", progress=False)
    log = [json.loads(r) for r in (tmp_path / "mos/log.jsonl").read_text().splitlines()]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert metrics["valid"]["NDCG@10"] > 0
    rec = load(tmp_path / "mos")
    assert len(rec.recommend([1, 2, 3], k=5).items) == 5
    with pytest.raises(FamerecError, match="do not apply"):
        rec.item_vectors()
