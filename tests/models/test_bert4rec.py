import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import famerec
from famerec.cli import main
from famerec.config import ModelConfig, RunConfig
from famerec.data.batching import TrainBatch
from famerec.errors import ConfigError
from famerec.models import build_model
from famerec.models.bert4rec import BERT4Rec, BERT4RecOptions, ClozeBatch
from famerec.training import train_run
from tests.conftest import tiny_overrides, write_sequences

NUM_ITEMS = 30
MAX_LEN = 10


def bert4rec(max_len=MAX_LEN, **options) -> BERT4Rec:
    torch.manual_seed(0)
    config = ModelConfig(name="bert4rec", hidden_size=16, num_heads=2, max_len=max_len, dropout=0.0)
    model = build_model(config, NUM_ITEMS, BERT4RecOptions(attn_dropout=0.0, **options))
    assert isinstance(model, BERT4Rec)
    return model.eval()


def random_part(rows=300, width=MAX_LEN, seed=0):
    """Left-padded training sequences of random length as (inputs, targets, sequences)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, width + 2, (rows,), generator=generator)  # up to width + 1 items
    sequences = torch.randint(1, NUM_ITEMS + 1, (rows, width + 1), generator=generator)
    columns = torch.arange(width + 1)
    sequences[columns < width + 1 - lengths[:, None]] = 0  # left padding
    return sequences[:, :-1], sequences[:, 1:], sequences


def test_cloze_rebuilds_the_whole_training_sequence_and_masks_real_items_only():
    model = bert4rec(mask_last=0.0)
    inputs, targets, sequences = random_part()
    torch.manual_seed(1)
    masked, labels = model.cloze(inputs, targets)
    sequence = sequences[:, -MAX_LEN:]  # the most recent max_len items, last target included
    assert masked.shape == labels.shape == sequence.shape
    at = masked == model.mask_id
    torch.testing.assert_close(at, labels != 0)  # a label exactly where [MASK] stands
    torch.testing.assert_close(torch.where(at, labels, masked), sequence)  # nothing else moved
    assert not (at & (sequence == 0)).any()  # padding is never masked
    assert labels.max() <= NUM_ITEMS  # [MASK] and padding are never targets
    assert ((labels[at] >= 1) & (labels[at] <= NUM_ITEMS)).all()
    # Each sequence masks max(1, round(0.6 n)) of its n items, as the official code.
    count = (sequence != 0).sum(1)
    expected = torch.clamp(torch.floor(count * 0.6 + 0.5), min=1).long()
    torch.testing.assert_close(at.sum(1), expected)
    share = at.sum() / (sequence != 0).sum()
    assert 0.55 < float(share) < 0.7
    # Every real position is masked now and then: the positions are random.
    hits = torch.zeros_like(at, dtype=torch.long)
    for _ in range(20):
        hits += model.cloze(inputs, targets)[0] == model.mask_id
    assert ((hits > 0) == (sequence != 0)).all()


def test_mask_last_samples_hide_only_the_last_item():
    inputs, targets, sequences = random_part()
    masked, labels = bert4rec(mask_last=1.0).cloze(inputs, targets)
    assert ((masked == NUM_ITEMS + 1).sum(1) == 1).all()
    torch.testing.assert_close(labels[:, -1], targets[:, -1])
    assert (labels[:, :-1] == 0).all()
    torch.manual_seed(2)
    masked, _ = bert4rec(mask_last=0.25).cloze(inputs, targets)
    real = (sequences[:, -MAX_LEN:] != 0).sum(1)
    only_last = ((masked == NUM_ITEMS + 1).sum(1) == 1) & (masked[:, -1] == NUM_ITEMS + 1)
    share = (only_last & (real >= 3)).sum() / (real >= 3).sum()  # longer ones mask 2 or more
    assert 0.15 < float(share) < 0.35


def test_masks_come_from_the_global_generator():
    model = bert4rec()
    inputs, targets, _ = random_part()
    batch = TrainBatch(((inputs, targets),), int((targets != 0).sum()))
    torch.manual_seed(3)
    first = model.transform_batch(batch).parts[0]
    torch.manual_seed(3)
    again = model.transform_batch(batch).parts[0]
    torch.testing.assert_close(first, again)


def test_loss_is_the_cross_entropy_at_masked_positions_only():
    model = bert4rec()
    inputs, targets, _ = random_part(rows=20)
    torch.manual_seed(4)
    batch = model.transform_batch(TrainBatch(((inputs, targets),), 0))
    masked, labels = batch.parts[0]
    at = labels != 0
    hidden = model.encode(masked)[at]  # (P, d)
    query = model.head.norm(F.gelu(model.head.transform(hidden)))
    embeddings = model.item_embedding.weight[1 : NUM_ITEMS + 1]
    logits = query @ embeddings.T + model.head.item_bias[1:]  # P(v) over the items only
    expected = F.cross_entropy(logits, labels[at] - 1)
    torch.testing.assert_close(model.loss(batch), expected)
    model.loss_chunk = 7
    model.train()  # dropout is 0: the chunked loss must agree
    torch.testing.assert_close(model.loss(batch), expected, rtol=1e-5, atol=1e-6)


def test_bidirectional_later_items_change_earlier_positions():
    model = bert4rec()
    seq = torch.tensor([[0, 1, 2, 3, 4, 5, 6]])
    changed = seq.clone()
    changed[0, 5:] = torch.tensor([9, 12])
    before, after = model.query_vectors(seq), model.query_vectors(changed)
    assert not torch.allclose(before[:, 1:5], after[:, 1:5])  # unlike SASRec
    assert not torch.allclose(model.score(seq), model.score(changed))


def test_padding_never_matters():
    model = bert4rec()
    short = torch.tensor([[3, 4, 5], [7, 8, 9]])
    padded = torch.tensor([[0, 0, 0, 0, 3, 4, 5], [0, 0, 0, 0, 7, 8, 9]])
    torch.testing.assert_close(model.score(short), model.score(padded))
    torch.testing.assert_close(model.query_vectors(short), model.query_vectors(padded)[:, 4:])
    with torch.no_grad():
        model.item_embedding.weight[0].normal_()  # whatever sits at padded positions
    torch.testing.assert_close(model.score(short), model.score(padded))
    # The loss of a batch is the same however far its part is padded.
    masked = torch.tensor([[0, 3, 31, 5], [6, 31, 8, 31]])
    labels = torch.tensor([[0, 0, 4, 0], [0, 7, 0, 9]])
    wider = (F.pad(masked, (3, 0)), F.pad(labels, (3, 0)))
    torch.testing.assert_close(
        model.loss(ClozeBatch(((masked, labels),))), model.loss(ClozeBatch((wider,)))
    )


def test_scores_append_mask_and_never_cover_padding_or_mask():
    model = bert4rec()
    seq = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    scores = model.score(seq)
    assert scores.shape == (2, NUM_ITEMS + 1)  # no column for [MASK]
    assert torch.isneginf(scores[:, 0]).all() and (scores.argmax(1) != 0).all()
    with_mask = torch.tensor([[0, 0, 3, 4, 5, 31], [1, 2, 3, 4, 5, 31]])
    query = model.query_vectors(with_mask)[:, -1]  # (B, d + 1)
    torch.testing.assert_close(scores[:, 1:], (query @ model.item_vectors().T)[:, 1:])
    assert model.item_vectors().shape == (NUM_ITEMS + 1, 16 + 1)
    # A full window drops its oldest item to make room for [MASK].
    long = torch.arange(1, 16).unsqueeze(0)  # 15 items, max_len 10
    torch.testing.assert_close(model.score(long), model.score(long[:, -(MAX_LEN - 1) :]))


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"bert4rec.mask_prob": 0.0}, "--mask-prob"),
        ({"bert4rec.mask_last": 1.5}, "--mask-last"),
        ({"bert4rec.attn_dropout": 1.0}, "--attn-dropout"),
        ({"model.max_len": 1}, "--max-len"),
        ({"model.num_heads": 3}, "not divisible"),
    ],
)
def test_invalid_options(overrides, words):
    config = RunConfig().with_overrides({"model.name": "bert4rec", **overrides})
    with pytest.raises(ConfigError, match=words):
        config.validate()


def test_help_shows_its_own_flags(capsys):
    assert main(["train", "--model", "bert4rec", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--mask-prob" in out and "--mask-last" in out and "--attn-dropout" in out
    assert main(["train", "--model", "sasrec", "--help"]) == 0
    assert "--mask-prob" not in capsys.readouterr().out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run, with the trained model itself (holding the best weights)."""
    from famerec.training import pipeline

    root = tmp_path_factory.mktemp("bert4rec")
    data = write_sequences(root / "tiny.txt")
    overrides = tiny_overrides(
        data, **{"model.name": "bert4rec", "train.epochs": 6, "train.patience": 6, "train.lr": 1e-2}
    )
    config = RunConfig().with_overrides(overrides).validate()
    built = []

    def keep(*args, **kwargs):
        built.append(build_model(*args, **kwargs))
        return built[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "build_model", keep)
        metrics = train_run(config, root / "run", progress=False)
    return root / "run", metrics, built[0].eval()


