"""The data of a run: its dataset.npz holds the sequences and id mappings it was trained on.

`--resume` reads the data file named in config.json again; if that file changed since the run
started, continuing would silently train one model on two datasets.
"""

from __future__ import annotations

from pathlib import Path

from famerec.data import SequenceData, fingerprint
from famerec.errors import FamerecError


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
