"""Data layer: ingest (bundled, sequence files, interaction tables), split and batch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from famerec.config import DataConfig
from famerec.data.bundled import BUNDLED, bundled_names, load_attributes, load_bundled
from famerec.data.frames import WHERE
from famerec.data.readers import (
    kcore_filter,
    kcore_sequences,
    read_frame,
    read_sequence_file,
    read_table,
)
from famerec.data.sequences import (
    SequenceData,
    drop_short_users,
    fingerprint,
    require_training_pairs,
)
from famerec.data.split import LeaveOneOut, PrefixSet, leave_one_out

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "BUNDLED",
    "LeaveOneOut",
    "PrefixSet",
    "SequenceData",
    "bundled_names",
    "drop_short_users",
    "fingerprint",
    "kcore_filter",
    "kcore_sequences",
    "leave_one_out",
    "load_attributes",
    "load_bundled",
    "load_dataset",
    "read_frame",
    "read_sequence_file",
    "read_table",
    "require_training_pairs",
]


def load_dataset(config: DataConfig, frame: pl.DataFrame | None = None) -> SequenceData:
    """The dataset a config names, with users too short for leave-one-out dropped; data with
    nothing to train on is refused here, before a run directory exists. `frame`: in-memory data
    (`famerec.data.frames`), read as the table `config.path` will hold once it is written."""
    kcore = config.kcore_or_default
    if frame is not None:
        data = read_frame(
            frame,
            WHERE,
            user_col=config.user_col,
            item_col=config.item_col,
            time_col=config.time_col,
            kcore=kcore,
            name=Path(config.path).name.split(".")[0] if config.path else WHERE,
        )
    elif config.path is None:
        data = load_bundled(config.dataset)
        if kcore:
            data = kcore_sequences(data, kcore)
    elif config.format == "seq":
        data = read_sequence_file(config.path, kcore=kcore)
    else:
        columns = [c.strip() for c in config.columns.split(",")] if config.columns else None
        data = read_table(
            config.path,
            user_col=config.user_col,
            item_col=config.item_col,
            time_col=config.time_col,
            sep=config.sep,
            header=config.header,
            columns=columns,
            kcore=kcore,
        )
    return require_training_pairs(drop_short_users(data))
