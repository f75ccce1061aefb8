"""Ids in tables and in-memory data follow the rule of the data files (`famerec.data.ids`):
integers or text. A column of floats, structs or lists, or a mapping holding NaN, True or None
as an id, is refused in one line naming the column (or the user), and nothing is written."""

from __future__ import annotations

import polars as pl
import pytest

import famerec
from famerec.cli import main
from famerec.errors import FamerecError
from tests.test_cli import assert_one_line_error

OPTIONS = {"hidden": 16, "max_len": 10, "epochs": 1, "batch_size": 32, "threads": 1}
SEQUENCES = {user: [(user + i) % 7 + 1 for i in range(6)] for user in range(1, 30)}


def rows() -> dict[str, list]:
    table: dict[str, list] = {"user": [], "item": [], "timestamp": []}
    for user, items in SEQUENCES.items():
        table["user"] += [user] * len(items)
        table["item"] += items
        table["timestamp"] += list(range(len(items)))
    return table


def refused(tmp_path, data, *words, **options):
    out = tmp_path / "run"
    with pytest.raises(FamerecError) as caught:
        famerec.train(data=data, out=out, quiet=True, **{**OPTIONS, "kcore": 0, **options})
    message = str(caught.value)
    assert "\n" not in message and all(word in message for word in words), message
    assert not out.exists()  # nothing written


@pytest.mark.parametrize(
    "column, kind",
    [
        (pl.col("item").cast(pl.Float64), "floating-point numbers (Float64)"),  # ids "3.0"
        (pl.struct(pl.col("item")), "Struct({'item': Int64}) values"),  # ids "{3}"
        (pl.concat_list(pl.col("item")), "List(Int64) values"),
        (pl.col("item") > 3, "Boolean values"),
    ],
)
def test_a_polars_id_column_of_other_values_is_refused(tmp_path, column, kind):
    frame = pl.DataFrame(rows()).with_columns(column.alias("item"))
    refused(tmp_path, frame, "data: column 'item' holds", kind, "ids are integers or text")


def test_the_column_is_named_as_the_data_names_it(tmp_path):
    frame = pl.DataFrame(rows()).rename({"user": "who"}).with_columns(pl.col("who") / 2)
    refused(tmp_path, frame, "column 'who' holds floating-point numbers", user_col="who")


def test_pandas_floats_are_refused_also_integers_a_missing_value_made_floats(tmp_path):
    pd = pytest.importorskip("pandas")
    halves = pd.DataFrame(rows()).assign(item=lambda f: f.item + 0.5)
    refused(tmp_path, halves, "column 'item' holds floating-point numbers", "Int64")
    # integers that a missing value made floats: refused too (never ids "3.0", never a row
    # dropped unasked); the line says why and what to do
    upcast = pd.DataFrame(rows())
    upcast.loc[3, "item"] = float("nan")
    assert upcast["item"].dtype == "float64"
    refused(tmp_path, upcast, "column 'item' holds floating-point numbers", "drop those rows")
    # pandas' nullable integers train, the missing row left out as a file's empty id would be
    nullable = upcast.astype({"item": "Int64"})
    run = famerec.train(data=nullable, out=tmp_path / "upcast", quiet=True, kcore=0, **OPTIONS)
    assert run.recommender.item_ids == list(range(1, 8))


@pytest.mark.parametrize(
    "item, words",
    [
        (float("nan"), "data: user 2: item nan (float) is not an id"),
        (1.0, "data: user 2: item 1.0 (float) is not an id"),
        (True, "data: user 2: item True (true/false) is not an id"),
        (None, "data: user 2: item None (NoneType) is not an id"),
    ],
)
def test_a_mapping_with_an_item_that_is_no_id_is_one_line(tmp_path, item, words):
    """Before: NaN among integers was a multi-line error from the table library."""
    mapping = {user: list(items) for user, items in SEQUENCES.items()}
    mapping[2].insert(3, item)
    refused(tmp_path, mapping, words)


def test_a_mapping_with_a_user_that_is_no_id_is_one_line(tmp_path):
    mapping = {**SEQUENCES, 2.5: [1, 2, 3, 4]}
    refused(tmp_path, mapping, "data: user 2.5 (float) is not an id")


def test_a_parquet_file_of_float_ids_is_refused_naming_file_and_column(tmp_path, capsys):
    path = tmp_path / "events.parquet"
    pl.DataFrame(rows()).with_columns(pl.col("item").cast(pl.Float32)).write_parquet(path)
    out = tmp_path / "run"
    code = main(["-q", "train", "--data", str(path), "--format", "table", "--out", str(out)])
    assert_one_line_error(
        code, capsys.readouterr().err, str(path), "column 'item' holds floating-point numbers"
    )
    assert not out.exists()
