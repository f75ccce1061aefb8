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
