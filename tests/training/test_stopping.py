import json

import pytest

from famerec.config import RunConfig
from famerec.training import train_run
from famerec.training.stopping import StoppingRule
from tests.conftest import tiny_overrides


def test_plain_patience_stops_after_that_many_epochs_without_a_best():
    rule = StoppingRule(patience=3)
    assert rule.replay([0.1, 0.2, 0.3, 0.3, 0.29, 0.28, 0.5], 4, epochs=200) == (6, 3)
    assert not rule.stops(epoch=5, best_epoch=3, steps=20)


def test_min_steps_carries_a_small_dataset_over_a_plateau():
    # learns fast, sits on a plateau (and dips) for 30 epochs, then learns the transitions
    curve = [0.1, 0.3, 0.4] + [0.39] * 30 + [0.45 + 0.01 * i for i in range(20)]
    assert StoppingRule(patience=10).replay(curve, 4, epochs=200) == (13, 3)
    # 4 steps per epoch: 1000 steps are 250 epochs, more than the curve
    assert StoppingRule(patience=10, min_steps=1000).replay(curve, 4, epochs=200) == (53, 53)
    # a large dataset has passed the floor long before: plain patience
    assert StoppingRule(patience=10, min_steps=1000).replay(curve, 100, epochs=200) == (13, 3)


def test_patience_grows_with_the_epoch_of_the_best():
    rule = StoppingRule(patience=10, growth=0.25)
    assert [rule.wait(best) for best in (1, 40, 41, 80, 160)] == [10, 10, 11, 20, 40]
    assert rule.stops(epoch=100, best_epoch=80, steps=10**6)
    assert not rule.stops(epoch=99, best_epoch=80, steps=10**6)


@pytest.mark.parametrize("interrupt", [None, 3])
def test_training_stops_where_the_rule_says_and_logs_its_state(seq_file, tmp_path, interrupt):
    overfit = {
        "train.epochs": 40,
        "train.patience": 2,
        "train.min_steps": 8,
        "train.patience_growth": 0.0,
        "model.dropout": 0.0,
        "train.lr": 2e-2,
    }
    config = RunConfig().with_overrides(tiny_overrides(seq_file, **overfit))
    out = tmp_path / "run"
    if interrupt:
        assert train_run(config, out, progress=False, stop_after=interrupt) is None
    metrics = train_run(config, out, resume=bool(interrupt), progress=False)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    curve = [record["valid"]["NDCG@10"] for record in log]
    assert metrics["epochs_run"] < 40
    steps_per_epoch = log[0]["stopping"]["steps"]
    rule = StoppingRule(patience=2, min_steps=8)
    assert rule.replay(curve, steps_per_epoch, 40) == (metrics["epochs_run"], metrics["best_epoch"])
    assert [r["stopping"]["stop"] for r in log] == [False] * (len(log) - 1) + [True]
    assert [r["stopping"]["steps"] for r in log] == [steps_per_epoch * r["epoch"] for r in log]
