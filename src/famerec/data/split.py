"""Leave-one-out split: train on all but the last two items, validate on the second-to-last,
test on the last (each predicted from everything before it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from famerec.data.sequences import SequenceData


@dataclass(frozen=True)
class PrefixSet:
    """For each user, a history `items[starts:ends]` and the item that follows it."""

    items: np.ndarray  # the dataset's flat item array (shared, not copied)
    starts: np.ndarray  # (users,)
    ends: np.ndarray  # (users,) exclusive end of the history
    targets: np.ndarray  # (users,) next item after the history; 0 where there is none

    def __len__(self) -> int:
        return len(self.starts)


@dataclass(frozen=True)
class LeaveOneOut:
    train: PrefixSet  # history = all but the last two items; targets unused
    valid: PrefixSet  # history = all but the last two, target = second-to-last
    test: PrefixSet  # history = all but the last, target = last


def leave_one_out(data: SequenceData) -> LeaveOneOut:
    starts, ends = data.offsets[:-1], data.offsets[1:]
    if (ends - starts < 3).any():
        raise ValueError("leave-one-out needs at least 3 items per user; drop short users first")
    items = data.items
    train = PrefixSet(items, starts, ends - 2, np.zeros(len(starts), dtype=np.int64))
    valid = PrefixSet(items, starts, ends - 2, items[ends - 2])
    test = PrefixSet(items, starts, ends - 1, items[ends - 1])
    return LeaveOneOut(train, valid, test)
