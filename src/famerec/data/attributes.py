"""Item attributes (side information keyed by item): read, mapped to internal ids, as a matrix.

One attribute source is either a bundled dataset's attributes (categories and brand of the
Amazon data, `bundled`) or a JSON file `{"item_id": [attribute_id, ...]}` keyed by the
original item ids of the data. Items of the file that are not in the data are ignored; items of
the data that are not in the file have no attribute.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from famerec.config import BUNDLED_ATTRIBUTES
from famerec.data.bundled import BUNDLED, load_attributes
from famerec.data.sequences import SequenceData
from famerec.errors import ConfigError, DataError


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
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read attributes: {error}", source) from None
    if not isinstance(by_original, dict) or not all(
        isinstance(values, list) and all(isinstance(a, int) and a >= 0 for a in values)
        for values in by_original.values()
    ):
        raise DataError(
            'attributes must be a JSON object {"item_id": [attribute_id, ...]} of integer ids '
            "0 or more",
            source,
        )
    return to_internal(by_original, data)


def to_internal(by_original: dict[str, list[int]], data: SequenceData) -> dict[int, list[int]]:
    """`{"original item id": [...]}` keyed by the internal ids of `data` instead; items that
    are not in `data` are left out."""
    index = {str(original): j + 1 for j, original in enumerate(data.item_ids.tolist())}
    return {index[k]: v for k, v in by_original.items() if k in index}


def attribute_matrix(attributes: dict[int, list[int]], num_items: int) -> torch.Tensor:
    """(num_items + 1, num_attributes) uint8 matrix: item i has attribute a (row 0: padding)."""
    width = 1 + max((a for values in attributes.values() for a in values), default=0)
    matrix = torch.zeros(num_items + 1, width, dtype=torch.uint8)
    for item, values in attributes.items():
        matrix[item, values] = 1
    return matrix
