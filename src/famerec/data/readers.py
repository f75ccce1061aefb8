"""Readers for user data: sequence text files and interaction tables (CSV, TSV, Parquet)."""

from __future__ import annotations

import gzip
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from famerec.data.ids import (
    INT64_MAX,
    INT64_MIN,
    PLAIN_INTEGER,
    id_column_problem,
    integer_id,
)
from famerec.data.sequences import SequenceData, from_user_sequences
from famerec.errors import DataError, printable

if TYPE_CHECKING:  # polars is imported where it is used: reading the bundled data needs none
    import polars as pl

log = logging.getLogger("famerec")

PARQUET_SUFFIXES = (".parquet", ".pq")
TAB_SUFFIXES = (".tsv", ".tab")

# Timestamps that mean "no timestamp"; compared after stripping spaces and lower-casing.
MISSING_TIMES = ["", "nan", "na", "n/a", "null", "none"]
TIMES_EXPECTED = (
    "timestamps must be all numbers or all ISO 8601 dates/times (2014-03-05, 2014-03-05T10:00:00)"
)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8")
    return open(path, encoding="utf-8")


def _require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", str(path))
    if not path.is_file():
        raise DataError("not a regular file", str(path))
    return path


def read_sequence_file(path: str | Path, name: str | None = None, kcore: int = 0) -> SequenceData:
    """Read lines `user item item ...` (plain 64-bit integer ids, items oldest first).

    Item ids are renumbered 1..n in increasing order of the original ids, so files whose ids
    already run 1..n (the bundled data) keep them.
    """
    path = _require_file(path)
    user_ids: list[int] = []
    sequences: list[np.ndarray] = []
    first_line_of_user: dict[int, int] = {}
    try:
        with _open_text(path) as lines:
            for number, line in enumerate(lines, start=1):
                tokens = line.split()
                if not tokens:
                    raise DataError("empty line (expected `user item item ...`)", str(path), number)
                ids = _integer_ids(tokens, str(path), number)
                user = ids[0]
                if user in first_line_of_user:
                    raise DataError(
                        f"user {user} already appeared on line {first_line_of_user[user]}",
                        str(path),
                        number,
                    )
                first_line_of_user[user] = number
                user_ids.append(user)
                sequences.append(np.asarray(ids[1:], dtype=np.int64))
    except UnicodeDecodeError as error:
        raise DataError(f"not a UTF-8 text file ({error.reason})", str(path)) from None
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read: {error}", str(path)) from None
    if not sequences:
        raise DataError("no sequences in file", str(path))
    name = name or path.name.split(".")[0]
    flat = np.concatenate(sequences)
    item_ids, inverse = np.unique(flat, return_inverse=True)
    internal = inverse.astype(np.int64) + 1
    bounds = np.cumsum([len(s) for s in sequences])[:-1]
    data = from_user_sequences(name, np.asarray(user_ids), np.split(internal, bounds), item_ids)
    return kcore_sequences(data, kcore, str(path)) if kcore > 0 else data


def kcore_sequences(data: SequenceData, k: int, where: str | None = None) -> SequenceData:
    """Apply iterative k-core filtering to sequences, keeping each user's item order."""
    import polars as pl

    frame = pl.DataFrame(
        {
            "user": np.repeat(data.user_ids, data.lengths),
            "item": data.item_ids[data.items - 1],
            "time": np.arange(data.num_actions),
        }
    )
    return _sequences_from_frame(data.name, frame, k, where or data.name)


def _integer_ids(tokens: list[str], path: str, line: int) -> list[int]:
    """The tokens as integers; anything but a plain 64-bit integer (the id rule of
    `famerec.data.ids`) is refused with file:line."""
    try:  # a whole line at once first (reading is faster so), as `integer_id` reads each
        ids = [int(token) for token in tokens]
    except ValueError:
        ids = []
    if ids and list(map(str, ids)) == tokens and min(ids) >= INT64_MIN and max(ids) <= INT64_MAX:
        return ids
    try:
        return [integer_id(token) for token in tokens]  # names the first token it refuses
    except ValueError as error:
        raise DataError(str(error), path, line) from None


