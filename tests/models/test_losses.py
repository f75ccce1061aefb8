"""Shared losses: the sampled softmax against the full one, and its negative sampler."""

import json

import pytest
import torch
import torch.nn.functional as F

from famerec.config import RunConfig
from famerec.errors import ConfigError
from famerec.models.losses import NegativeSampler, sampled_softmax_cross_entropy
from famerec.training import train_run
from tests.conftest import tiny_overrides


def test_sampled_softmax_over_every_item_is_the_full_softmax():
    torch.manual_seed(0)
    queries, items = torch.randn(9, 8), torch.randn(30, 8)
    targets = torch.randint(0, 30, (9,))
    full = F.cross_entropy(queries @ items.T, targets)
    sampled = sampled_softmax_cross_entropy(queries, items, targets, torch.arange(30))
    torch.testing.assert_close(sampled, full)


def test_accidental_hits_are_left_out_and_log_q_shifts_logits():
    queries, items = torch.eye(3), torch.eye(3) * 2.0
    targets = torch.tensor([0, 1, 2])
    negatives = torch.tensor([0, 1, 2, 2])  # every row's own target appears among them
    loss = sampled_softmax_cross_entropy(queries, items, targets, negatives)
    # rows 0 and 1 keep three negatives (logit 0), row 2 loses both copies of item 2
    rows = [torch.tensor([[2.0, 0.0, 0.0, 0.0]])] * 2 + [torch.tensor([[2.0, 0.0, 0.0]])]
    expected = torch.stack([F.cross_entropy(r, torch.tensor([0])) for r in rows]).mean()
    torch.testing.assert_close(loss, expected)
    log_q = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    shifted = sampled_softmax_cross_entropy(queries, items, targets, negatives, log_q)
    assert not torch.isclose(shifted, loss)


def test_popularity_sampler_follows_training_frequency():
    torch.manual_seed(0)
    sampler = NegativeSampler(torch.tensor([99, 0, 49, 49]), 20000, "popularity")
    torch.testing.assert_close(sampler.log_q.exp().sum(), torch.tensor(1.0))
    freq = torch.bincount(sampler.sample(), minlength=4).float() / 20000
    torch.testing.assert_close(freq, torch.tensor([100, 1, 50, 50]) / 201.0, atol=0.01, rtol=0)
    uniform = NegativeSampler(torch.tensor([99, 0, 49, 49]), 8, "uniform")
    assert uniform.sample().shape == (8,)


@pytest.mark.parametrize("model", ["sasrec", "fame"])
def test_sampled_loss_trains(seq_file, tmp_path, model):
    overrides = tiny_overrides(
        seq_file,
        **{"model.name": model, "model.hidden_size": 64, "train.loss": "sampled"},
        **{"train.negatives": 16, "train.negative_sampling": "popularity", "train.epochs": 4},
    )
    metrics = train_run(RunConfig().with_overrides(overrides), tmp_path / "run", progress=False)
    log = [json.loads(r) for r in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert metrics["config"]["train"]["loss"] == "sampled"


def test_softmax_fusion_refuses_the_sampled_loss(tiny_config):
    fame = {"model.name": "fame", "model.hidden_size": 64, "fame.fusion": "softmax"}
    with pytest.raises(ConfigError, match="drop --loss sampled"):
        tiny_config.with_overrides({**fame, "train.loss": "sampled"}).validate()