def test_training_lowers_the_loss(run):
    run_dir, metrics, _ = run
    assert metrics["config"]["bert4rec"]["mask_prob"] == 0.6
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    losses = [record["train_loss"] for record in log]
    assert losses[-1] < losses[0]


def test_saved_run_scores_like_the_trained_model_and_recommends(run):
    run_dir, _, trained = run
    recommender = famerec.load(run_dir)
    assert isinstance(recommender.model, BERT4Rec)
    batch = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8], [9, 10, 11, 12, 13]])
    with torch.no_grad():
        assert torch.equal(recommender.model.score(batch), trained.score(batch))
    item_ids = recommender.item_ids
    result = recommender.recommend(item_ids[:3], k=5)
    assert len(result.items) == 5 and not set(item_ids[:3]) & set(result.items)
    # Vectors: one row per item (no [MASK] row) and their dot products are the scores.
    vectors = recommender.item_vectors()
    assert vectors.shape == (recommender.num_items, 16 + 1)
    queries = recommender.query_vectors([item_ids[:3]])
    internal = torch.tensor([[recommender._internal_item(i) for i in item_ids[:3]]])
    with torch.no_grad():
        scores = recommender.model.score(internal)[0, 1:].numpy()
    np.testing.assert_allclose(queries[0] @ vectors.T, scores, rtol=1e-5, atol=1e-5)
