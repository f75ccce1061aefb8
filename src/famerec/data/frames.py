"""In-memory data of `famerec.train(data=...)`: a Polars frame of the three columns a run reads
(user, item and timestamp, under the names the run's data settings give them), made from a
Polars or pandas DataFrame or from a mapping user -> items (oldest first).

pandas frames are converted column by column, through numpy arrays or Python values, so that
no pyarrow is needed: Polars' own `from_pandas` needs it for text (pandas 3's default string
type included), categories and times with a time zone. Only the three columns are converted.
A column whose values mix types (text and integers, say) is refused with its name: its ids
could not be spelled one way.

The run reads the frame (`load_dataset(config, frame=...)`) before it writes it into its
directory as input.parquet (`write_input`).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from famerec.config import DataConfig
from famerec.data.ids import id_value_problem
from famerec.data.readers import _first_line, check_columns
from famerec.errors import FamerecError, printable
from famerec.runs.dir import atomic_write

if TYPE_CHECKING:
    import polars as pl

WHERE = "data"  # how errors name in-memory data
NUMPY_TIME_UNITS = ("ms", "us", "ns")  # the units Polars takes from numpy times ('D' for dates)
KINDS = (  # the kinds of value a column may hold, each converted as one Polars type
    ((bool, np.bool_), "true/false"),
    ((int, np.integer), "integer"),
    ((float, np.floating), "number"),
    ((str,), "text"),
    ((datetime.datetime,), "date-time"),
    ((datetime.date,), "date"),
)


def as_frame(data: Any, config: DataConfig) -> pl.DataFrame:
    """The columns `config` reads (user_col, item_col, time_col) of `data`, in Polars."""
    import polars as pl

    columns = list(dict.fromkeys((config.user_col, config.item_col, config.time_col)))
    if isinstance(data, Mapping):
        return mapping_frame(data, config)
    if isinstance(data, pl.DataFrame):
        check_columns(columns, data.columns, WHERE)
        return data.select(columns)
    if type(data).__module__.startswith("pandas") and hasattr(data, "columns"):
        return pandas_frame(data, columns)
    raise FamerecError(
        "data must be a file path, a Polars or pandas DataFrame, or a mapping user -> items; "
        f"got {type(data).__name__}"
    )


def mapping_frame(data: Mapping, config: DataConfig) -> pl.DataFrame:
    """One row per (user, item), timestamps 0, 1, ... in each user's order."""
    import polars as pl

    users: list = []
    items: list = []
    times: list[int] = []
    for user, sequence in data.items():
        if isinstance(sequence, str | bytes) or not isinstance(sequence, Sequence):
            raise FamerecError(
                f"user {printable(repr(user))}: items must be a list, not {type(sequence).__name__}"
            )
        problem = id_value_problem(user)  # ids follow the rule of the data files
        if problem:
            raise FamerecError(f"{WHERE}: user {problem}")
        problem = next(filter(None, map(id_value_problem, sequence)), None)
        if problem:
            raise FamerecError(f"{WHERE}: user {printable(repr(user))}: item {problem}")
        users += [user] * len(sequence)
        items += list(sequence)
        times += range(len(sequence))
    return pl.DataFrame(
        [
            python_column(config.user_col, users, "the user ids"),
            python_column(config.item_col, items, "the item ids"),
            pl.Series(config.time_col, times, dtype=pl.Int64),
        ]
    )


def pandas_frame(frame: Any, columns: list[str]) -> pl.DataFrame:
    """`columns` of a pandas DataFrame in Polars, without pyarrow. Id columns stay as
    they are: floats, even whole ones (pandas' integers with a missing value), are refused
    later with a line that says so (`famerec.data.ids`)."""
    import polars as pl

    available = list(frame.columns)
    check_columns(columns, available, WHERE)
    converted = []
    for name in columns:
        if available.count(name) > 1:
            raise FamerecError(f"{WHERE}: {available.count(name)} columns are named {name!r}")
        column = pandas_column(frame[name], name)
        converted.append(column)
    return pl.DataFrame(converted)


