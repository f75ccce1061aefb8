import pytest

from famerec.data import bundled_names, load_attributes, load_bundled

# From the data README (measured on the source files).
EXPECTED = {
    "beauty": (22363, 12101, 198502, 8.876),
    "sports": (35598, 18357, 296337, 8.325),
    "toys": (19412, 11924, 167597, 8.634),
}


@pytest.mark.parametrize("name", bundled_names())
def test_bundled_statistics_match_the_source(name):
    stats = load_bundled(name).stats()
    assert (stats["users"], stats["items"], stats["actions"], stats["avg_length"]) == EXPECTED[name]


def test_bundled_ids_are_the_source_ids():
    data = load_bundled("toys")
    assert data.item_ids[:3].tolist() == [1, 2, 3]
    assert data.user_ids[:3].tolist() == [1, 2, 3]


def test_attributes_cover_the_items():
    data = load_bundled("beauty")
    attributes = load_attributes("beauty", data)
    assert len(attributes) == 12101
    assert sum(len(v) for v in attributes.values()) / len(attributes) == pytest.approx(3.72, 0.01)
