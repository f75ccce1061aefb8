"""A run directory and its files. A run is finished exactly when metrics.json exists; every file
is written atomically (temporary file, then rename), so an interrupted run never looks finished.
A run that fails leaves nothing behind unless it holds a completed epoch worth resuming.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from famerec.errors import ConfigError, FamerecError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.json"
LOG = "log.jsonl"
CHECKPOINT = "checkpoint.pt"
DATASET = "dataset.npz"
PRETRAIN = "pretrain"
INPUT = "input.parquet"  # in-memory data given to famerec.train(), kept with its run
RANKS = "ranks.npz"  # per-user ranks of the validation and test items
ITEM_ATTRIBUTES = "item_attributes.json"  # a copy of --item-attributes FILE, kept with its run
INPUTS = "inputs"  # copies of the other files a run's settings name (FAME's --attributes)
OWN_FILES = (
    CONFIG,
    WEIGHTS,
    METRICS,
    LOG,
    CHECKPOINT,
    DATASET,
    PRETRAIN,
    INPUT,
    RANKS,
    ITEM_ATTRIBUTES,
    INPUTS,
)
PROBE_BYTES = 64 * 1024


def logged_seconds(epochs: list[dict]) -> float:
    """Training and validation seconds of logged epochs: a run's time less its start-ups, its
    test and any epoch an interruption cut short, so a lower bound of its wall time."""
    return sum(e.get("train_seconds", 0.0) + e.get("eval_seconds", 0.0) for e in epochs)


def write_error(path: Path, error: OSError) -> FamerecError:
    return FamerecError(f"cannot write {path}: {error.strerror or error}")


def new_temp_file(path: Path) -> Path:
    """An empty hidden file next to `path`. Created with mode 0666 so that the umask applies
    (tempfile.mkstemp makes every file 0600); the name keeps `path`'s suffix."""
    tmp = path.with_name(f".tmp-{secrets.token_hex(6)}.{path.name}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return tmp


def atomic_write(path: Path, content: bytes | str | Callable[[Path], None]) -> None:
    """Write `content` to a temporary file next to `path`, then rename it over `path`.

    `content` is bytes or text, or a function that writes the temporary file it is given (for
    libraries that write files themselves). Every failed write (a full disk, say) is an OSError
    here and ends with one line.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_temp_file(path)
        try:
            if callable(content):
                content(tmp)
            else:
                tmp.write_bytes(content.encode() if isinstance(content, str) else content)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as error:
        raise write_error(path, error) from None


def to_json(payload: Any, indent: int | None = None) -> str:
    """Standard JSON only: a NaN or infinity is a bug to report, not a token to write."""
    return json.dumps(payload, indent=indent, allow_nan=False)


def write_json(path: Path, payload: Any) -> None:
    atomic_write(path, to_json(payload, indent=2) + "\n")


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
        self.created: Path | None = None  # the topmost directory that claim() created
        self.was_empty = False  # claim() found the directory existing and empty

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

    def claim(self) -> None:
        """Create the directory and write a probe file in it before any data is read, so that an
        unwritable or full --out fails at once; remember what existed for `release`."""
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        self.created = missing[-1] if missing else None
        self.was_empty = not missing and self.path.is_dir() and not any(self.path.iterdir())
        probe = None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = new_temp_file(self.path / "probe")
            with open(probe, "wb") as handle:
                handle.write(bytes(PROBE_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            self.release()
            raise FamerecError(f"cannot write to --out {self.path}: {error.strerror}") from None
        finally:
            if probe is not None:
                probe.unlink(missing_ok=True)

    def release(self) -> bool:
        """After a failure: undo `claim` unless the run holds a completed epoch (a checkpoint or
        a pretraining run), which stays resumable. Returns whether the run was kept."""
        if (self.path / CHECKPOINT).exists() or (self.path / PRETRAIN).exists():
            return True
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)
        elif self.was_empty:
            for entry in self.path.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        return False

    def write_ranks(self, ranks: dict[str, np.ndarray]) -> None:
        write_ranks(self.path / RANKS, ranks)

    def append_log(self, record: dict) -> None:
        line = to_json(record) + "\n"
        try:
            with open(self.path / LOG, "a") as handle:
                handle.write(line)
        except OSError as error:
            raise write_error(self.path / LOG, error) from None

    def read_log(self) -> list[dict]:
        """The log's records; a line cut short by a crash (only the last can be) ends it."""
        path = self.path / LOG
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records

    def reached(self) -> str:
        """Where a paused run stands: its last logged epoch, or, for a --pretrain run paused
        before its second stage logged one, its pretraining stage's."""
        epochs = len(self.read_log())
        stage = RunDir(self.path / PRETRAIN)
        if not epochs and stage.is_started and not stage.is_finished:
            return f"pretraining epoch {len(stage.read_log())}"
        return f"epoch {epochs}"

    def logged_seconds(self, last_epoch: int | None = None) -> float:
        """Seconds of training and validation in the log (up to `last_epoch`)."""
        return logged_seconds(
            [r for r in self.read_log() if last_epoch is None or r.get("epoch", 0) <= last_epoch]
        )

    def truncate_log(self, last_epoch: int) -> None:
        """Drop log records after `last_epoch` (written after the last checkpoint)."""
        records = [r for r in self.read_log() if r.get("epoch", 0) <= last_epoch]
        atomic_write(self.path / LOG, "".join(to_json(r) + "\n" for r in records))
