"""Split a bundled dataset's item attributes into two kinds, brand and category.

The bundled `<Name>_item2attributes.json` files (S3-Rec's preprocessing) mix an item's brand
and categories in one list without saying which is which. Their order tells: an attribute
that only ever comes first in a list, never later, is taken as a brand (at most one per item);
every other attribute as a category. Measured on the three files (this script prints it):
Beauty 7,492 of 12,101 items have a brand (435 brands, 202 categories), Toys 11,923 of 11,924
(658, 369), Sports 18,210 of 18,357 (1,154, 1,123); on Toys and Sports one brand id covers
2,375 and 7,263 items, presumably the empty brand. The
inference is ours, not the data's documentation; FAME's attribute options take the two files
as two kinds (`--attributes brand.json,category.json`), and `famerec explain --facets
--attributes F` measures concentration on one kind.

    python tools/attribute_kinds.py beauty --out /tmp/kinds   # brand.json, category.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from famerec.data.bundled import BUNDLED, raw_attributes


def split_kinds(attributes: dict[str, list[int]]) -> tuple[dict, dict, dict]:
    """(brand, category, counts): two {item_id: [attribute, ...]} maps and what was found."""
    later = Counter(a for values in attributes.values() for a in values[1:])
    brand, category = {}, {}
    for item, values in attributes.items():
        first = values[:1] if values and later[values[0]] == 0 else []
        brand[item] = first
        category[item] = [a for a in values if a not in first]
    counts = {
        "items": len(attributes),
        "items with a brand": sum(bool(v) for v in brand.values()),
        "brands": len({a for v in brand.values() for a in v}),
        "categories": len({a for v in category.values() for a in v}),
        "categories that also come first": len(
            {v[0] for v in attributes.values() if v and later[v[0]] > 0}
        ),
    }
    return brand, category, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(BUNDLED))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    attributes = raw_attributes(args.dataset)
    brand, category, counts = split_kinds(attributes)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, kind in (("brand", brand), ("category", category)):
        kept = {item: values for item, values in kind.items() if values}
        (args.out / f"{name}.json").write_text(json.dumps(kept))
    print(f"{args.dataset}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    print(f"wrote {args.out / 'brand.json'} and {args.out / 'category.json'}")


if __name__ == "__main__":
    main()
