import pytest
import torch
import torch.nn.functional as F

from famerec.config import ModelConfig, RunConfig
from famerec.errors import ConfigError
from famerec.models import build_model
from famerec.models.gru4rec import GRU4Rec, GRU4RecOptions, in_batch_ranking_loss
from tests.conftest import tiny_overrides
from tests.models.model_checks import (
    check_causal,
    check_help_lists_flags,
    check_learns_reloads_and_recommends,
    check_left_padding_never_matters,
    train_tiny_run,
)

NUM_ITEMS = 30


def gru4rec(num_layers=1, **options) -> GRU4Rec:
    torch.manual_seed(0)
    config = ModelConfig(name="gru4rec", hidden_size=16, num_layers=num_layers, dropout=0.0)
    return build_model(config, NUM_ITEMS, GRU4RecOptions(gru_hidden=24, **options)).eval()


@pytest.mark.parametrize("num_layers", [1, 2])
def test_left_padding_never_changes_real_positions(num_layers):
    model = gru4rec(num_layers)
    with torch.no_grad():
        states = model.gru_states(torch.tensor([[0, 0, 0, 0, 3, 4, 5]]))
    assert torch.equal(states[:, :4], torch.zeros_like(states[:, :4]))  # h stays exactly 0
    check_left_padding_never_matters(model)


def test_a_gru_with_biases_would_be_changed_by_left_padding():
    """Why GRU4Rec's GRU has no biases: with them, zero inputs move the state away from 0."""
    torch.manual_seed(0)
    gru = torch.nn.GRU(4, 8, batch_first=True)
    x = torch.randn(1, 3, 4)
    padded = torch.cat([torch.zeros(1, 2, 4), x], dim=1)
    with torch.no_grad():
        assert not torch.allclose(gru(padded)[0][:, 2:], gru(x)[0])


def test_causality_later_items_do_not_change_earlier_positions():
    check_causal(gru4rec(num_layers=2))


def test_scores_are_dot_products_with_the_item_embeddings():
    model = gru4rec()
    seq = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    with torch.no_grad():
        scores = model.score(seq)
        last = model.last_query_vectors(seq)
        torch.testing.assert_close(last, model.query_vectors(seq)[:, -1])
        expected = last @ model.item_embedding.weight[1:].T
    assert scores.shape == (2, NUM_ITEMS + 1) and scores.dtype == torch.float32
    assert torch.isneginf(scores[:, 0]).all()
    torch.testing.assert_close(scores[:, 1:], expected)


def test_sizes_follow_the_options():
    model = gru4rec(num_layers=2)
    assert model.gru.num_layers == 2 and model.gru.hidden_size == 24 and not model.gru.bias
    assert model.dense.in_features == 24 and model.dense.out_features == 16
    assert not hasattr(model, "position_embedding")


def test_ranking_losses_by_hand():
    torch.manual_seed(0)
    queries, items = torch.randn(3, 4), torch.randn(NUM_ITEMS + 1, 4)
    targets = torch.tensor([5, 7, 5])
    r = queries @ items[targets].T  # r[i, j]: position i's score of position j's target
    off_diagonal = ~torch.eye(3, dtype=torch.bool)
    positive = r.diagonal().unsqueeze(1)
    bpr = -F.logsigmoid(positive - r)[off_diagonal].mean()
    top1 = (torch.sigmoid(r - positive) + torch.sigmoid(r**2))[off_diagonal].mean()
    torch.testing.assert_close(in_batch_ranking_loss(queries, targets, items, "bpr"), bpr)
    torch.testing.assert_close(in_batch_ranking_loss(queries, targets, items, "top1"), top1)


def test_trains_reloads_with_identical_scores_and_recommends(seq_file, tmp_path, monkeypatch):
    rec = check_learns_reloads_and_recommends(
        "gru4rec", seq_file, tmp_path, monkeypatch, **{"gru4rec.gru_hidden": 32}
    )
    assert rec.dot_product_scores and rec.model.gru.hidden_size == 32


def test_the_ranking_loss_option_trains(seq_file, tmp_path, monkeypatch):
    extra = {"gru4rec.ranking_loss": "bpr"}
    _, losses = train_tiny_run("gru4rec", seq_file, tmp_path / "bpr", monkeypatch, 3, **extra)
    assert losses[-1] < losses[0]


def test_own_flags_and_validation(seq_file, capsys):
    check_help_lists_flags("gru4rec", ["--gru-hidden", "--ranking-loss"], capsys)
    bad = tiny_overrides(seq_file, **{"model.name": "gru4rec", "gru4rec.gru_hidden": 0})
    with pytest.raises(ConfigError, match="--gru-hidden must be positive"):
        RunConfig().with_overrides(bad).validate()
    with pytest.raises(ConfigError, match="--ranking-loss"):
        bad.update({"gru4rec.gru_hidden": 8, "gru4rec.ranking_loss": "x"})
        RunConfig().with_overrides(bad).validate()
