"""The checks every session model passes (Atten-Mixer, MiaSRec, MSGIFSR): it learns on a tiny
dataset, a saved run reloads to the very same scores, its own flags reach the CLI, and a
loaded run recommends. A model's test file runs them with

    class TestProtocol(SessionProtocol):
        name, flags = "mymodel", ["--my-flag"]
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from famerec.cli import main
from famerec.config import RunConfig
from famerec.models import SequentialRecommender
from famerec.recommender import load
from famerec.training import pipeline, train_run
from tests.conftest import tiny_overrides, write_sequences


def train_tiny(name: str, root: Path, monkeypatch, **extra) -> tuple[Path, SequentialRecommender]:
    """Train `name` for a few epochs on the tiny dataset; returns the run directory and the
    model object the run trained (holding the best-validation weights at the end)."""
    built = []
    build = pipeline.build_model

    def keep(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(pipeline, "build_model", keep)
    data = write_sequences(root / "tiny.txt")
    overrides = {"model.name": name, "train.epochs": 6, "train.patience": 6, **extra}
    train_run(RunConfig().with_overrides(tiny_overrides(data, **overrides)), root / name)
    return root / name, built[-1]


def check_loss_falls(run: Path) -> None:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [record["train_loss"] for record in records]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.9 * losses[0], losses


def check_reload_gives_the_same_scores(run: Path, trained: SequentialRecommender) -> None:
    loaded = load(run).model
    assert type(loaded) is type(trained)
    sequences = torch.tensor([[0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 7]])
    trained.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.score(sequences), trained.score(sequences))


def check_own_flags_in_help(name: str, flags: list[str], capsys) -> None:
    assert main(["train", "--model", name, "--help"]) == 0
    out = capsys.readouterr().out
    for flag in flags:
        assert flag in out, flag


def check_recommends(run: Path) -> None:
    rec = load(run)
    result = rec.recommend([1, 2, 3], k=5)
    assert len(result.items) == 5 and not {1, 2, 3} & set(result.items)
    assert result.scores == sorted(result.scores, reverse=True)
    assert len(rec.recommend_batch([[4], [5, 6, 7, 8]], k=3)) == 2


def check_loss_is_the_mean_over_every_prefix(model: SequentialRecommender) -> None:
    """loss((inputs, targets)) = mean over real positions t of the cross-entropy of score()
    of the prefix inputs[:t+1] with targets[t]: every prefix is a session of its own."""
    inputs = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    targets = torch.tensor([[0, 2, 3, 4], [5, 6, 7, 8]])
    expected = [
        F.cross_entropy(model.score(inputs[row : row + 1, : t + 1])[0, 1:], targets[row, t] - 1)
        for row, t in targets.nonzero().tolist()
    ]
    torch.testing.assert_close(model.loss((inputs, targets)), torch.stack(expected).mean())


class SessionProtocol:
    """The protocol checks as tests; subclasses named Test* set `name` and `flags`."""

    name: str
    flags: list[str]

    @pytest.fixture(scope="class")
    @classmethod
    def trained(cls, tmp_path_factory):
        with pytest.MonkeyPatch.context() as monkeypatch:
            return train_tiny(cls.name, tmp_path_factory.mktemp(cls.name), monkeypatch)

    def test_loss_falls(self, trained):
        check_loss_falls(trained[0])

    def test_reload_gives_the_trained_scores(self, trained):
        check_reload_gives_the_same_scores(*trained)

    def test_recommends_from_a_loaded_run(self, trained):
        check_recommends(trained[0])

    def test_help_shows_its_own_flags(self, capsys):
        check_own_flags_in_help(self.name, self.flags, capsys)
