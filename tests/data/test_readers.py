import gzip
import logging

import numpy as np
import polars as pl
import pytest

from famerec.data import kcore_filter, read_sequence_file, read_table
from famerec.data.sequences import SequenceData, drop_short_users, from_user_sequences
from famerec.errors import DataError


def sequences(data: SequenceData) -> dict:
    """{original user: [original items]} for readable assertions."""
    return {
        data.user_ids.tolist()[u]: data.item_ids[data.sequence(u) - 1].tolist()
        for u in range(data.num_users)
    }


# -- sequence format -------------------------------------------------------------------------


def test_sequence_file_keeps_order_and_maps_ids(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("7 30 10 20\n3 10 40 30 20\n")
    data = read_sequence_file(path)
    assert sequences(data) == {7: [30, 10, 20], 3: [10, 40, 30, 20]}
    assert data.item_ids.tolist() == [10, 20, 30, 40]  # internal ids 1..4 in id order
    assert data.items.min() == 1 and data.items.max() == 4


def test_sequence_file_gzip(tmp_path):
    path = tmp_path / "s.txt.gz"
    path.write_bytes(gzip.compress(b"1 1 2 3\n2 3 2 1\n"))
    assert read_sequence_file(path).num_actions == 6


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("1 2 3\n\n2 3 4\n", 2, "empty line"),
        ("1 2 3\n2 3 x4\n", 2, "'x4' is not an integer id"),
        ("1 2 3\n2 3.5 4\n", 2, "'3.5' is not an integer id"),
        ("1 2 3\n2 3 4\n1 5 6\n", 3, "already appeared on line 1"),
    ],
)
def test_sequence_file_errors_name_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(DataError) as error:
        read_sequence_file(path)
    assert str(error.value).startswith(f"{path}:{line}: ")
    assert words in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_sequence_file(tmp_path / "nope.txt")


# -- interaction tables ----------------------------------------------------------------------


