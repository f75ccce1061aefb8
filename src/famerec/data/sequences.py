"""The one data container: every user's chronological item sequence, as flat arrays.

Internal item ids run 1..num_items (0 is padding); user u's items are
``items[offsets[u]:offsets[u + 1]]``, oldest first. The original ids of the input data are kept
so that results can be reported in the user's own terms.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from famerec.errors import DataError
from famerec.runs.dir import atomic_write

log = logging.getLogger("famerec")

MIN_SEQUENCE_LENGTH = 3  # leave-one-out needs a training item, a validation and a test target


@dataclass(frozen=True)
class SequenceData:
    name: str
    items: np.ndarray  # (actions,) int64 internal item ids, users' sequences concatenated
    offsets: np.ndarray  # (users + 1,) int64 start of each user's sequence in `items`
    user_ids: np.ndarray  # (users,) original user ids
    item_ids: np.ndarray  # (items,) original id of internal item id j + 1 at index j

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_actions(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def stats(self) -> dict:
        return {
            "name": self.name,
            "users": self.num_users,
            "items": self.num_items,
            "actions": self.num_actions,
            "avg_length": round(float(self.lengths.mean()), 3) if self.num_users else 0.0,
        }

    def save(self, path: str | Path) -> None:
        """Write the sequences and id mappings as a pickle-free .npz file, atomically."""
        arrays = {
            "name": np.array(self.name),
            "items": self.items,
            "offsets": self.offsets,
            "user_ids": _plain_array(self.user_ids),
            "item_ids": _plain_array(self.item_ids),
        }

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # a file object: savez would add ".npz" to a name
                np.savez_compressed(handle, **arrays)

        atomic_write(Path(path), write)

    @classmethod
    def load(cls, path: str | Path) -> SequenceData:
        """Read a file written by `save`; a damaged or foreign file is a one-line DataError."""
        if not Path(path).is_file():
            raise DataError("file not found", str(path))
        if not zipfile.is_zipfile(path):  # numpy would try it as a pickle and say so
            raise _unusable(path, "no complete .npz archive: truncated, or another kind of file")
        try:
            with np.load(path, allow_pickle=False) as arrays:
                data = cls(
                    name=str(arrays["name"]),
                    items=arrays["items"],
                    offsets=arrays["offsets"],
                    user_ids=arrays["user_ids"],
                    item_ids=arrays["item_ids"],
                )
        except (
            OSError,
            EOFError,
            ValueError,
            KeyError,
            RuntimeError,
            zipfile.BadZipFile,
            zlib.error,
        ) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise _unusable(path, f"{type(error).__name__}: {reason}") from None
        problem = data._inconsistency()
        if problem:
            raise _unusable(path, problem)
        return data

    def _inconsistency(self) -> str | None:
        """What makes the arrays unusable as a dataset, or None."""
        arrays = (self.items, self.offsets, self.user_ids, self.item_ids)
        if any(a.ndim != 1 for a in arrays) or len(self.offsets) == 0:
            return "arrays of the wrong shape"
        if self.items.dtype.kind not in "iu" or self.offsets.dtype.kind not in "iu":
            return "non-integer items or offsets"
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.items):
            return "offsets do not span the items"
        if (np.diff(self.offsets) < 0).any():
            return "decreasing offsets"
        if len(self.user_ids) != self.num_users:
            return f"{len(self.user_ids)} user ids for {self.num_users} users"
        if len(self.items) and (self.items.min() < 1 or self.items.max() > self.num_items):
            return f"item ids outside 1..{self.num_items}"
        return None


def _unusable(path: str | Path, reason: str) -> DataError:
    return DataError(f"not a usable famerec dataset file ({reason})", str(path))


def _plain_array(ids: np.ndarray) -> np.ndarray:
    """Integers stay integers; anything else becomes a fixed-width unicode array (no pickle)."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    return ids.astype(str)


def fingerprint(data: SequenceData) -> str:
    """sha256 (hex) of the sequences and both id mappings, stable across versions and machines.

    Equal fingerprints mean the same sequences under the same ids: internal ids, their order,
    the split into users and the original ids (7 and "7" differ) all count. The dataset's name
    does not, so a renamed or moved file still matches (for `--resume` and `--init-from` checks).
    """
    digest = hashlib.sha256(b"famerec dataset v1")
    for label, array in (("items", data.items), ("offsets", data.offsets)):
        _update(digest, label, np.ascontiguousarray(array, dtype="<i8").tobytes())
    for label, ids in (("user_ids", data.user_ids), ("item_ids", data.item_ids)):
        _update(digest, label, json.dumps(_plain_array(ids).tolist()).encode())
    return digest.hexdigest()


def _update(digest, label: str, payload: bytes) -> None:
    """Labelled, length-prefixed parts, so that no two different datasets hash the same bytes."""
    digest.update(f"{label}:{len(payload)}:".encode())
    digest.update(payload)


def from_user_sequences(
    name: str, user_ids: np.ndarray, sequences: list[np.ndarray], item_ids: np.ndarray
) -> SequenceData:
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = np.concatenate(sequences).astype(np.int64) if sequences else np.zeros(0, np.int64)
    return SequenceData(name, items, offsets, np.asarray(user_ids), np.asarray(item_ids))


def drop_short_users(data: SequenceData, min_length: int = MIN_SEQUENCE_LENGTH) -> SequenceData:
    """Drop users too short for leave-one-out (warning with their count); empty data is an error."""
    keep = data.lengths >= min_length
    dropped = int((~keep).sum())
    if dropped:
        log.warning(
            "dropped %d of %d users with fewer than %d items", dropped, data.num_users, min_length
        )
    if not keep.any():
        raise DataError(
            f"dataset '{data.name}' has no user with at least {min_length} items "
            "(leave-one-out needs a training item, a validation item and a test item)"
        )
    if not dropped:
        return data
    starts, ends = data.offsets[:-1][keep], data.offsets[1:][keep]
    sequences = [data.items[s:e] for s, e in zip(starts, ends)]
    return compact_items(
        from_user_sequences(data.name, data.user_ids[keep], sequences, data.item_ids)
    )


def require_training_pairs(data: SequenceData) -> SequenceData:
    """Refuse data that leave-one-out leaves nothing to train on, or that has nothing to rank.

    Each user's last two items are held out (validation, test), so a user with 3 items keeps one
    training item and no (item, next item) pair; training needs some user with 4 or more. A
    catalog of one item has no ranking to learn or to evaluate.
    """
    if data.num_items < 2:
        raise DataError(
            f"dataset '{data.name}' has {data.num_items} item: nothing to rank (a model ranks "
            "the items of the data, and needs 2 or more)"
        )
    if data.num_users and data.lengths.max() <= MIN_SEQUENCE_LENGTH:
        raise DataError(
            f"dataset '{data.name}' has no user with more than {MIN_SEQUENCE_LENGTH} items, so "
            "nothing is left to train on (leave-one-out holds out each user's last 2 items; "
            f"training needs users with at least {MIN_SEQUENCE_LENGTH + 1})"
        )
    return data


def compact_items(data: SequenceData) -> SequenceData:
    """Renumber items 1..n after users were removed, so no item id is left without data."""
    present = np.zeros(data.num_items + 1, dtype=bool)
    present[data.items] = True
    present[0] = False
    if present[1:].all():
        return data
    new_id = np.cumsum(present)  # old internal id -> new internal id
    return SequenceData(
        data.name,
        new_id[data.items].astype(np.int64),
        data.offsets,
        data.user_ids,
        data.item_ids[present[1:]],
    )