def pandas_column(series: Any, name: str) -> pl.Series:
    """One pandas column as a Polars series; missing values (None, NaN, NaT, pd.NA) are null."""
    import pandas as pd
    import polars as pl

    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):  # its categories, looked up by code (-1: missing)
        categories = pandas_column(pd.Series(dtype.categories), name)
        codes = pl.Series(series.cat.codes.to_numpy().astype(np.int64))
        return categories.gather(pl.select(pl.when(codes >= 0).then(codes)).to_series()).alias(name)
    if isinstance(dtype, pd.DatetimeTZDtype):  # the same instants, in UTC
        instants = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
        return pandas_column(pd.Series(instants), name).dt.replace_time_zone("UTC")
    if isinstance(dtype, np.dtype) and dtype.kind in "biufmM":  # plain numpy: taken as it is
        values = series.to_numpy()
        if dtype.kind in "mM" and np.datetime_data(dtype)[0] not in NUMPY_TIME_UNITS:
            values = values.astype(f"{'datetime64' if dtype.kind == 'M' else 'timedelta64'}[us]")
        return pl.Series(name, values, nan_to_null=True)
    values = series.to_numpy(dtype=object, na_value=None).tolist()  # text, objects, nullables
    return python_column(name, values, f"column {name!r}")


def python_column(name: str, values: Sequence, what: str) -> pl.Series:
    """Python values (None: missing) of one kind (KINDS; integers and numbers mix) as a Polars
    series; values of other kinds, or of two kinds, are refused naming `what`."""
    import polars as pl

    kinds: dict[str, Any] = {}  # kind -> one value of it
    for kind_type in set(map(type, values)) - {type(None)}:
        kind = next((k for types, k in KINDS if issubclass(kind_type, types)), None)
        example = next(v for v in values if type(v) is kind_type)
        if kind is None:
            raise FamerecError(
                f"{WHERE}: {what}: {kind_type.__name__} values ({_shown(example)}); ids and "
                "timestamps are text, numbers or dates"
            )
        kinds.setdefault(kind, example)
    if set(kinds) == {"integer", "number"}:
        kinds = {"number": kinds["number"]}
    if len(kinds) > 1:
        (first, a), (second, b) = sorted(kinds.items())[:2]
        raise FamerecError(
            f"{WHERE}: {what}: values of two types, {first} and {second} ({_shown(a)}, "
            f"{_shown(b)}); give them one type (all text, say)"
        )
    kind = next(iter(kinds), "text")
    try:
        if kind == "date-time":
            return _date_times(name, values, what)
        dtype = {
            "true/false": pl.Boolean,
            "integer": pl.Int64,
            "number": pl.Float64,
            "text": pl.String,
            "date": pl.Date,
        }[kind]
        plain = [None if v is None else _plain(v) for v in values] if kind != "text" else values
        column = pl.Series(name, plain, dtype=dtype)
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError) as error:
        raise FamerecError(f"{WHERE}: cannot read {what}: {_first_line(error)}") from None
    return column.fill_nan(None) if kind == "number" else column


def _date_times(name: str, values: Sequence, what: str) -> pl.Series:
    """Date-times all with a time zone (taken in UTC) or all without one."""
    import polars as pl

    zoned = {v.utcoffset() is not None for v in values if v is not None}
    if len(zoned) > 1:
        raise FamerecError(f"{WHERE}: {what}: date-times with and without a time zone")
    if zoned != {True}:
        return pl.Series(name, values, dtype=pl.Datetime("us"))
    utc = [
        None if v is None else v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        for v in values
    ]
    return pl.Series(name, utc, dtype=pl.Datetime("us")).dt.replace_time_zone("UTC")


def write_input(frame: pl.DataFrame, path: Path) -> None:
    """The frame as the run's input.parquet, atomically; one line if it cannot be written."""
    import polars as pl

    try:
        atomic_write(path, frame.write_parquet)
    except pl.exceptions.PolarsError as error:
        raise FamerecError(f"cannot write {path}: {_first_line(error)}") from None


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value Polars takes."""
    return value.item() if isinstance(value, np.generic) else value


def _shown(value: Any) -> str:
    return printable(repr(value), limit=40)
