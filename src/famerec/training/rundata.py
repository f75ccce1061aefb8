"""The data of a run: its dataset.npz holds the sequences and id mappings it was trained on.

`--resume` reads the data file named in config.json again; if that file changed since the run
started, continuing would silently train one model on two datasets.

A run started from another (`--init-from`) without `--data` or `--dataset` reads the data of
that run (`data_of_source`); the pipeline checks that it is still the data that run was
trained on (`check_source`: the fingerprints in metrics.json).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from famerec.data import SequenceData, fingerprint
from famerec.errors import ConfigError, FamerecError
from famerec.runconfig import RunConfig
from famerec.runs.dir import CONFIG

log = logging.getLogger("famerec")

# The data settings that say which interactions a run reads (not its item table).
DATA_SOURCE = (
    "dataset",
    "path",
    "format",
    "sep",
    "header",
    "columns",
    "user_col",
    "item_col",
    "time_col",
    "kcore",
)


def with_data_of_source(overrides: dict[str, Any], out: str | Path, resume: bool) -> dict:
    """`overrides` with, below them, the data settings (`DATA_SOURCE`) of the run that
    `train.init_from` names: for a new run in `out` whose overrides give no data file or
    dataset. Unchanged where they give one, where it names no run (loading it says so), or for
    a started run that `resume`s (its config.json has its data)."""
    source = overrides.get("train.init_from")
    if not source or "data.path" in overrides or "data.dataset" in overrides:
        return overrides
    if resume and (Path(out) / CONFIG).is_file():
        return overrides
    saved = Path(source) / CONFIG
    if not saved.is_file():
        return overrides
    data = RunConfig.load(saved).data
    if data.path is not None and not Path(data.path).is_file():
        raise ConfigError(
            f"--init-from {source} was trained on {data.path}, which is not found; give its "
            "data with --data (or --dataset)"
        )
    log.info("data of --init-from %s: %s", source, data.path or f"dataset '{data.dataset}'")
    return {**{f"data.{key}": getattr(data, key) for key in DATA_SOURCE}, **overrides}


def check_same_data(data: SequenceData, saved: Path, source: str | None) -> None:
    """Refuse to resume a run on data other than the data it started with."""
    try:
        theirs = SequenceData.load(saved)
    except (OSError, ValueError, KeyError, FamerecError) as error:
        raise FamerecError(
            f"cannot resume: {saved} is missing or damaged ({type(error).__name__}); "
            "start the run over with --overwrite"
        ) from None
    if fingerprint(theirs) != fingerprint(data):
        where = source or f"bundled dataset '{data.name}'"
        raise FamerecError(
            f"cannot resume: {where} is not the data this run started with (its sequences or ids "
            f"differ from {saved}); restore the file, or start over with --overwrite"
        )
