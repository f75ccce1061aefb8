"""The Amazon Beauty, Sports and Toys datasets of the FAME paper, shipped inside the package.

Source: the preprocessed 5-core files of S3-Rec/ICLRec (see docs/data.md, "The bundled data",
for provenance and licence). Item ids run 1..n in the files, and the readers keep them.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources

from famerec.data.readers import read_sequence_file
from famerec.data.sequences import SequenceData
from famerec.errors import ConfigError

BUNDLED = {
    "beauty": "Amazon Beauty",
    "sports": "Amazon Sports_and_Outdoors",
    "toys": "Amazon Toys_and_Games",
}


def bundled_names() -> list[str]:
    return list(BUNDLED)


def _resource(filename: str):
    return resources.files("famerec.data") / "bundled" / filename


def _check_name(name: str) -> None:
    if name not in BUNDLED:
        raise ConfigError(f"unknown dataset '{name}' (bundled: {', '.join(BUNDLED)})")


def load_bundled(name: str) -> SequenceData:
    _check_name(name)
    with resources.as_file(_resource(f"{name}.txt.gz")) as path:
        return read_sequence_file(path, name=name)


def raw_attributes(name: str) -> dict[str, list[int]]:
    """The bundled file as it is: {original item id: [attribute id, ...]}, in file order."""
    _check_name(name)
    with gzip.open(_resource(f"{name}_attributes.json.gz").open("rb")) as handle:
        return json.load(handle)


def load_attributes(name: str, data: SequenceData) -> dict[int, list[int]]:
    """Attribute ids (categories and brand) of each internal item id of `data`."""
    by_original = raw_attributes(name)
    internal = {int(original): index + 1 for index, original in enumerate(data.item_ids)}
    return {
        internal[int(item)]: list(attributes)
        for item, attributes in by_original.items()
        if int(item) in internal
    }