def read_table(
    path: str | Path,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str = "timestamp",
    sep: str | None = None,
    header: bool = True,
    columns: list[str] | None = None,
    kcore: int = 5,
    name: str | None = None,
) -> SequenceData:
    """Read an interaction table (one row per user-item event) into sequences.

    Drops rows without a user, item or timestamp (with a warning), applies iterative k-core
    filtering, orders each user's items by time (numbers or dates; ties keep file order) and
    renumbers users and items in increasing order of their original ids (integers when every
    id is a plain integer, else strings as written).
    """
    path = _require_file(path)
    return read_frame(
        _scan_table(path, sep, header, columns),
        str(path),
        user_col=user_col,
        item_col=item_col,
        time_col=time_col,
        kcore=kcore,
        name=name or path.name.split(".")[0],
        first_line=None if path.suffix.lower() in PARQUET_SUFFIXES else (2 if header else 1),
        hint="" if header or columns else "; name the columns of a headerless table with --columns",
    )


def read_frame(
    frame: pl.LazyFrame | pl.DataFrame,
    where: str,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str = "timestamp",
    kcore: int = 5,
    name: str = "data",
    first_line: int | None = None,
    hint: str = "",
) -> SequenceData:
    """`read_table` for a table already in Polars (in-memory data): `where` names it in errors,
    `first_line` is the file line of its first row (None: errors name rows), `hint` ends the
    error about a missing column."""
    import polars as pl

    frame = frame.lazy()
    try:
        schema = frame.collect_schema()
    except pl.exceptions.PolarsError as error:
        raise DataError(f"cannot read table: {_first_line(error)}", where) from None
    check_columns((user_col, item_col, time_col), schema.names(), where, hint)
    for column in dict.fromkeys((user_col, item_col)):
        problem = id_column_problem(schema[column])  # never cast into ids ("3.0", "{10}")
        if problem:
            raise DataError(f"column {printable(repr(column))} {problem}", where)
    selected = frame.select(
        pl.col(user_col).alias("user"),
        pl.col(item_col).alias("item"),
        pl.col(time_col).alias("time"),
    ).with_row_index("row")
    try:
        table = selected.collect(engine="streaming")
    except pl.exceptions.PolarsError as error:
        raise DataError(f"cannot read table: {_first_line(error)}", where) from None
    if table.height == 0:
        raise DataError("the table has no rows", where)
    try:
        complete = _complete_rows(table)
        if complete.height == 0:
            raise DataError("no row has a user, an item and a timestamp", where)
        complete = complete.with_columns(
            _typed_ids(complete["user"]),
            _typed_ids(complete["item"]),
            _parsed_times(complete, where, first_line),
        )
    except pl.exceptions.PolarsError as error:
        raise DataError(f"cannot read table: {_first_line(error)}", where) from None
    return _sequences_from_frame(name, complete, kcore, where)


def check_columns(
    wanted: Sequence[str], available: Sequence[str], where: str, hint: str = ""
) -> None:
    """Refuse a table that lacks a column of `wanted`, naming the missing and the present."""
    missing = [c for c in wanted if c not in available]
    if missing:
        raise DataError(
            f"no column {printable(', '.join(map(repr, missing)))} "
            f"(columns are: {printable(', '.join(map(str, available)))}){hint}",
            where,
        )


def _complete_rows(table: pl.DataFrame) -> pl.DataFrame:
    """Rows with a user, an item and a timestamp; the others are dropped with a counted warning.

    Ids are text with surrounding spaces removed (empty means missing); a timestamp is missing
    when empty, null, NaN or one of MISSING_TIMES, so it is never sorted in as a value.
    """
    import polars as pl

    time = pl.col("time")
    if table.schema["time"] == pl.String:
        text = time.str.strip_chars()
        time = pl.when(~text.str.to_lowercase().is_in(MISSING_TIMES)).then(text)
    elif table.schema["time"].is_float():
        time = pl.when(~time.is_nan()).then(time)
    table = table.with_columns(_text_or_null("user"), _text_or_null("item"), time.alias("time"))
    with_ids = table.filter(pl.col("user").is_not_null() & pl.col("item").is_not_null())
    if with_ids.height < table.height:
        log.warning("skipped %d rows with an empty user or item", table.height - with_ids.height)
    complete = with_ids.filter(pl.col("time").is_not_null())
    if complete.height < with_ids.height:
        log.warning(
            "skipped %d rows without a timestamp (empty, NaN or null)",
            with_ids.height - complete.height,
        )
    return complete


def _text_or_null(column: str) -> pl.Expr:
    import polars as pl

    text = pl.col(column).cast(pl.String).str.strip_chars()
    return pl.when(text != "").then(text).alias(column)


def _typed_ids(ids: pl.Series) -> pl.Series:
    """Integers when every id is a plain 64-bit integer (see PLAIN_INTEGER), else the text as
    written, so "007" and "7" stay two ids and answers use the spelling of the data."""
    import polars as pl

    as_int = ids.cast(pl.Int64, strict=False)
    if (ids.str.contains(PLAIN_INTEGER) & as_int.is_not_null()).all():
        return as_int
    return ids


