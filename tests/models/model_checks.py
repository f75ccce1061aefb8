"""Checks that every model's tests share: a tiny run learns, its saved weights give the trained
model's scores back, it recommends, and `famerec train --model NAME --help` lists its flags."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import famerec
from famerec.cli import main
from famerec.config import RunConfig
from famerec.training import pipeline, train_run
from tests.conftest import tiny_overrides


def train_tiny_run(name: str, seq_file: Path, out: Path, monkeypatch, epochs: int = 5, **extra):
    """Train `name` on the tiny dataset for `epochs` epochs; returns the trained model (with its
    best weights, as the run tested it) and the train losses of the epochs."""
    built, build_model = [], pipeline.build_model

    def build_and_keep(*args, **kwargs):
        built.append(build_model(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(pipeline, "build_model", build_and_keep)
    overrides = tiny_overrides(
        seq_file, **{"model.name": name, "train.epochs": epochs, "train.patience": epochs, **extra}
    )
    train_run(RunConfig().with_overrides(overrides), out, progress=False)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return built[0].eval(), [record["train_loss"] for record in records]


def check_learns_reloads_and_recommends(name: str, seq_file, tmp_path, monkeypatch, **extra):
    """The train loss falls; famerec.load(run) scores exactly as the trained model; recommend
    works. Returns the loaded Recommender."""
    trained, losses = train_tiny_run(name, seq_file, tmp_path / name, monkeypatch, **extra)
    assert losses[-1] < losses[0], losses
    rec = famerec.load(tmp_path / name)
    sequences = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5], [0, 0, 0, 0, 7]])
    with torch.no_grad():
        torch.testing.assert_close(rec.model.score(sequences), trained.score(sequences))
    history = rec.item_ids[:3]
    result = rec.recommend(history, k=5)
    assert len(result.items) == 5 and not set(result.items) & set(history)
    return rec


def check_help_lists_flags(name: str, flags: list[str], capsys) -> None:
    assert main(["train", "--model", name, "--help"]) == 0
    out = capsys.readouterr().out
    for flag in flags:
        assert flag in out, flag


def check_causal(model) -> None:
    """Changing later items changes nothing at earlier positions (and does change later ones)."""
    seq = torch.tensor([[0, 1, 2, 3, 4, 5, 6]])
    changed = seq.clone()
    changed[0, 5:] = torch.tensor([9, 12])
    with torch.no_grad():
        before, after = model.query_vectors(seq), model.query_vectors(changed)
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def check_left_padding_never_matters(model) -> None:
    """More left padding, or a non-zero padding embedding, changes nothing at real positions."""
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[0, 0, 0, 0, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(model.query_vectors(padded)[:, 4:], model.query_vectors(short))
        torch.testing.assert_close(model.score(padded), model.score(short))
        model.item_embedding.weight[0].normal_()
        torch.testing.assert_close(model.query_vectors(padded)[:, 4:], model.query_vectors(short))
        torch.testing.assert_close(model.score(padded), model.score(short))
