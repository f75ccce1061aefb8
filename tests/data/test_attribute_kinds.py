"""tools/attribute_kinds.py: brand = an attribute that only ever comes first."""

from famerec.data.bundled import raw_attributes
from tools.attribute_kinds import split_kinds


def test_an_attribute_seen_only_first_is_a_brand():
    attributes = {"1": [7, 1, 2], "2": [8, 1], "3": [1, 3], "4": [2]}
    brand, category, counts = split_kinds(attributes)
    assert brand == {"1": [7], "2": [8], "3": [], "4": []}  # 1 and 2 also come later
    assert category == {"1": [1, 2], "2": [1], "3": [1, 3], "4": [2]}
    assert counts["brands"] == 2 and counts["categories"] == 3
    assert counts["categories that also come first"] == 2  # 1 and 2


def test_bundled_beauty_splits_into_disjoint_kinds():
    attributes = raw_attributes("beauty")
    brand, category, counts = split_kinds(attributes)
    brands = {a for v in brand.values() for a in v}
    assert brands.isdisjoint({a for v in category.values() for a in v})
    assert counts["items with a brand"] == 7492 and counts["items"] == 12101
