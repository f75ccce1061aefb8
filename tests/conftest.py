"""Shared fixtures: small generated datasets that train in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from famerec.config import RunConfig


def write_sequences(path: Path, num_users: int = 120, num_items: int = 40, seed: int = 0) -> Path:
    """Sequences that walk through items with a learnable +1/+2 step pattern."""
    rng = np.random.default_rng(seed)
    lines = []
    for user in range(1, num_users + 1):
        length = int(rng.integers(4, 15))
        item = int(rng.integers(1, num_items + 1))
        items = []
        for _ in range(length):
            items.append(item)
            item = (item + int(rng.choice([1, 2], p=[0.8, 0.2])) - 1) % num_items + 1
        lines.append(" ".join(map(str, [user, *items])))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def seq_file(tmp_path: Path) -> Path:
    return write_sequences(tmp_path / "tiny.txt")


def tiny_overrides(path: Path, **extra) -> dict:
    overrides = {
        "data.path": str(path),
        "data.dataset": None,
        "model.hidden_size": 16,
        "model.num_heads": 2,
        "model.max_len": 12,
        "model.dropout": 0.1,
        "train.epochs": 2,
        "train.batch_size": 32,
        "train.eval_batch_size": 64,
        "train.threads": 1,
        "train.loss_chunk": 64,
    }
    overrides.update(extra)
    return overrides


@pytest.fixture
def tiny_config(seq_file: Path) -> RunConfig:
    return RunConfig().with_overrides(tiny_overrides(seq_file)).validate()


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny FAME run (with its SASRec pretraining run) on string ids, trained once."""
    from famerec.training import train_run

    root = tmp_path_factory.mktemp("runs")
    numeric = write_sequences(root / "numeric.txt", num_users=80, num_items=30)
    rows = ["user,item,timestamp"]
    for line in numeric.read_text().splitlines():
        user, *items = line.split()
        rows += [f"u{user},i{item},{t}" for t, item in enumerate(items)]
    table = root / "events.csv"
    table.write_text("\n".join(rows) + "\n")
    overrides = tiny_overrides(
        table,
        **{
            "data.format": "table",
            "data.kcore": 0,
            "model.hidden_size": 64,
            "model.name": "fame",
            "train.pretrain": True,
            "train.epochs": 3,
        },
    )
    config = RunConfig().with_overrides(overrides).validate()
    train_run(config, root / "fame", progress=False)
    return {"fame": root / "fame", "sasrec": root / "fame" / "pretrain"}
