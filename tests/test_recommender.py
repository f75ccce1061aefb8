import numpy as np
import pytest
import torch

import famerec
from famerec.errors import FamerecError
from famerec.recommender import UnknownItemsError


@pytest.fixture(scope="module")
def fame(trained_runs):
    return famerec.load(trained_runs["fame"])


@pytest.fixture(scope="module")
def sasrec(trained_runs):
    return famerec.load(trained_runs["sasrec"])


def test_recommend_returns_original_ids_best_first(fame):
    result = fame.recommend(["i1", "i2", "i3"], k=5)
    assert len(result.items) == 5 and all(i.startswith("i") for i in result.items)
    assert result.scores == sorted(result.scores, reverse=True)
    assert not {"i1", "i2", "i3"} & set(result.items)  # seen items excluded by default
    kept = fame.recommend(["i1", "i2", "i3"], k=fame.num_items, exclude_seen=False)
    assert {"i1", "i2", "i3"} <= set(kept.items)


def test_scores_match_the_model(fame):
    result = fame.recommend(["i4", "i5"], k=3, exclude_seen=False)
    internal = torch.tensor([[fame._internal_item("i4"), fame._internal_item("i5")]])
    with torch.no_grad():
        scores = fame.model.score(internal)[0]
    for item, score in zip(result.items, result.scores):
        assert score == pytest.approx(float(scores[fame._internal_item(item)]), rel=1e-5)


def test_unknown_ids_are_reported_or_rejected(fame):
    result = fame.recommend(["i1", "nope", "i2"], k=3)
    assert result.unknown == ["nope"] and result.used == 2
    assert fame.recommend(["i1", "i2"], k=3).items == result.items
    with pytest.raises(UnknownItemsError, match="1 unknown item ids: 'nope'"):
        fame.recommend(["i1", "nope"], strict=True)
    with pytest.raises(FamerecError, match="no item the model knows"):
        fame.recommend(["nope", "never"])


def test_long_sequences_keep_the_most_recent_items(fame):
    long = [f"i{n % 30 + 1}" for n in range(40)]
    max_len = fame.max_len
    full = fame.recommend(long, k=5, exclude_seen=False)
    recent = fame.recommend(long[-max_len:], k=5, exclude_seen=False)
    assert full.items == recent.items


def test_batch_equals_one_by_one(fame):
    sequences = [["i1", "i2"], ["i3", "i4", "i5", "i6"], ["i7"]]
    batch = fame.recommend_batch(sequences, k=4)
    for sequence, result in zip(sequences, batch):
        single = fame.recommend(sequence, k=4)
        assert result.items == single.items
        np.testing.assert_allclose(result.scores, single.scores, rtol=1e-5)


def test_recommend_user_uses_the_whole_history(fame):
    history = fame.user_history("u3")
    assert fame.recommend_user("u3", k=5).items == fame.recommend(history, k=5).items
    with pytest.raises(FamerecError, match="unknown user 'nobody'"):
        fame.recommend_user("nobody")


def test_integer_ids_accept_strings(trained_runs, tmp_path):
    # the bundled data uses integer ids; the CLI passes strings
    from famerec.config import RunConfig
    from famerec.training import train_run
    from tests.conftest import tiny_overrides, write_sequences

    data = write_sequences(tmp_path / "ints.txt", num_users=40, num_items=20)
    config = RunConfig().with_overrides(tiny_overrides(data, **{"train.epochs": 1}))
    train_run(config, tmp_path / "run", progress=False)
    rec = famerec.load(tmp_path / "run")
    assert rec.recommend(["3", "4"], k=3).items == rec.recommend([3, 4], k=3).items
    assert all(isinstance(i, int) for i in rec.recommend([3], k=3).items)


def test_explain_heads_gate_and_integrated_list(fame):
    explained = fame.explain(["i1", "i2", "i3"], k=4)
    assert len(explained.heads) == fame.config.model.num_heads
    assert sum(h.gate for h in explained.heads) == pytest.approx(1.0, abs=1e-5)
    for head in explained.heads:
        assert sum(head.experts) == pytest.approx(1.0, abs=1e-5)
        assert len(head.experts) == fame.config.options.num_experts
        assert len(head.items) == 4
    assert explained.recommendation.items == fame.recommend(["i1", "i2", "i3"], k=4).items


def test_explain_for_sasrec_says_there_are_no_heads(sasrec):
    explained = sasrec.explain(["i1", "i2"], k=3)
    assert explained.heads == [] and "no facet heads" in explained.note
    assert len(explained.recommendation.items) == 3


def test_vectors_reproduce_the_scores(fame, sasrec):
    sequences = [["i1", "i2"], ["i5", "i9", "i11"]]
    for rec in (fame, sasrec):
        queries = rec.query_vectors(sequences)  # (B, d)
        items = rec.item_vectors()  # (V, d)
        assert queries.shape == (2, rec.config.model.hidden_size)
        assert items.shape == (rec.num_items, rec.config.model.hidden_size)
        scores = queries @ items.T
        for row, sequence in enumerate(sequences):
            top = rec.recommend(sequence, k=5, exclude_seen=False)
            best = [rec.item_ids[j] for j in np.argsort(-scores[row])[:5]]
            assert best == top.items
            np.testing.assert_allclose(np.sort(scores[row])[::-1][:5], top.scores, rtol=1e-4)


def test_bad_k(fame):
    with pytest.raises(FamerecError, match="k must be a positive integer"):
        fame.recommend(["i1"], k=0)
