"""The id rule of the data, for files and queries alike.

An integer id is written the way Python writes the integer: ASCII digits, no leading zeros,
no '+' or '_', '-' only before a nonzero number; and it fits in 64 bits. So "007", "+7",
"7" and "７" can never be silently merged into one id. Data files whose ids all follow it have
integer ids (any other spelling makes them text, kept as written, or is refused where ids must
be integers); a query of such data (recommend, explain, the service) names an id by the
integer or by its plain spelling, and by nothing else that would become the same integer
(True, 1.0, "001", "+1"). Tables and in-memory data hold ids as integers or text: a column of
floats, structs or lists (`id_column_problem`), or a Python value of another type in a mapping
user -> items (`id_value_problem`), is refused rather than cast into ids such as "3.0".
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

from famerec.errors import printable

if TYPE_CHECKING:
    import polars as pl

PLAIN_INTEGER = r"^(0|-?[1-9][0-9]*)$"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def integer_id(token: str) -> int:
    """`token` (text) as an integer id; ValueError, with the reason, for anything the rule
    refuses: no integer, an integer spelled otherwise, or one beyond 64 bits."""
    shown = printable(repr(token), limit=60)
    try:
        value = int(token)
    except ValueError:
        raise ValueError(f"{shown} is not an integer id") from None
    if str(value) != token:  # int() also takes "007", "+7", "1_000", " 7" and "７"
        raise ValueError(
            f"{shown} is not a plain integer id (write {printable(value, limit=60)}: "
            "ASCII digits without '+', '_' or leading zeros)"
        )
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"integer id {printable(token, limit=60)} does not fit in 64 bits")
    return value


def query_id(value: object, integers: bool) -> int | str | None:
    """An id given in a query (an item or a user) as data keyed by integers (`integers`) or by
    text keys it: None for text that spells no integer, which integer data cannot hold
    (unknown, as an id the data does not have); ValueError for anything the data files would
    not have read as that id: a bool, a float, another type, an integer spelled otherwise."""
    problem = id_value_problem(value)
    if problem:
        raise ValueError(problem)
    if not integers:
        return value if isinstance(value, str) else str(int(value))
    if isinstance(value, str):
        try:
            int(value)
        except ValueError:
            return None
        return integer_id(value)
    return integer_id(str(int(value)))


def id_column_problem(dtype: pl.DataType) -> str | None:
    """Why a table column of `dtype` cannot hold ids, or None: ids are integers or text, so
    floats ("3.0"), nested values ("{10}", "[10]") and the like are never cast into ids."""
    import polars as pl

    if dtype.is_integer() or dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum):
        return None
    if dtype == pl.Null:  # no value at all: every row is dropped as one without an id
        return None
    if dtype.is_float() or dtype.is_decimal():
        return (
            f"holds floating-point numbers ({dtype}), which are no ids: ids are integers or "
            "text (pandas stores an integer column as floats when a value is missing: drop "
            "those rows first, or give the column pandas' Int64 type)"
        )
    return f"holds {printable(dtype, limit=60)} values, which are no ids: ids are integers or text"


def id_value_problem(value: object) -> str | None:
    """Why a Python value given as an id (a key or an item of a mapping user -> items) is none,
    or None: integers (no bools) and text are ids, as in the data files."""
    if isinstance(value, str) or (
        isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ):
        return None
    kind = "true/false" if isinstance(value, bool) else type(value).__name__
    return f"{printable(repr(value), limit=60)} ({kind}) is not an id: ids are integers or text"
