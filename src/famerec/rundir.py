"""A run directory and its files. A run is finished exactly when metrics.json exists; every file
is written atomically (temporary file, then rename), so an interrupted run never looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from famerec.errors import ConfigError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.json"
LOG = "log.jsonl"
CHECKPOINT = "checkpoint.pt"
DATASET = "dataset.npz"
PRETRAIN = "pretrain"
INPUT = "input.parquet"  # in-memory data given to famerec.train(), kept with its run
RANKS = "ranks.npz"  # per-user ranks of the validation and test items
OWN_FILES = (CONFIG, WEIGHTS, METRICS, LOG, CHECKPOINT, DATASET, PRETRAIN, INPUT, RANKS)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary file next to `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: Path, payload: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"))


def write_ranks(path: Path, ranks: dict[str, np.ndarray]) -> None:
    """Per-user target ranks of each split (e.g. "valid", "test") as a compressed .npz:
    `<split>_users` (user index) and `<split>_ranks` (0-based rank), both int32; a target that
    was excluded from the ranking gets the largest int32."""
    arrays = {}
    for split, split_ranks in ranks.items():
        limit = np.iinfo(np.int32).max
        arrays[f"{split}_users"] = np.arange(len(split_ranks), dtype=np.int32)
        arrays[f"{split}_ranks"] = np.minimum(split_ranks, limit).astype(np.int32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    atomic_write(path, write)


def read_ranks(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (users, ranks)} from a file written by `write_ranks`."""
    with np.load(path, allow_pickle=False) as arrays:
        splits = sorted(name[: -len("_ranks")] for name in arrays.files if name.endswith("_ranks"))
        return {s: (arrays[f"{s}_users"], arrays[f"{s}_ranks"]) for s in splits}


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    @property
    def is_finished(self) -> bool:
        return (self.path / METRICS).is_file()

    @property
    def is_started(self) -> bool:
        return (self.path / CONFIG).is_file()

    def metrics(self) -> dict:
        return json.loads((self.path / METRICS).read_text())

    def prepare(self, resume: bool, overwrite: bool) -> None:
        """Check the directory suits a new (or resumed) run; raise a clear error if not."""
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise ConfigError(f"--out {self.path} exists and is not a directory")
        contents = [p.name for p in self.path.iterdir()]
        if not [name for name in contents if name != INPUT]:
            return  # empty, or only the input data that famerec.train() wrote for this run
        foreign = [name for name in contents if name not in OWN_FILES and not name.startswith(".")]
        if not self.is_started and not (self.path / PRETRAIN).exists():
            raise ConfigError(
                f"--out {self.path} is not empty and holds no famerec run; choose another directory"
            )
        if overwrite:
            if foreign:
                raise ConfigError(
                    f"--overwrite refuses to clear {self.path}: it holds files famerec did not "
                    f"write ({', '.join(sorted(foreign)[:3])})"
                )
            shutil.rmtree(self.path)
            return
        if resume:
            return
        if self.is_finished:
            raise ConfigError(
                f"{self.path} holds a finished run; choose another --out, or pass --overwrite"
            )
        raise ConfigError(
            f"{self.path} holds an unfinished run; continue it with --resume, "
            "or start over with --overwrite"
        )

    def write_ranks(self, ranks: dict[str, np.ndarray]) -> None:
        write_ranks(self.path / RANKS, ranks)

    def append_log(self, record: dict) -> None:
        with open(self.path / LOG, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_log(self) -> list[dict]:
        path = self.path / LOG
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def truncate_log(self, last_epoch: int) -> None:
        """Drop log records after `last_epoch` (written after the last checkpoint)."""
        records = [r for r in self.read_log() if r.get("epoch", 0) <= last_epoch]
        atomic_write(
            self.path / LOG,
            lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in records)),
        )