def _parsed_times(frame: pl.DataFrame, path: str, first_line: int | None) -> pl.Series:
    """Timestamps as numbers or datetimes, so that they sort by time and not as text.

    Text is read as numbers when the first timestamp is one, else as ISO 8601 dates/times; the
    first value that does not fit is refused, naming its line (CSV) or row (Parquet).
    """
    import polars as pl

    time = frame["time"]
    if time.dtype.is_float():
        bad = time.is_infinite()
    elif time.dtype.is_numeric() or time.dtype.is_temporal():
        return time
    elif time.dtype != pl.String:
        raise DataError(f"the timestamp column holds {time.dtype} values; {TIMES_EXPECTED}", path)
    else:
        as_int = time.cast(pl.Int64, strict=False)
        if as_int.null_count() == 0:
            return as_int
        as_float = time.cast(pl.Float64, strict=False)
        if as_float[0] is not None:
            time, bad = as_float, as_float.is_null() | as_float.is_infinite()
        else:
            try:
                parsed = time.str.to_datetime(strict=False, time_unit="us")
            except pl.exceptions.PolarsError:  # no date format fits the first value
                parsed = pl.Series("time", [None] * len(time), dtype=pl.Datetime("us"))
            bad = parsed.is_null() | ~time.str.contains(r"^\d{4}-\d{1,2}-\d{1,2}")
            time = parsed
    if bad.any():
        index = int(bad.arg_true()[0])
        row, value = int(frame["row"][index]), frame["time"][index]
        message = f"cannot read timestamp {printable(repr(value))}; {TIMES_EXPECTED}"
        if first_line is None:
            raise DataError(f"row {row + 1}: {message}", path)
        raise DataError(message, path, row + first_line)
    return time.alias("time")


def _scan_table(
    path: Path, sep: str | None, header: bool, columns: list[str] | None
) -> pl.LazyFrame:
    import polars as pl

    if path.suffix.lower() in PARQUET_SUFFIXES:
        return pl.scan_parquet(path)
    if sep is None:
        sep = "\t" if path.suffix.lower() in TAB_SUFFIXES else ","
    sep = "\t" if sep == "\\t" else sep
    return pl.scan_csv(
        path,
        separator=sep,
        has_header=header,
        new_columns=columns,
        infer_schema=False,  # all text: ids keep their spelling, times are parsed on purpose
        raise_if_empty=False,
    )


def _first_line(error: Exception) -> str:
    """The first line of a reader's error, which may quote the file: printable and short."""
    text = str(error).strip()
    return printable(text.splitlines()[0]) if text else type(error).__name__


def kcore_filter(frame: pl.DataFrame, k: int) -> pl.DataFrame:
    """Keep only users and items with at least k events, repeating until nothing changes."""
    import polars as pl

    if k <= 0:
        return frame
    while True:
        before = frame.height
        frame = frame.filter(pl.len().over("item") >= k)
        frame = frame.filter(pl.len().over("user") >= k)
        if frame.height == before:
            return frame


def _sequences_from_frame(name: str, frame: pl.DataFrame, kcore: int, where: str) -> SequenceData:
    """Columns user, item, time (+ optional row) -> SequenceData with dense internal ids."""
    import polars as pl

    total = frame.height
    frame = kcore_filter(frame, kcore)
    if frame.height == 0:
        raise DataError(f"nothing left after {kcore}-core filtering of {total} events", where)
    if frame.height < total:
        log.info("%d-core filtering kept %d of %d events", kcore, frame.height, total)
    order = ["user_index", "time"] + (["row"] if "row" in frame.columns else [])
    frame = frame.with_columns(
        (pl.col("user").rank("dense") - 1).cast(pl.Int64).alias("user_index"),
        pl.col("item").rank("dense").cast(pl.Int64).alias("item_index"),
    ).sort(order, maintain_order=True)
    users = frame.group_by("user_index", maintain_order=True).agg(
        pl.col("user").first(), pl.len().alias("length")
    )
    items = frame.select("item", "item_index").unique("item_index").sort("item_index")
    offsets = np.zeros(users.height + 1, dtype=np.int64)
    np.cumsum(users["length"].to_numpy(), out=offsets[1:])
    return SequenceData(
        name=name,
        items=frame["item_index"].to_numpy().astype(np.int64),
        offsets=offsets,
        user_ids=users["user"].to_numpy(),
        item_ids=items["item"].to_numpy(),
    )
