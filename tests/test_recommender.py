import numpy as np
import pytest
import torch

import famerec
from famerec.errors import FamerecError
from famerec.recommender import NoKnownItemsError, Query, UnknownItemsError


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


def assert_same_list(ours, expected) -> None:
    """The same items and scores up to float rounding: a batch's shape changes the order of
    the float additions, so items whose scores lie within rounding may trade places."""
    assert ours.scores == pytest.approx(expected.scores, rel=1e-5, abs=1e-6)
    for place, (item, score) in enumerate(zip(expected.items, expected.scores)):
        tied = [s for s in expected.scores if s == pytest.approx(score, rel=1e-5, abs=1e-6)]
        assert ours.items[place] == item or len(tied) > 1


def assert_same_answer(ours, expected) -> None:
    """A Recommendation or ExplainedRecommendation equal to `expected` up to float rounding."""
    assert type(ours) is type(expected)
    if hasattr(expected, "heads"):
        assert ours.note == expected.note and len(ours.heads) == len(expected.heads)
        for head, theirs in zip(ours.heads, expected.heads):
            assert head.head == theirs.head and head.gate == pytest.approx(theirs.gate, rel=1e-5)
            assert head.experts == pytest.approx(theirs.experts, rel=1e-5, abs=1e-6)
            assert_same_list(head, theirs)
        ours, expected = ours.recommendation, expected.recommendation
    assert ours.unknown == expected.unknown and ours.used == expected.used
    assert_same_list(ours, expected)


def test_answer_each_answers_every_query_as_alone_and_keeps_errors_apart(fame):
    queries = [
        Query(["i1", "i2", "i3"], k=5),
        Query(["i4", "nope"], k=3, exclude_seen=False),
        Query(["i5", "nope"], strict=True),  # its own error
        Query(["i6"] * 20 + ["i7"], k=30),  # longer than max_len, k = the whole catalog
        Query(["never", "nope"]),  # its own error
        Query(["i8", "i9"], k=4, explain=True),
        Query(["i1"], k=0),  # its own error
        Query(["i2", "i10", "i11"], k=2, exclude_seen=False, explain=True),
        Query([3, "i12"], k=7),
    ]
    answers = fame.answer_each(queries)
    assert isinstance(answers[2], UnknownItemsError) and "'nope'" in str(answers[2])
    assert isinstance(answers[4], NoKnownItemsError)
    assert str(answers[4]) == "the sequence has no item the model knows"
    assert "k must be a positive integer" in str(answers[6])
    for query, answer in zip(queries, answers):
        if not isinstance(answer, FamerecError):
            alone = fame.explain if query.explain else fame.recommend
            assert_same_answer(answer, alone(query.items, query.k, query.exclude_seen))
    assert len(answers[3].items) == fame.num_items - 2  # all but the two seen items


def test_answer_each_scores_in_one_model_call_per_kind(fame, monkeypatch):
    calls = []
    score, explain = fame.model.score, fame.model.explain
    monkeypatch.setattr(fame.model, "score", lambda batch: calls.append("score") or score(batch))
    monkeypatch.setattr(
        fame.model, "explain", lambda *a, **kw: calls.append("explain") or explain(*a, **kw)
    )
    queries = [Query(["i1"]), Query(["i2"], explain=True), Query(["i3"], k=3), Query(["no"])]
    assert len(fame.answer_each(queries)) == 4
    assert sorted(calls) == ["explain", "score"]
    assert fame.answer_each([]) == []


def test_answer_each_explains_sasrec_without_heads(sasrec):
    plain, explained = sasrec.answer_each([Query(["i1"], k=3), Query(["i1"], k=3, explain=True)])
    assert explained.heads == [] and "no facet heads" in explained.note
    assert_same_answer(explained, sasrec.explain(["i1"], k=3))
    assert explained.recommendation.items == plain.items


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


def test_seen_items_are_excluded_in_place_as_the_mask_excludes_them(fame):
    encoded = [[3, 5, 5, 7], [1], [2, 4], [6, 8, 9]]
    exclude = [True, False, True, True]
    scores = torch.randn(4, fame.num_items + 1, generator=torch.Generator().manual_seed(0))
    expected = scores.masked_fill(fame._exclusion(encoded, exclude), float("-inf"))
    fame._exclude(scores, encoded, exclude)
    assert torch.equal(scores, expected)
    untouched = scores.clone()
    fame._exclude(scores, encoded, [False] * 4)
    assert torch.equal(scores, untouched)
