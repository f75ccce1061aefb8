"""Item attributes (side information keyed by item): read, mapped to internal ids, kept sparse.

One attribute source is either a bundled dataset's attributes (categories and brand of the
Amazon data, `bundled`) or a JSON file `{"item_id": [attribute_id, ...]}` keyed by the
original item ids of the data. Items of the file that are not in the data are ignored; items of
the data that are not in the file have no attribute.

Attribute ids are any integers from 0 to 2**63 - 1. They are kept as sparse indices
(`ItemAttributes`: each item's columns, CSR) over a vocabulary that no id makes large: ids
below 65,536 are their own columns (0..largest id, the layout every run had before large ids
were accepted: the bundled data, the files of `famerec data prepare`); a file with a larger id
gets a compact vocabulary instead, id 0 and then every id an item of the data has, ascending.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from famerec.config import BUNDLED_ATTRIBUTES
from famerec.data.bundled import BUNDLED, load_attributes
from famerec.data.sequences import SequenceData
from famerec.errors import ConfigError, DataError, printable

MAX_ATTRIBUTE_ID = 2**63 - 1  # ids are held in int64 tensors
DIRECT_IDS = 2**16  # ids below it are their own columns
EXPECTED = 'a JSON object {"item_id": [attribute_id, ...]} of integer ids from 0 to 2**63 - 1'


def read_attributes(source: str | None, data: SequenceData) -> dict[int, list[int]]:
    """Attribute ids of each internal item id of `data`: from a JSON file, or with `source`
    None or 'bundled' from the bundled dataset `data` is."""
    if source is None or source == BUNDLED_ATTRIBUTES:
        if data.name not in BUNDLED:
            raise ConfigError(
                f"no item attributes for dataset '{data.name}'; give a JSON file "
                '{"item_id": [attribute_id, ...]} (--attributes, or --item-attributes FILE)'
            )
        return load_attributes(data.name, data)
    try:
        by_original = json.loads(Path(source).read_text())
    except (OSError, ValueError) as error:  # ValueError: JSON, or an id of too many digits
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise DataError(f"cannot read attributes: {printable(reason)}", source) from None
    if not isinstance(by_original, dict):
        raise DataError(f"attributes must be {EXPECTED}", source)
    for item, values in by_original.items():
        problem = _attribute_problem(values)
        if problem:
            shown = printable(repr(item), limit=60)
            raise DataError(f"item {shown}: {problem} (attributes are {EXPECTED})", source)
    return to_internal(by_original, data)


def _attribute_problem(values: object) -> str | None:
    """What makes `values` no list of attribute ids, or None."""
    if not isinstance(values, list):
        return f"attributes must be a list of attribute ids, not {_kind(values)}"
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"attribute id {_shown(value)} is not an integer"
        if not 0 <= value <= MAX_ATTRIBUTE_ID:
            return f"attribute id {_shown(value)} is out of range"
    return None


def _kind(value: object) -> str:
    return {dict: "an object", str: "a string", type(None): "null"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _shown(value: object) -> str:
    return printable(json.dumps(value), limit=40)


def to_internal(by_original: dict[str, list[int]], data: SequenceData) -> dict[int, list[int]]:
    """`{"original item id": [...]}` keyed by the internal ids of `data` instead; items that
    are not in `data` are left out."""
    index = {str(original): j + 1 for j, original in enumerate(data.item_ids.tolist())}
    return {index[k]: v for k, v in by_original.items() if k in index}


@dataclass(frozen=True)
class ItemAttributes:
    """Which items have which attributes, as sparse indices (CSR): the columns of item v are
    `columns[offsets[v]:offsets[v + 1]]`, ascending, each once (row 0: padding); column c
    stands for attribute id `vocabulary[c]`."""

    offsets: torch.Tensor  # (V + 2,) int64
    columns: torch.Tensor  # (M,) int64 in 0..A-1
    vocabulary: torch.Tensor  # (A,) int64 the attribute id of each column

    @classmethod
    def from_lists(cls, attributes: dict[int, list[int]], num_items: int) -> ItemAttributes:
        """From `read_attributes`' ids by internal item id (1..num_items), over the
        vocabulary of the module docstring."""
        used = {0}.union(*attributes.values())
        largest = max(used)
        vocabulary = range(largest + 1) if largest < DIRECT_IDS else sorted(used)
        column = {a: c for c, a in enumerate(vocabulary)}
        rows: list[list[int]] = [[] for _ in range(num_items + 1)]
        for item, values in attributes.items():
            rows[item] = sorted({column[a] for a in values})
        lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
        return cls(
            _offsets(lengths),
            torch.tensor([c for row in rows for c in row], dtype=torch.long),
            torch.tensor(list(vocabulary), dtype=torch.long),
        )

    @classmethod
    def from_matrix(cls, members: torch.Tensor) -> ItemAttributes:
        """From a dense (V + 1, A) membership matrix whose columns are the attribute ids."""
        item, column = members.nonzero(as_tuple=True)  # sorted by item, then column
        lengths = torch.bincount(item, minlength=members.shape[0])
        return cls(_offsets(lengths), column, torch.arange(members.shape[1]))

    @staticmethod
    def side_by_side(kinds: list[ItemAttributes]) -> ItemAttributes:
        """Several sources of the same items as one, their columns one after another (as
        dense matrices concatenated along their columns)."""
        shifts = torch.cumsum(torch.tensor([0] + [k.width for k in kinds[:-1]]), 0)
        items = torch.cat([k.items() for k in kinds])
        columns = torch.cat([k.columns + shift for k, shift in zip(kinds, shifts.tolist())])
        order = torch.sort(items, stable=True).indices  # by item; each item's columns ascending
        lengths = sum(torch.diff(k.offsets) for k in kinds)
        return ItemAttributes(
            _offsets(lengths), columns[order], torch.cat([k.vocabulary for k in kinds])
        )

    @property
    def width(self) -> int:
        """A: the number of columns."""
        return len(self.vocabulary)

    @property
    def num_items(self) -> int:
        return len(self.offsets) - 2

    def items(self) -> torch.Tensor:
        """(M,) the item of each entry of `columns`."""
        lengths = torch.diff(self.offsets)
        return torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)

    def is_empty(self) -> bool:
        """No item (padding aside) has an attribute."""
        return bool(self.offsets[-1] == self.offsets[1])

    def select(self, keep: torch.Tensor) -> ItemAttributes:
        """Only the columns where `keep` (A,) is True, renumbered in order."""
        renumber = torch.cumsum(keep.long(), 0) - 1
        kept = keep[self.columns]
        lengths = torch.bincount(self.items()[kept], minlength=len(self.offsets) - 1)
        return ItemAttributes(
            _offsets(lengths), renumber[self.columns[kept]], self.vocabulary[keep]
        )

    def rows(self, items: torch.Tensor) -> torch.Tensor:
        """(*items.shape, A) uint8: the dense rows of `items` (any shape of item ids), built
        from their entries alone."""
        flat = items.reshape(-1).to(self.offsets.device)
        starts = self.offsets[flat]
        lengths = self.offsets[flat + 1] - starts
        row = torch.repeat_interleave(torch.arange(len(flat), device=flat.device), lengths)
        first = torch.cumsum(lengths, 0) - lengths  # where each row's entries start
        position = torch.arange(len(row), device=flat.device) - first[row] + starts[row]
        dense = torch.zeros(len(flat), self.width, dtype=torch.uint8, device=flat.device)
        dense[row, self.columns[position]] = 1
        return dense.reshape(*items.shape, self.width)

    def to(self, device: torch.device | str) -> ItemAttributes:
        return ItemAttributes(
            self.offsets.to(device), self.columns.to(device), self.vocabulary.to(device)
        )


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    """(n,) row lengths -> (n + 1,) where each row starts, and the end."""
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.long, device=lengths.device)
    torch.cumsum(lengths, 0, out=offsets[1:])
    return offsets


def item_attributes(source: str | None, data: SequenceData) -> ItemAttributes:
    """`read_attributes` as sparse indices (`ItemAttributes.from_lists`)."""
    return ItemAttributes.from_lists(read_attributes(source, data), data.num_items)
