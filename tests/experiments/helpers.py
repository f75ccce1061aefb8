"""Small specs and fake records: plans and reports checked without training anything."""

from __future__ import annotations

import json
from pathlib import Path

from famerec.config import RunConfig
from famerec.evaluation import METRIC_NAMES
from famerec.experiments import load_spec
from famerec.experiments.plan import RECORD

REPO = Path(__file__).resolve().parents[2]

HEADER = """
name = "tiny"
[selection]
seeds = [1, 2]
baseline = "sasrec"
[datasets.toys]
"""

# A pruned search (goes under [selection]): trials compared at epochs 2 and 4, the best half on.
PRUNING = "[selection.pruning]\nrungs = [2, 4]\nreduction = 2\n"

# A base section that trains a run on tiny data in seconds.
TINY_BASE = """[base]
model.hidden_size = 16
model.max_len = 8
train.epochs = 2
train.patience = 2
train.batch_size = 32
train.loss_chunk = 32
"""


def write_spec(folder: Path, body: str, header: str = HEADER):
    """A spec file experiments/tiny.toml under `folder`, loaded."""
    path = folder / "experiments" / "tiny.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + body)
    return load_spec(path)


def fake_record(spec, run, valid: float, test: float = 0.5, epochs: int = 3) -> None:
    """The record of a finished `run` whose validation (and test) NDCG@10 are given."""
    folder = spec.records_dir / run.id
    folder.mkdir(parents=True, exist_ok=True)
    config = RunConfig().with_overrides(run.settings)
    metrics = {
        "valid": dict.fromkeys(METRIC_NAMES, valid),
        "test": dict.fromkeys(METRIC_NAMES, test),
        "best_epoch": epochs,
        "epochs_run": epochs,
    }
    (folder / "config.json").write_text(config.to_json())
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / RECORD).write_text(json.dumps({"id": run.id, "wall_seconds": 10.0}))


def fake_weights(spec, run) -> None:
    """A local run directory with weights, as a finished run leaves it."""
    folder = spec.runs_dir / run.id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "metrics.json").write_text("{}")  # finished: weights of a best epoch are no start
