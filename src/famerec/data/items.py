"""Item metadata: an item table (`--items FILE`) of names and attribute columns.

`famerec train --items items.csv --item-name-col title --attribute-cols genre,brand` reads the
table (CSV, TSV or Parquet) once, checks it, and keeps what the run needs in the run directory's
`items.json`: each item's name and, per attribute column, the column's values and each item's
value numbers. So a run shows names wherever it is moved, without the table.

The attribute columns also feed `--item-attributes items` (every column as one kind) and FAME's
`--attributes items` (one kind per column, in `--attribute-cols` order) or `items:COLUMN`: the
run writes the JSON files those options read (`{"item_id": [attribute_id, ...]}`) into its
own copies (`famerec.runs.dir.input_copy`), as it copies a hand-made file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from famerec.config import DataConfig, file_settings
from famerec.data.sequences import SequenceData
from famerec.errors import ConfigError, DataError, printable

if TYPE_CHECKING:
    from collections.abc import Callable

    from famerec.runconfig import RunConfig
    from famerec.runs.dir import RunDir

ITEM_TABLE = "items"  # an attribute source: the run's item table (items:COLUMN for one column)
ITEMS_FILE = "items.json"  # in a run directory
DEFAULT_NAME_COLUMN = "name"
FORMAT_VERSION = 1


def is_table_source(part: str) -> bool:
    return part == ITEM_TABLE or part.startswith(ITEM_TABLE + ":")


def attribute_columns(config: DataConfig) -> list[str]:
    if not config.attribute_cols:
        return []
    return [c.strip() for c in config.attribute_cols.split(",") if c.strip()]


@dataclass
class ItemTable:
    """What a run keeps of its item table, keyed by the item ids as text (`str(id)`)."""

    names: dict[str, str]
    attributes: dict[str, dict[str, list[str]]]  # column -> item -> values (in table order)
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        kinds = {}
        for column, by_item in self.attributes.items():
            values = list(dict.fromkeys(v for vs in by_item.values() for v in vs))
            number = {v: i for i, v in enumerate(values)}
            kinds[column] = {
                "values": values,
                "items": {item: [number[v] for v in vs] for item, vs in by_item.items()},
            }
        return {
            "version": FORMAT_VERSION,
            "source": self.source,
            "names": self.names,
            "attributes": kinds,
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> ItemTable:
        attributes = {
            column: {
                item: [kind["values"][i] for i in numbers]
                for item, numbers in kind["items"].items()
            }
            for column, kind in payload.get("attributes", {}).items()
        }
        return cls(dict(payload.get("names", {})), attributes, payload.get("source", ""))

    def attribute_ids(self, columns: list[str]) -> dict[str, list[int]]:
        """`{"item_id": [attribute_id, ...]}` of `columns` as one kind, ids 1.. by first
        appearance (items in the table's order, columns in the given order); the same text in
        two columns is two attributes."""
        ids: dict[tuple[str, str], int] = {}
        result: dict[str, list[int]] = {}
        items = list(dict.fromkeys(i for c in columns for i in self.attributes[c]))
        for item in items:
            values = []
            for column in columns:
                for value in self.attributes[column].get(item, []):
                    values.append(ids.setdefault((column, value), len(ids) + 1))
            if values:
                result[item] = values
        return result


def read_item_table(
    config: DataConfig, data: SequenceData, run_dir: str | Path | None = None
) -> ItemTable | None:
    """The item table `config` names (None without --items), for the items of `data`; what
    `run_dir` keeps of it where it has started with one (the table may be gone since)."""
    if not config.items:
        return None
    if run_dir is not None and (Path(run_dir) / ITEMS_FILE).is_file():
        return load_item_table(run_dir)
    import polars as pl

    from famerec.data.readers import _first_line, _require_file, _scan_table

    path = _require_file(config.items)
    where = str(path)
    try:
        frame = _scan_table(path, sep=None, header=True, columns=None).collect()
    except (pl.exceptions.PolarsError, OSError) as error:
        raise DataError(f"cannot read the item table: {_first_line(error)}", where) from None
    columns = frame.columns
    name_column = config.item_name_col
    if name_column is None and DEFAULT_NAME_COLUMN in columns:
        name_column = DEFAULT_NAME_COLUMN
    wanted = [config.item_id_col] + ([name_column] if name_column else [])
    wanted += attribute_columns(config)
    missing = [c for c in wanted if c not in columns]
    if missing:
        flags = {config.item_id_col: "--item-id-col", name_column: "--item-name-col"}
        named = ", ".join(f"{c!r} ({flags.get(c, '--attribute-cols')})" for c in missing)
        raise DataError(
            f"no column {printable(named)} in the item table (columns are: "
            f"{printable(', '.join(columns))})",
            where,
        )
    frame = frame.select([pl.col(c).cast(pl.String).alias(c) for c in dict.fromkeys(wanted)])
    ids = frame[config.item_id_col].str.strip_chars()
    known = {str(_plain(i)) for i in data.item_ids.tolist()}
    keep = ids.is_in(list(known))
    if not keep.any():
        shown = ", ".join(repr(i) for i in ids.drop_nulls().head(3).to_list())
        raise DataError(
            f"no id of column {printable(repr(config.item_id_col))} is an item of the data "
            f"(first ids: {printable(shown)}; ids must be spelled as in the data)",
            where,
        )
    frame = frame.with_columns(ids.alias(config.item_id_col)).filter(keep)
    first_line = 1 if path.suffix.lower() in (".parquet", ".pq") else 2  # Parquet: row numbers
    rows = keep.arg_true().to_list()
    names: dict[str, str] = {}
    attributes: dict[str, dict[str, list[str]]] = {c: {} for c in attribute_columns(config)}
    named_at: dict[str, int] = {}
    sep = config.attribute_sep
    for position, record in enumerate(frame.iter_rows(named=True)):
        item = record[config.item_id_col]
        line = rows[position] + first_line
        if name_column:
            name = (record[name_column] or "").strip()
            if name:
                if item in names and names[item] != name:
                    earlier = named_at[item]
                    raise DataError(
                        f"item {printable(repr(item))} has two names: "
                        f"{printable(repr(names[item]), 80)} (line {earlier}) and "
                        f"{printable(repr(name), 80)}",
                        where,
                        line,
                    )
                names[item] = name
                named_at[item] = line
        for column in attributes:
            values = [v.strip() for v in (record[column] or "").split(sep) if v.strip()]
            merged = attributes[column].setdefault(item, [])
            merged.extend(v for v in values if v not in merged)
    for column in attributes:
        attributes[column] = {i: vs for i, vs in attributes[column].items() if vs}
    return ItemTable(names, attributes, source=path.name)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def expand_table_sources(config: RunConfig) -> RunConfig:
    """`--attributes items` -> `items:COL1,items:COL2,...` (one kind per --attribute-cols
    column), and a check that every table source has an --items table with that column."""
    columns = attribute_columns(config.data)
    overrides = {}
    for key, parts in file_settings(config).items():
        if not any(is_table_source(p) for p in parts):
            continue
        if not config.data.items or not columns:
            raise ConfigError(
                f"--{key.split('.', 1)[1].replace('_', '-')} {ITEM_TABLE}: needs an item table "
                "with attribute columns (--items FILE --attribute-cols COL1,COL2)"
            )
        expanded = []
        for part in parts:
            if part == ITEM_TABLE and key != "model.item_attributes":
                expanded += [f"{ITEM_TABLE}:{c}" for c in columns]
                continue
            if part.startswith(ITEM_TABLE + ":") and part.split(":", 1)[1] not in columns:
                raise ConfigError(
                    f"{part}: {part.split(':', 1)[1]!r} is not one of --attribute-cols "
                    f"({', '.join(columns)})"
                )
            expanded.append(part)
        if expanded != parts:
            overrides[key] = ",".join(expanded)
    return config.with_overrides(overrides).validate() if overrides else config


def keep_item_table(
    table: ItemTable | None,
    config: RunConfig,
    run_dir: RunDir,
    copy_of: Callable[[str, int], Path],
) -> None:
    """Write `items.json`, and the attribute files of table sources where the run keeps its
    copies of files (`copy_of(key, part)`), into the run directory where missing (a resumed
    run keeps what it started with)."""
    from famerec.runs.dir import atomic_write

    if table is None:
        return
    target = run_dir / ITEMS_FILE
    if not target.is_file():
        atomic_write(target, _json_bytes(table.to_json()))
    for key, parts in file_settings(config).items():
        for i, part in enumerate(parts):
            if not is_table_source(part):
                continue
            copy = copy_of(key, i)
            if copy.is_file():
                continue
            own = part.split(":", 1)[1:]
            columns = own or attribute_columns(config.data)
            copy.parent.mkdir(exist_ok=True)
            atomic_write(copy, _json_bytes(table.attribute_ids(columns)))


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")


def load_item_table(run_dir: str | Path) -> ItemTable | None:
    """The item table a run keeps (None for runs without one, older runs included)."""
    path = Path(run_dir) / ITEMS_FILE
    if not path.is_file():
        return None
    try:
        return ItemTable.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        raise DataError(f"cannot read the run's item table: {error}", str(path)) from None
