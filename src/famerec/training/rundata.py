"""The data of a run: its dataset.npz holds the sequences and id mappings it was trained on."""

from __future__ import annotations

import io
from pathlib import Path

from famerec.data import SequenceData
from famerec.training.rundir import atomic_write


def save_dataset(data: SequenceData, path: Path) -> None:
    buffer = io.BytesIO()
    data.save(buffer)  # np.savez accepts a file object
    atomic_write(path, buffer.getvalue())