def test_csv_with_header_orders_by_time_with_stable_ties(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(
        "userId,movieId,rating,timestamp\n"
        "u1,b,5,20\nu1,a,3,10\nu1,c,4,20\nu2,a,1,5\nu2,c,2,1\nu2,b,2,9\n"
    )
    data = read_table(path, user_col="userId", item_col="movieId", kcore=0)
    # u1: a (10), then b and c tie at 20 and keep file order
    assert sequences(data) == {"u1": ["a", "b", "c"], "u2": ["c", "a", "b"]}
    assert data.user_ids.tolist() == ["u1", "u2"]


def test_headerless_amazon_ratings_csv(tmp_path):
    path = tmp_path / "ratings_Beauty.csv"
    path.write_text(
        "A1,B9,5.0,1300\nA1,B8,4.0,1200\nA2,B9,1.0,1100\nA2,B7,2.0,1000\nA2,B8,2,1050\n"
    )
    data = read_table(path, header=False, columns=["user", "item", "rating", "timestamp"], kcore=0)
    assert sequences(data) == {"A1": ["B8", "B9"], "A2": ["B7", "B8", "B9"]}


def test_headerless_without_column_names_explains_the_fix(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("1,2,5,100\n")
    with pytest.raises(DataError, match="--columns"):
        read_table(path, header=False, kcore=0)


def test_tsv_and_parquet_and_integer_ids(tmp_path):
    frame = pl.DataFrame({"u": [1, 1, 1, 2, 2], "i": [5, 6, 7, 7, 5], "t": [1, 2, 3, 2, 1]})
    tsv = tmp_path / "r.tsv"
    frame.write_csv(tsv, separator="\t")
    parquet = tmp_path / "r.parquet"
    frame.write_parquet(parquet)
    for path in (tsv, parquet):
        data = read_table(path, user_col="u", item_col="i", time_col="t", kcore=0)
        assert sequences(data) == {1: [5, 6, 7], 2: [5, 7]}


def test_missing_column_lists_available_ones(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user,item,time\n1,2,3\n")
    with pytest.raises(DataError) as error:
        read_table(path)
    assert "no column 'timestamp'" in str(error.value)
    assert "columns are: user, item, time" in str(error.value)
    assert str(error.value).startswith(str(path))


def test_kcore_repeats_until_stable():
    # k=2. Pass 1 drops item z, then user b (left with x alone). That leaves x with one
    # event, so pass 2 drops x and then user a; u1 and u2 on {p, q} are the stable core.
    events = {"u1": "pq", "u2": "pq", "a": "px", "b": "xz"}
    frame = pl.DataFrame(
        {
            "user": [u for u, items in events.items() for _ in items],
            "item": [i for items in events.values() for i in items],
            "time": list(range(8)),
        }
    )
    once = frame.filter(pl.len().over("item") >= 2).filter(pl.len().over("user") >= 2)
    assert set(once["user"]) == {"u1", "u2", "a"}  # a single pass is not enough
    result = kcore_filter(frame, 2)
    assert set(result["user"]) == {"u1", "u2"}
    assert set(result["item"]) == {"p", "q"}


def test_kcore_keeps_dense_core(tmp_path):
    rows = ["user,item,timestamp"]
    for user in range(6):
        for item in range(5):
            rows.append(f"{user},{item},{user * 10 + item}")
    rows.append("99,0,1")  # a user with a single event
    rows.append("0,77,99")  # an item seen once
    path = tmp_path / "r.csv"
    path.write_text("\n".join(rows) + "\n")
    data = read_table(path, kcore=5)
    assert data.num_users == 6 and data.num_items == 5 and data.num_actions == 30


def test_nothing_left_after_kcore(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user,item,timestamp\n1,1,1\n1,2,2\n2,1,3\n")
    with pytest.raises(DataError, match="nothing left after 5-core"):
        read_table(path, kcore=5)


# -- short users -----------------------------------------------------------------------------


def test_short_users_dropped_with_a_count(caplog):
    data = from_user_sequences(
        "t",
        np.array([1, 2, 3]),
        [np.array([1, 2, 3]), np.array([2, 3]), np.array([4])],
        np.array([10, 20, 30, 40]),
    )
    with caplog.at_level(logging.WARNING, logger="famerec"):
        kept = drop_short_users(data)
    assert "dropped 2 of 3 users with fewer than 3 items" in caplog.text
    assert kept.num_users == 1
    assert kept.item_ids.tolist() == [10, 20, 30]  # item 40 no longer occurs


def test_all_users_short_is_an_error():
    data = from_user_sequences("t", np.array([1]), [np.array([1, 2])], np.array([5, 6]))
    with pytest.raises(DataError, match="no user with at least 3 items"):
        drop_short_users(data)


def test_save_and_load_round_trip_with_string_ids(tmp_path):
    data = from_user_sequences(
        "t",
        np.array(["u1", "u2"]),
        [np.array([1, 2, 3]), np.array([3, 2, 1])],
        np.array(["a", "bb", "ccc"], dtype=object),
    )
    data.save(tmp_path / "d.npz")
    loaded = SequenceData.load(tmp_path / "d.npz")
    assert loaded.user_ids.tolist() == ["u1", "u2"]
    assert loaded.item_ids.tolist() == ["a", "bb", "ccc"]
    assert np.array_equal(loaded.items, data.items) and loaded.name == "t"


# -- sequence ids: plain 64-bit integers only ------------------------------------------------


@pytest.mark.parametrize(
    "token, written",
    [("+4", 4), ("1_000", 1000), ("４", 4), ("007", 7), ("-0", 0)],
)
def test_sequence_file_refuses_integers_not_written_plainly(tmp_path, token, written):
    path = tmp_path / "s.txt"
    path.write_text(f"1 2 3 4\n2 5 {token} 6\n")
    with pytest.raises(DataError) as error:
        read_sequence_file(path)
    assert str(error.value) == (
        f"{path}:2: {token!r} is not a plain integer id (write {written}: ASCII digits without "
        "'+', '_' or leading zeros)"
    )


def test_sequence_file_refuses_ids_beyond_64_bits(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text(f"1 2 3 4\n2 5 {10**20} 6\n")
    with pytest.raises(DataError) as error:
        read_sequence_file(path)
    assert str(error.value) == f"{path}:2: integer id {10**20} does not fit in 64 bits"


def test_sequence_file_takes_negative_and_extreme_64_bit_ids(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text(f"-5 {2**63 - 1} 0 {-(2**63)}\n")
    data = read_sequence_file(path)
    assert data.user_ids.tolist() == [-5]
    assert sequences(data) == {-5: [2**63 - 1, 0, -(2**63)]}


# -- table timestamps ------------------------------------------------------------------------


def test_rows_without_timestamp_are_dropped_with_a_count(tmp_path, caplog):
    path = tmp_path / "r.csv"
    path.write_text(
        "user,item,timestamp\n"
        "u,a,3\nu,b,NaN\nu,c,1\nu,d,\nu,e, nan \nu,f,NA\nu,g,null\nu,h,2\n,i,5\n"
    )
    with caplog.at_level(logging.WARNING, logger="famerec"):
        data = read_table(path, kcore=0)
    assert sequences(data) == {"u": ["c", "h", "a"]}  # NaN is never sorted in as a time
    assert "skipped 5 rows without a timestamp (empty, NaN or null)" in caplog.text
    assert "skipped 1 rows with an empty user or item" in caplog.text


def test_parquet_nan_and_null_timestamps_are_dropped(tmp_path, caplog):
    frame = pl.DataFrame(
        {"user": [1] * 5, "item": [1, 2, 3, 4, 5], "timestamp": [3.0, None, float("nan"), 1.0, 2.0]}
    )
    frame.write_parquet(tmp_path / "r.parquet")
    with caplog.at_level(logging.WARNING, logger="famerec"):
        data = read_table(tmp_path / "r.parquet", kcore=0)
    assert sequences(data) == {1: [4, 5, 1]}
    assert "skipped 2 rows without a timestamp" in caplog.text


@pytest.mark.parametrize(
    "times",
    [
        # number of digits: text order would put "10" and "100" before "9"
        ["100", "9", "10"],
        ["1e2", "9", "10.5"],
        # months without a leading zero, and 'T' against ' ' between date and time
        ["2014-10-01", "2014-9-30", "2014-09-30 23:00"],
        ["2014-03-06", "2014-03-05T01:00:00", "2014-03-05 23:00"],
        # offsets are compared in UTC: 10:00+02:00 is 08:00Z
        ["2014-03-05T09:30:00Z", "2014-03-05T10:00:00+02:00", "2014-03-05T08:00:00.5Z"],
    ],
)
def test_timestamps_sort_as_numbers_or_dates_not_text(tmp_path, times):
    # expected order: the second, then the third, then the first row
    path = tmp_path / "r.csv"
    path.write_text("user,item,timestamp\n" + "".join(f"u,{i},{t}\n" for i, t in zip("abc", times)))
    assert sequences(read_table(path, kcore=0)) == {"u": ["b", "c", "a"]}


def test_parquet_datetime_timestamps(tmp_path):
    from datetime import date

    frame = pl.DataFrame(
        {
            "user": ["u"] * 3,
            "item": ["a", "b", "c"],
            "timestamp": [date(2014, 10, 1), date(2014, 9, 30), date(2014, 9, 30)],
        }
    )
    frame.write_parquet(tmp_path / "r.parquet")
    assert sequences(read_table(tmp_path / "r.parquet", kcore=0)) == {"u": ["b", "c", "a"]}


@pytest.mark.parametrize(
    "times, line, value",
    [
        (["3", "1", "yesterday"], 4, "yesterday"),
        (["3", "2014-03-05", "1"], 3, "2014-03-05"),
        (["3", "1_000", "1"], 3, "1_000"),
        (["3", "inf", "1"], 3, "inf"),
        (["2014-03-05", "2014-02-30", "2014-03-01"], 3, "2014-02-30"),
        (["2014-03-05", "17", "2014-03-01"], 3, "17"),
        (["2014-03-05", "05/03/2014", "2014-03-01"], 3, "05/03/2014"),
        (["05/03/2014", "2014-03-05", "2014-03-01"], 2, "05/03/2014"),
        (["soon", "2014-03-05", "1"], 2, "soon"),
        (["2014-03-05T10:00:00Z", "2014-03-05T10:00:00", "1"], 3, "2014-03-05T10:00:00"),
    ],
)
def test_unreadable_timestamp_names_file_line_and_value(tmp_path, times, line, value):
    path = tmp_path / "r.csv"
    path.write_text("user,item,timestamp\n" + "".join(f"u,{i},{t}\n" for i, t in zip("abc", times)))
    with pytest.raises(DataError) as error:
        read_table(path, kcore=0)
    assert str(error.value) == (
        f"{path}:{line}: cannot read timestamp {value!r}; timestamps must be all numbers or all "
        "ISO 8601 dates/times (2014-03-05, 2014-03-05T10:00:00)"
    )


def test_unreadable_timestamp_lines_count_headerless_and_blank_lines(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("u,a,1\n\nu,b,2\nu,c,x\n")
    with pytest.raises(DataError, match=r"r\.csv:4: cannot read timestamp 'x'"):
        read_table(path, header=False, columns=["user", "item", "timestamp"], kcore=0)


def test_unreadable_parquet_timestamp_names_the_row(tmp_path):
    frame = pl.DataFrame({"user": [1, 1, 1], "item": [1, 2, 3], "timestamp": ["1", "2", "x"]})
    frame.write_parquet(tmp_path / "r.parquet")
    with pytest.raises(DataError, match=r"r\.parquet: row 3: cannot read timestamp 'x'"):
        read_table(tmp_path / "r.parquet", kcore=0)
    frame.with_columns(pl.lit(True).alias("timestamp")).write_parquet(tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet: the timestamp column holds Boolean values"):
        read_table(tmp_path / "b.parquet", kcore=0)


# -- table ids -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids, expected",
    [
        (["7", "12", "-3"], [-3, 7, 12]),  # all plain integers: integer ids
        (["007", "7", "12"], ["007", "12", "7"]),  # two ids, each kept as written
        (["+7", "8", "9"], ["+7", "8", "9"]),
        (["1_000", "8", "9"], ["1_000", "8", "9"]),
        (["７", "8", "9"], ["8", "9", "７"]),
        (["-0", "8", "9"], ["-0", "8", "9"]),
        ([str(10**20), "8", "9"], ["100000000000000000000", "8", "9"]),  # beyond 64 bits
        ([" 7 ", "8", "9"], [7, 8, 9]),  # surrounding spaces are not part of an id
    ],
)
def test_table_ids_are_integers_only_when_all_are_plain(tmp_path, ids, expected):
    path = tmp_path / "r.csv"
    path.write_text("user,item,timestamp\n" + "".join(f"{i},{i},{t}\n" for t, i in enumerate(ids)))
    data = read_table(path, kcore=0)
    assert data.item_ids.tolist() == expected
    assert sorted(data.user_ids.tolist(), key=str) == sorted(expected, key=str)
    assert data.num_items == len(ids)
    kind = "i" if isinstance(expected[0], int) else "O"
    assert data.item_ids.dtype.kind == kind and data.user_ids.dtype.kind == kind


def test_parquet_integer_ids_stay_integers(tmp_path):
    frame = pl.DataFrame(
        {"user": [1, 1, 1], "item": [2**62, 7, 8], "timestamp": [1, 2, 3]},
        schema={"user": pl.UInt8, "item": pl.Int64, "timestamp": pl.Int32},
    )
    frame.write_parquet(tmp_path / "r.parquet")
    data = read_table(tmp_path / "r.parquet", kcore=0)
    assert sequences(data) == {1: [2**62, 7, 8]}
    assert data.item_ids.dtype == np.int64
