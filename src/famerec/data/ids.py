"""The id rule of the data, for files and queries alike.

An integer id is written the way Python writes the integer: ASCII digits, no leading zeros,
no '+' or '_', '-' only before a nonzero number; and it fits in 64 bits. So "007", "+7",
"7" and "７" can never be silently merged into one id. Data files whose ids all follow it have
integer ids (any other spelling makes them text, kept as written, or is refused where ids must
be integers); a query of such data (recommend, explain, the service) names an id by the
integer or by its plain spelling, and by nothing else that would become the same integer
(True, 1.0, "001", "+1").
"""

from __future__ import annotations

import numbers

from famerec.errors import printable

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
        raise ValueError(f"integer id {shown} does not fit in 64 bits")
    return value


def query_id(value: object, integers: bool) -> int | str | None:
    """An id given in a query (an item or a user) as data keyed by integers (`integers`) or by
    text keys it: None for text that spells no integer, which integer data cannot hold
    (unknown, as an id the data does not have); ValueError for anything the data files would
    not have read as that id: a bool, a float, another type, an integer spelled otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral | str):
        kind = "true/false" if isinstance(value, bool) else type(value).__name__
        raise ValueError(
            f"{printable(repr(value), limit=60)} ({kind}) is not an id: ids are integers or text"
        )
    if not integers:
        return value if isinstance(value, str) else str(int(value))
    if isinstance(value, str):
        try:
            int(value)
        except ValueError:
            return None
        return integer_id(value)
    return integer_id(str(int(value)))
