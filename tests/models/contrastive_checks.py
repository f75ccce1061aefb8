"""Checks every contrastive model (CL4SRec, DuoRec, ICLRec) must pass, used by their test files:
a causal encoder, padding that never matters, a loss that falls in training, a run that
serves the scores it was trained to, and its own command-line flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

import famerec
from famerec.cli import main
from famerec.config import ModelConfig, RunConfig
from famerec.models import SequentialRecommender, build_model, model_spec
from famerec.models.augment import encode_by_length
from famerec.training import train_run
from tests.conftest import tiny_overrides

torch.set_num_threads(1)

NUM_ITEMS = 30


def tiny_model(name: str, **options: Any) -> SequentialRecommender:
    """The model `name` with tiny sizes, no dropout, in eval mode."""
    torch.manual_seed(0)
    config = ModelConfig(name=name, hidden_size=16, num_heads=2, max_len=10, dropout=0.0)
    return build_model(config, NUM_ITEMS, model_spec(name).options(**options)).eval()


def tiny_batch(rows: int = 12, width: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of `rows` random left-padded sequences of 1 to `width` items."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (rows,), generator=generator)
    items = torch.randint(1, NUM_ITEMS + 1, (rows, width + 1), generator=generator)
    real = torch.arange(width) >= width - lengths.unsqueeze(1)
    return torch.where(real, items[:, :-1], 0), torch.where(real, items[:, 1:], 0)


def check_causal(model: SequentialRecommender) -> None:
    """Changing later items does not change earlier positions' outputs."""
    seq = torch.tensor([[0, 1, 2, 3, 4, 5, 6]])
    changed = seq.clone()
    changed[0, 5:] = torch.tensor([9, 12])
    before, after = model.query_vectors(seq), model.query_vectors(changed)
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def check_padding(model: SequentialRecommender, represent) -> None:
    """Left padding changes neither the scores nor a view's representation (`represent`:
    (b, w) -> (b, k)), encoded alone or grouped with views of other lengths."""
    short, padded = torch.tensor([[3, 4, 5]]), torch.tensor([[0, 0, 0, 0, 3, 4, 5]])
    torch.testing.assert_close(model.score(short), model.score(padded))
    torch.testing.assert_close(represent(short), represent(padded))
    views = torch.tensor([[0, 0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 0, 0, 8]])
    grouped = encode_by_length(represent, views)
    for row, view in enumerate(views):
        torch.testing.assert_close(grouped[row], represent(view[view != 0].unsqueeze(0))[0])


def check_scores(model: SequentialRecommender) -> None:
    """(B, num_items + 1) float32 scores, padding column -inf."""
    scores = model.score(torch.tensor([[0, 1, 2], [3, 4, 5]]))
    assert scores.shape == (2, NUM_ITEMS + 1) and scores.dtype == torch.float32
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


def train_tiny(name: str, seq_file: Path, out: Path, **extra: Any) -> list[dict]:
    """A tiny run of `name` (every epoch kept as best-so-far); returns its log records."""
    overrides = {
        "model.name": name,
        "train.epochs": 4,
        "train.patience": 4,
        "train.lr": 5e-3,
        **extra,
    }
    config = RunConfig().with_overrides(tiny_overrides(seq_file, **overrides))
    train_run(config, out, progress=False)
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def check_trained_run(out: Path, records: list[dict], loss_names: set[str]) -> None:
    """The loss falls and logs its parts; the served model scores as the trained one did;
    `famerec.load(run).recommend` works."""
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    for record in records:
        assert set(record["train_losses"]) == {"loss", *loss_names}
    metrics = json.loads((out / "metrics.json").read_text())
    rec = famerec.load(out)
    trained = build_model(rec.config.model, rec.num_items, rec.config.options)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    if metrics["best_epoch"] == metrics["epochs_run"]:  # the last weights are the served ones
        trained.load_state_dict(checkpoint)
    else:
        trained.load_state_dict(load_file(out / "model.safetensors"))
    seqs = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8]])
    torch.testing.assert_close(rec.model.score(seqs), trained.eval().score(seqs), rtol=0, atol=0)
    result = rec.recommend(rec.item_ids[:3], k=5)
    assert len(result.items) == 5 and not set(result.items) & set(rec.item_ids[:3])


def check_help(name: str, flags: list[str], capsys) -> None:
    """`famerec train --model NAME --help` lists the model's own flags."""
    assert main(["train", "--model", name, "--help"]) == 0
    out = capsys.readouterr().out
    for flag in flags:
        assert flag in out, flag
