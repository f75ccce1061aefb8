"""The data of a run: its dataset.npz holds the sequences and id mappings it was trained on.

`--resume` reads the data file named in config.json again; if that file changed since the run
started, continuing would silently train one model on two datasets. `fingerprint` is the
local stand-in for a data-layer fingerprint and can be swapped for it.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from famerec.data import SequenceData
from famerec.errors import FamerecError
from famerec.training.rundir import atomic_write


def _id_bytes(ids: np.ndarray) -> bytes:
    """Integer ids as int64, anything else as text: the same ids give the same bytes whether
    they come from the reader or back from dataset.npz (which stores strings as fixed width)."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        return b"int:" + ids.astype("<i8").tobytes()
    return b"str:" + "\0".join(map(str, ids.tolist())).encode()


def fingerprint(data: SequenceData) -> str:
    """sha256 of every user's item sequence and both id mappings."""
    digest = hashlib.sha256()
    for part in (
        data.items.astype("<i8").tobytes(),
        data.offsets.astype("<i8").tobytes(),
        _id_bytes(data.user_ids),
        _id_bytes(data.item_ids),
    ):
        digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()


def save_dataset(data: SequenceData, path: Path) -> None:
    buffer = io.BytesIO()
    data.save(buffer)  # np.savez accepts a file object
    atomic_write(path, buffer.getvalue())


def check_same_data(data: SequenceData, saved: Path, source: str | None) -> None:
    """Refuse to resume a run on data other than the data it started with."""
    try:
        theirs = SequenceData.load(saved)
    except (OSError, ValueError, KeyError) as error:
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
