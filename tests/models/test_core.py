import math

import pytest
import torch
import torch.nn.functional as F

from famerec.config import ModelConfig, RunConfig
from famerec.errors import ConfigError
from famerec.models import build_model
from famerec.models.core import CORE, COREOptions
from tests.conftest import tiny_overrides
from tests.models.model_checks import (
    check_causal,
    check_help_lists_flags,
    check_learns_reloads_and_recommends,
    check_left_padding_never_matters,
    train_tiny_run,
)

NUM_ITEMS = 30
TAU = 0.07


def core(encoder="trm", **options) -> CORE:
    torch.manual_seed(0)
    config = ModelConfig(name="core", hidden_size=16, num_heads=2, max_len=10, dropout=0.0)
    options = COREOptions(encoder=encoder, session_dropout=0.0, inner_size=32, **options)
    return build_model(config, NUM_ITEMS, options).eval()


ENCODERS = ["trm", "ave"]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_scores_are_cosines_over_the_temperature(encoder):
    model = core(encoder)
    seq = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    with torch.no_grad():
        scores = model.score(seq)
    assert scores.shape == (2, NUM_ITEMS + 1) and torch.isneginf(scores[:, 0]).all()
    assert (scores[:, 1:].abs() * TAU <= 1 + 1e-5).all()


def test_ave_scores_equal_cosines_computed_by_hand():
    model = core("ave")
    items = model.item_embedding.weight.detach()
    with torch.no_grad():
        scores = model.score(torch.tensor([[0, 0, 3, 4, 5]]))[0, 1:]
    session = items[[3, 4, 5]].mean(0)  # CORE-ave: the mean of the session's embeddings
    cosines = F.cosine_similarity(session.unsqueeze(0), items[1:], dim=-1)
    torch.testing.assert_close(scores, cosines / TAU)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_session_vector_lies_in_the_item_space(encoder):
    """Representation consistency: a session of one item (or one item repeated) is that item,
    so it scores itself highest, at cosine exactly 1."""
    model = core(encoder)
    with torch.no_grad():
        for seq in ([[0, 0, 7]], [[7, 7, 7]]):
            scores = model.score(torch.tensor(seq))[0]
            assert int(scores.argmax()) == 7
            assert float(scores[7]) * TAU == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_scores_are_exact_dot_products_of_query_and_item_vectors(encoder):
    model = core(encoder)
    seq = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    with torch.no_grad():
        queries, items = model.last_query_vectors(seq), model.item_vectors()
        assert torch.equal(model.score(seq)[:, 1:], (queries @ items.T)[:, 1:])
    torch.testing.assert_close(items.norm(dim=-1)[1:], torch.ones(NUM_ITEMS))
    torch.testing.assert_close(queries.norm(dim=-1) * TAU, torch.ones(2))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_position_equals_encoding_its_prefix_alone(encoder):
    """Training reads the session vector of every prefix from one causal pass."""
    model = core(encoder)
    seq = torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        every = model.query_vectors(seq)  # (1, L, d)
        for t in range(2, seq.shape[1]):
            alone = model.last_query_vectors(seq[:, 2 : t + 1])
            torch.testing.assert_close(every[:, t], alone)


def test_causality_later_items_do_not_change_earlier_positions():
    check_causal(core())


@pytest.mark.parametrize("encoder", ENCODERS)
def test_left_padding_never_changes_real_positions(encoder):
    check_left_padding_never_matters(core(encoder))


def test_trm_weights_depend_on_the_session_and_ave_weights_do_not():
    seq = torch.tensor([[1, 2, 3, 4]])
    trm, ave = core("trm"), core("ave")
    with torch.no_grad():
        logits = trm.item_weights(trm.item_embedding(seq), seq != 0)
    assert logits.shape == (1, 4) and logits.std() > 0
    assert ave.item_weights is None


def test_loss_is_cross_entropy_over_cosines_with_item_dropout():
    model = core(item_dropout=0.5)
    seq = torch.tensor([[0, 0, 1, 2], [5, 6, 7, 8]])
    targets = torch.tensor([[0, 0, 2, 3], [6, 7, 8, 9]])
    real = targets != 0
    with torch.no_grad():
        queries = model.query_vectors(seq)[real]
        logits = queries @ F.normalize(model.item_embedding.weight[1:], dim=-1).T
        expected = F.cross_entropy(logits, targets[real] - 1)
        torch.testing.assert_close(model.loss((seq, targets)), expected)  # eval: no dropout
        model.train()
        torch.manual_seed(1)
        dropped = model.loss((seq, targets))
    assert not torch.allclose(dropped, expected)  # training drops candidate item dimensions


def test_trains_reloads_with_identical_scores_and_recommends(seq_file, tmp_path, monkeypatch):
    rec = check_learns_reloads_and_recommends("core", seq_file, tmp_path, monkeypatch)
    assert rec.dot_product_scores
    vectors, queries = rec.item_vectors(), rec.query_vectors([rec.item_ids[:3]])
    assert abs(float((queries @ vectors.T).max())) * TAU <= 1 + 1e-5


def test_ave_trains(seq_file, tmp_path, monkeypatch):
    extra = {"core.encoder": "ave"}
    _, losses = train_tiny_run("core", seq_file, tmp_path / "ave", monkeypatch, epochs=3, **extra)
    assert losses[-1] < losses[0]


def test_own_flags_and_validation(seq_file, capsys):
    flags = ["--temperature", "--item-dropout", "--session-dropout", "--encoder", "--inner-size"]
    check_help_lists_flags("core", flags, capsys)
    base = tiny_overrides(seq_file, **{"model.name": "core"})
    for key, value, message in [
        ("core.temperature", 0.0, "--temperature must be positive"),
        ("core.item_dropout", 1.0, "--item-dropout must be in"),
        ("core.encoder", "gru", "--encoder"),
        ("model.num_heads", 3, "not divisible"),
    ]:
        with pytest.raises(ConfigError, match=message):
            RunConfig().with_overrides({**base, key: value}).validate()
    # CORE-ave has no attention heads to divide the hidden size over
    RunConfig().with_overrides({**base, "core.encoder": "ave", "model.num_heads": 3}).validate()


def test_trains_with_the_shared_sampled_softmax(seq_file, tmp_path, monkeypatch):
    """--loss sampled scores the sampled items by cosine too (16 negatives: too few for the loss
    to fall steadily in 2 epochs, so only check that it runs)."""
    extra = {"train.loss": "sampled", "train.negatives": 16}
    trained, losses = train_tiny_run("core", seq_file, tmp_path / "s", monkeypatch, 2, **extra)
    assert all(map(math.isfinite, losses))
    with torch.no_grad():
        assert torch.isfinite(trained.score(torch.tensor([[1, 2, 3]]))[:, 1:]).all()
