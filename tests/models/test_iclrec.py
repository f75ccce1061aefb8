import torch
from safetensors.torch import load_file

import famerec
from famerec.config import RunConfig
from famerec.data.batching import TrainBatch, TrainTensors
from famerec.models.base import EpochContext
from famerec.models.iclrec import ICLRec, kmeans, nearest_centroid
from famerec.training import train_run
from tests.conftest import tiny_overrides
from tests.models.contrastive_checks import (
    NUM_ITEMS,
    check_causal,
    check_help,
    check_padding,
    check_scores,
    check_trained_run,
    tiny_batch,
    tiny_model,
    train_tiny,
)

CPU = torch.device("cpu")


def test_kmeans_recovers_planted_clusters():
    for seed in range(3):
        torch.manual_seed(seed)
        centers = torch.randn(6, 8) * 10
        labels = torch.arange(6).repeat_interleave(30)
        points = centers[labels] + torch.randn(len(labels), 8)
        centroids = kmeans(points, 6)
        assert centroids.shape == (6, 8)
        found = nearest_centroid(points, centroids)
        # one centroid per planted cluster, at its mean
        assert len(set(zip(labels.tolist(), found.tolist()))) == 6
        for cluster in range(6):
            torch.testing.assert_close(
                centroids[found[labels == cluster][0]], points[labels == cluster].mean(0)
            )


def test_clustering_runs_before_every_epoch_and_keeps_k_prototypes():
    model = tiny_model("iclrec", num_intents=5)
    inputs, targets = tiny_batch(rows=40)
    context = EpochContext(1, TrainTensors(inputs, targets, (targets != 0).sum(1)), CPU, 16)
    assert model.intent_centroids.shape == (0, 16)
    for epoch in (1, 2):
        fields = model.on_epoch_start(context)
        assert model.clusterings == epoch and fields["intents"] == 5
        assert model.intent_centroids.shape == (5, 16)
    assert "intent_centroids" not in model.state_dict()  # recomputed, never saved
    assert not model.training  # tiny_model's eval mode is kept


def test_views_hold_valid_ids_and_at_least_one_item():
    model = tiny_model("iclrec").train()
    inputs, targets = tiny_batch(rows=300)
    torch.manual_seed(1)
    views = model.transform_batch(TrainBatch(((inputs, targets),), int((targets != 0).sum())))
    for view in (views.first, views.second):
        assert ((view >= 0) & (view <= NUM_ITEMS)).all()  # masked items become padding
        assert ((view != 0).sum(1) >= 1).all()  # (the last item may be masked too)
        assert ((view == 0) >= (inputs == 0)).all()  # padding stays padding
    assert ((views.first != 0).sum(1) < (inputs != 0).sum(1)).any()  # crops and masks occur


def test_same_intent_and_same_target_are_not_negatives():
    inputs, targets = tiny_batch(rows=16)
    targets[:, -1] = 5  # one next item for all
    model = tiny_model("iclrec").train()
    model.intent_centroids = torch.randn(1, 16)  # one intent for all
    torch.manual_seed(0)
    losses = model.loss((inputs, targets))
    assert set(losses) == {"next_item", "cl", "intent"}
    assert losses["cl"] == 0 and losses["intent"] == 0  # only the partners remain
    model.options.fnm = False
    torch.manual_seed(0)
    kept = model.loss((inputs, targets))
    assert kept["cl"] > 0 and kept["intent"] > 0


def test_intent_loss_pulls_views_toward_their_prototype():
    model = tiny_model("iclrec", num_intents=3, cl_weight=0.0).train()
    inputs, targets = tiny_batch(rows=30)
    model.on_epoch_start(
        EpochContext(1, TrainTensors(inputs, targets, (targets != 0).sum(1)), CPU, 30)
    )
    torch.manual_seed(0)
    losses = model.loss((inputs, targets))
    assert losses["cl"] == 0 and losses["intent"] > 0
    losses["intent"].backward()
    assert model.item_embedding.weight.grad.abs().sum() > 0


def test_causal_padding_and_scores():
    model = tiny_model("iclrec")
    check_causal(model)
    check_padding(model, lambda seq: model.view_representations(seq, 10))
    check_scores(model)


def test_trains_serves_and_recommends(seq_file, tmp_path):
    records = train_tiny("iclrec", seq_file, tmp_path / "run", **{"iclrec.num_intents": 8})
    check_trained_run(tmp_path / "run", records, {"next_item", "cl", "intent"})
    assert [record["intents"] for record in records] == [8, 8, 8, 8]  # clustered every epoch
    assert isinstance(famerec.load(tmp_path / "run").model, ICLRec)


def test_resume_ends_like_an_uninterrupted_run(seq_file, tmp_path):
    """Clustering and augmentations draw from torch's generator, which checkpoints save."""
    settings = {"iclrec.num_intents": 8, "train.epochs": 3, "train.patience": 3}
    train_tiny("iclrec", seq_file, tmp_path / "whole", **settings)
    config = RunConfig().with_overrides(
        tiny_overrides(seq_file, **{"model.name": "iclrec", "train.lr": 5e-3, **settings})
    )
    assert train_run(config, tmp_path / "cut", progress=False, stop_after=1) is None
    train_run(config, tmp_path / "cut", resume=True, progress=False)
    whole = load_file(tmp_path / "whole/model.safetensors")
    cut = load_file(tmp_path / "cut/model.safetensors")
    assert all(torch.equal(whole[name], cut[name]) for name in whole)


def test_help_shows_its_flags(capsys):
    flags = ["--intents", "--intent-weight", "--cl-weight", "--no-fnm", "--crop", "--mask"]
    check_help("iclrec", [*flags, "--instance-representation"], capsys)
