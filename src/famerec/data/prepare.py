"""Raw public datasets into files famerec reads: `famerec data prepare movielens|amazon`.

Each source becomes a folder with
* `interactions.csv`: `user,item,timestamp`, one row per action, each user's rows together and
  oldest first (ties in file order); `famerec train --data DIR/interactions.csv --format table`;
* `items.csv`: `item,name,<attribute columns>`, multi-valued columns joined with `|`;
  `famerec train ... --items DIR/items.csv --attribute-cols genre`;
* `attributes/<column>.json`: `{"item_id": [attribute_id, ...]}` per attribute column (FAME's
  `--attributes`, `--item-attributes`), and `attributes/all.json` with every column as one kind;
* `prepare.json`: the source, the files read, the preprocessing and the counts.

The preprocessing is the literature's (docs/data.md, "Preparing public datasets"): every rating
or review is one action; iterative k-core on users and items (5 by default, repeated until
every user and item has k actions); each user's items by time, ties in file order. For Amazon
this is S3-Rec's (Zhou et al., CIKM 2020; `data/data_process.py` of aHuiWang/CIKM2020-S3Rec):
5-core of the reviews file, brand and the categories below each list's top-level one as
attributes. Meta files of 2014 hold Python dict literals, read with `ast.literal_eval` (never
`eval`). Nothing is downloaded: the user gives the files.
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from famerec.data.readers import _first_line as _short
from famerec.data.readers import _require_file, kcore_filter
from famerec.errors import DataError, FamerecError, printable

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger("famerec")

KCORE = 5
VALUE_SEP = "|"  # joins the values of a multi-valued column of items.csv
INTERACTIONS = "interactions.csv"
ITEMS = "items.csv"
ATTRIBUTES = "attributes"
SUMMARY = "prepare.json"
ALL_KINDS = "all"

# MovieLens 100K's u.item: 19 genre flags after id, title, release date, video release date and
# IMDb URL, in the order of u.genre. "unknown" means no genre and is left out.
ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
NO_GENRE = {"unknown", "(no genres listed)"}

MOVIELENS_PREPROCESSING = (
    "every rating is one action (ratings are not thresholded); iterative {k}-core on users and "
    "items; each user's movies by timestamp, ties in file order; genres as attributes, titles "
    "as names"
)
AMAZON_PREPROCESSING = (
    "S3-Rec's: every review is one action (no rating threshold, repeated reviews kept); "
    "iterative {k}-core on users and items; each user's items by review time, ties in file "
    "order; brand and the categories below each category list's top-level one as attributes, "
    "titles as names"
)


@dataclass
class Prepared:
    """A prepared dataset: ordered interactions and one row per kept item."""

    source: str  # e.g. "movielens-1m", "amazon-2014"
    interactions: pl.DataFrame  # user, item, timestamp: each user's rows together, oldest first
    items: pl.DataFrame  # item, name, then one list[str] column per attribute kind
    kinds: list[str]
    preprocessing: str
    files: dict[str, str] = field(default_factory=dict)
    raw_actions: int = 0
    kcore: int = KCORE

    def stats(self) -> dict[str, int]:
        return {
            "users": self.interactions["user"].n_unique(),
            "items": self.interactions["item"].n_unique(),
            "actions": self.interactions.height,
        }


# -- reading text ----------------------------------------------------------------------------


def _open_bytes(path: Path):
    return gzip.open(path) if path.suffix == ".gz" else open(path, "rb")


def _decode(raw: bytes) -> str:
    """UTF-8, or Latin-1 for MovieLens' older files (ML-100K, ML-1M are Latin-1)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without its line end) of a text file, gzipped or not."""
    try:
        with _open_bytes(path) as handle:
            for number, raw in enumerate(handle, start=1):
                yield number, _decode(raw).rstrip("\r\n")
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read: {error}", str(path)) from None


def _first_line(path: Path) -> str:
    for _, line in _lines(path):
        if line.strip():
            return line
    raise DataError("the file is empty", str(path))


# -- MovieLens -------------------------------------------------------------------------------


def _movielens_ratings_kind(path: Path) -> str:
    first = _first_line(path)
    if "::" in first:
        return "dat"  # ML-1M, ML-10M: UserID::MovieID::Rating::Timestamp
    if first.replace(" ", "").lower().startswith("userid,movieid"):
        return "csv"  # ML-20M, 25M, 32M, latest: userId,movieId,rating,timestamp
    if first.count("\t") == 3:
        return "tab"  # ML-100K u.data: user id, item id, rating, timestamp
    raise DataError(
        "not a MovieLens ratings file: expected u.data (tab-separated), ratings.dat "
        "(UserID::MovieID::Rating::Timestamp) or ratings.csv (header userId,movieId,...); "
        f"the first line is {printable(repr(first))}",
        str(path),
    )


def read_movielens_ratings(path: str | Path) -> tuple[pl.DataFrame, str]:
    """Columns user, item, timestamp (integers) and row (file order); and the file's kind."""
    import polars as pl

    path = _require_file(path)
    kind = _movielens_ratings_kind(path)
    options: dict[str, Any] = {"has_header": False, "infer_schema": False, "quote_char": None}
    if kind == "dat":  # "::" is two one-byte separators around an empty field
        options["separator"] = ":"
        wanted, first_line = [0, 2, 6], 1
    elif kind == "tab":
        options["separator"] = "\t"
        wanted, first_line = [0, 1, 3], 1
    else:
        options = {"has_header": True, "infer_schema": False}
        wanted, first_line = [0, 1, 3], 2
    try:
        frame = pl.read_csv(path, **options)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise DataError(f"cannot read ratings: {_short(error)}", str(path)) from None
    fields = (frame.width + 1) // 2 if kind == "dat" else frame.width
    if fields != 4:
        raise DataError(
            f"expected 4 fields a line (user, movie, rating, time), found {fields}", str(path)
        )
    if kind == "csv":
        header = [c.strip() for c in frame.columns]
        if header[:2] != ["userId", "movieId"] or header[3] != "timestamp":
            raise DataError(
                f"expected the header userId,movieId,rating,timestamp, found {','.join(header)}",
                str(path),
            )
    names = ["user", "item", "timestamp"]
    frame = frame.select(
        [pl.col(frame.columns[i]).str.strip_chars().alias(n) for i, n in zip(wanted, names)]
    ).with_row_index("row")
    return _integer_columns(frame, names, path, first_line), kind


def _integer_columns(
    frame: pl.DataFrame, names: list[str], path: Path, first_line: int
) -> pl.DataFrame:
    import polars as pl

    typed = frame.with_columns([pl.col(n).cast(pl.Int64, strict=False) for n in names])
    for name in names:
        bad = typed[name].is_null()
        if bad.any():
            index = int(bad.arg_true()[0])
            raise DataError(
                f"{name} {printable(repr(frame[name][index]))} is not an integer",
                str(path),
                index + first_line,
            )
    return typed


def read_movielens_movies(path: str | Path) -> dict[int, tuple[str, list[str]]]:
    """{movie id: (title, genres)} from u.item, movies.dat or movies.csv."""
    import polars as pl

    path = _require_file(path)
    first = _first_line(path)
    movies: dict[int, tuple[str, list[str]]] = {}
    if first.replace(" ", "").lower().startswith("movieid,title"):
        try:
            frame = pl.read_csv(path, infer_schema=False)
        except (pl.exceptions.PolarsError, OSError) as error:
            raise DataError(f"cannot read movies: {_short(error)}", str(path)) from None
        if frame.columns[:3] != ["movieId", "title", "genres"]:
            raise DataError(
                f"expected the header movieId,title,genres, found {','.join(frame.columns)}",
                str(path),
            )
        for number, (movie, title, genres) in enumerate(
            frame.select("movieId", "title", "genres").iter_rows(), start=2
        ):
            movies[_movie_id(movie, path, number)] = (title or "", _genres(genres))
        return movies
    dat = "::" in first
    for number, line in _lines(path):
        if not line.strip():
            continue
        if dat:  # MovieID::Title::Genres (titles may hold ':')
            parts = line.split("::")
            if len(parts) < 3:
                raise DataError("expected MovieID::Title::Genres", str(path), number)
            movie, title, genres = parts[0], "::".join(parts[1:-1]), parts[-1]
            movies[_movie_id(movie, path, number)] = (title, _genres(genres))
        else:  # u.item: id|title|release|video release|URL|19 genre flags
            parts = line.split("|")
            if len(parts) != 5 + len(ML100K_GENRES):
                raise DataError(
                    f"expected {5 + len(ML100K_GENRES)} '|'-separated fields (u.item), found "
                    f"{len(parts)}",
                    str(path),
                    number,
                )
            flags = parts[5:]
            genres = [g for g, flag in zip(ML100K_GENRES, flags) if flag.strip() == "1"]
            movies[_movie_id(parts[0], path, number)] = (
                parts[1],
                [g for g in genres if g not in NO_GENRE],
            )
    return movies


def _movie_id(text: str | None, path: Path, number: int) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        raise DataError(
            f"movie id {printable(repr(text))} is not an integer", str(path), number
        ) from None


def _genres(text: str | None) -> list[str]:
    return [g.strip() for g in (text or "").split("|") if g.strip() and g.strip() not in NO_GENRE]


MOVIELENS_KINDS = {
    "tab": "movielens-100k",
    "dat": "movielens-1m/10m",
    "csv": "movielens-20m/25m/32m",
}


def prepare_movielens(
    ratings: str | Path, movies: str | Path | None = None, kcore: int = KCORE
) -> Prepared:
    """MovieLens ratings (and movies, for titles and genres) -> a Prepared dataset."""
    frame, kind = read_movielens_ratings(ratings)
    titles = read_movielens_movies(movies) if movies is not None else {}
    raw = frame.height
    kept = _kcore_ordered(frame, kcore, str(ratings))
    items = sorted(set(kept["item"].to_list()))
    rows = {
        "item": items,
        "name": [titles[i][0] if i in titles else None for i in items],
        "genre": [titles[i][1] if i in titles else [] for i in items],
    }
    files = {"ratings": Path(ratings).name}
    if movies is not None:
        files["movies"] = Path(movies).name
    source = MOVIELENS_KINDS[kind]
    return Prepared(
        source=source,
        interactions=kept,
        items=_items_frame(rows),
        kinds=["genre"],
        preprocessing=MOVIELENS_PREPROCESSING.format(k=kcore),
        files=files,
        raw_actions=raw,
        kcore=kcore,
    )


# -- Amazon ----------------------------------------------------------------------------------


def _record(line: str, path: Path, number: int) -> dict[str, Any]:
    """One JSON object, or (meta files of 2014) one Python dict literal: never eval."""
    try:
        value = json.loads(line)
    except ValueError:
        try:
            value = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataError(
                "not a JSON object or a Python dict literal", str(path), number
            ) from None
    if not isinstance(value, dict):
        raise DataError(f"expected an object, found {type(value).__name__}", str(path), number)
    return value


def read_amazon_reviews(path: str | Path) -> tuple[pl.DataFrame, str]:
    """Columns user, item, timestamp, row from a reviews file of 2014 or 2018 (reviewerID, asin,
    unixReviewTime) or 2023 (user_id, parent_asin, timestamp in ms); and the file's version."""
    import polars as pl

    path = _require_file(path)
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    version = None
    for number, line in _lines(path):
        if not line.strip():
            continue
        record = _record(line, path, number)
        if version is None:
            version = "2023" if "user_id" in record else "2014/2018"
        if version == "2023":
            keys = ("user_id", "parent_asin", "timestamp")
        else:
            keys = ("reviewerID", "asin", "unixReviewTime")
        missing = [k for k in keys if record.get(k) in (None, "")]
        if missing:
            raise DataError(
                f"the review has no {', '.join(missing)} (Amazon reviews of 2014/2018 have "
                "reviewerID, asin, unixReviewTime; of 2023 user_id, parent_asin, timestamp)",
                str(path),
                number,
            )
        user, item, time = (record[k] for k in keys)
        try:
            time = int(time)
        except (TypeError, ValueError):
            raise DataError(
                f"{keys[2]} {printable(repr(time))} is not an integer", str(path), number
            ) from None
        users.append(str(user).strip())
        items.append(str(item).strip())
        times.append(time)
    if version is None:
        raise DataError("the file has no reviews", str(path))
    frame = pl.DataFrame(
        {"user": users, "item": items, "timestamp": times},
        schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64},
    ).with_row_index("row")
    return frame, version


_ID_KEY = re.compile(r"""['"](parent_asin|asin)['"]\s*:\s*['"]([^'"\\]+)['"]""")


def read_amazon_meta(path: str | Path, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """{item id: {"name", "brand", "category"}} for the items in `wanted`; a later line of the
    same item replaces an earlier one (S3-Rec keeps the last)."""
    path = _require_file(path)
    found: dict[str, dict[str, Any]] = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        # a line names its item once: "asin" (2014, 2018) or "parent_asin" (2023)
        quick = _ID_KEY.search(line)
        if quick is not None and quick.group(2).strip() not in wanted:
            continue  # most lines are of items the reviews do not keep: skip their parsing
        record = _record(line, path, number)
        item = record.get("parent_asin") or record.get("asin")
        if item is None or str(item).strip() not in wanted:
            continue
        found[str(item).strip()] = _meta_fields(record)
    return found


def _meta_fields(record: dict[str, Any]) -> dict[str, Any]:
    title = record.get("title")
    brand = record.get("brand") or record.get("store")
    categories = record.get("categories")
    if categories is None:
        categories = record.get("category")
    below_top: list[str] = []
    if isinstance(categories, list) and categories and isinstance(categories[0], list):
        for path in categories:  # 2014: a list of category paths, each from its top level
            below_top += [str(c) for c in path[1:]]
    elif isinstance(categories, list):  # 2018, 2023: one path
        below_top = [str(c) for c in categories[1:]]
    brand_text = str(brand).strip() if isinstance(brand, str | int | float) else ""
    return {
        "name": str(title).strip() if isinstance(title, str | int | float) else None,
        "brand": [brand_text] if brand_text else [],
        "category": _unique([c.strip() for c in below_top if c.strip()]),
    }


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def prepare_amazon(
    reviews: str | Path, meta: str | Path | None = None, kcore: int = KCORE
) -> Prepared:
    """Amazon reviews (and meta, for titles, brand and categories) -> a Prepared dataset."""
    frame, version = read_amazon_reviews(reviews)
    raw = frame.height
    kept = _kcore_ordered(frame, kcore, str(reviews))
    items = sorted(set(kept["item"].to_list()))
    info = read_amazon_meta(meta, set(items)) if meta is not None else {}
    if meta is not None and not info:
        log.warning("%s: no line describes an item of the reviews", meta)
    empty = {"name": None, "brand": [], "category": []}
    rows: dict[str, list] = {"item": items}
    for column in ("name", "brand", "category"):
        rows[column] = [info.get(i, empty)[column] for i in items]
    files = {"reviews": Path(reviews).name}
    if meta is not None:
        files["meta"] = Path(meta).name
    return Prepared(
        source=f"amazon-{'2023' if version == '2023' else '2014/2018'}",
        interactions=kept,
        items=_items_frame(rows),
        kinds=["brand", "category"],  # S3-Rec lists the brand first
        preprocessing=AMAZON_PREPROCESSING.format(k=kcore),
        files=files,
        raw_actions=raw,
        kcore=kcore,
    )


# -- shared ----------------------------------------------------------------------------------


def _kcore_ordered(frame: pl.DataFrame, kcore: int, where: str) -> pl.DataFrame:
    """k-core, then users in order of their first action in the file, each user's actions by
    time with ties in file order."""
    import polars as pl

    kept = kcore_filter(frame, kcore)
    if kept.height == 0:
        raise DataError(
            f"nothing left after {kcore}-core filtering of {frame.height} actions", where
        )
    return (
        kept.with_columns(pl.col("row").min().over("user").alias("first"))
        .sort(["first", "timestamp", "row"])
        .select("user", "item", "timestamp")
    )


def _items_frame(rows: dict[str, list]) -> pl.DataFrame:
    import polars as pl

    lists = {k: pl.List(pl.String) for k in rows if k not in ("item", "name")}
    return pl.DataFrame(rows, schema_overrides={"name": pl.String, **lists})


def attribute_ids(items: pl.DataFrame, kinds: list[str]) -> dict[str, int]:
    """Attribute ids 1.. by first appearance over the items in order, kinds in order; the same
    text in two kinds is two attributes."""
    ids: dict[str, int] = {}
    for row in items.select(kinds).iter_rows():
        for kind, values in zip(kinds, row):
            for value in values:
                ids.setdefault(f"{kind}\0{value}", len(ids) + 1)
    return ids


def _attribute_files(items: pl.DataFrame, kinds: list[str]) -> dict[str, dict[str, list[int]]]:
    """{file stem: {item id: [attribute id, ...]}}: one per kind, and 'all' (every kind)."""
    files: dict[str, dict[str, list[int]]] = {}
    every = attribute_ids(items, kinds)
    for kind in kinds:
        own = attribute_ids(items, [kind])
        files[kind] = {
            str(item): [own[f"{kind}\0{v}"] for v in values]
            for item, values in items.select("item", kind).iter_rows()
            if values
        }
    if len(kinds) > 1:
        combined: dict[str, list[int]] = {}
        for row in items.select("item", *kinds).iter_rows():
            values = [every[f"{k}\0{v}"] for k, vs in zip(kinds, row[1:]) for v in vs]
            if values:
                combined[str(row[0])] = values
        files[ALL_KINDS] = combined
    return files


def _joined(items: pl.DataFrame, kinds: list[str]) -> pl.DataFrame:
    """items.csv's frame: multi-valued columns joined with '|' ('|' inside a value becomes
    '/', counted in a warning)."""
    import polars as pl

    changed = 0
    for kind in kinds:
        changed += int(
            items[kind].list.eval(pl.element().str.contains("|", literal=True)).list.any().sum()
        )
    if changed:
        log.warning("replaced '|' by '/' inside the attribute values of %d items", changed)
    return items.with_columns(
        [
            pl.when(pl.col(k).list.len() > 0)
            .then(
                pl.col(k)
                .list.eval(pl.element().str.replace_all("|", "/", literal=True))
                .list.join(VALUE_SEP)
            )
            .alias(k)
            for k in kinds
        ]
    )


def check_out(out: str | Path) -> Path:
    """The output folder must not exist or be empty: prepare never replaces files."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FamerecError(f"{out} already exists and is not an empty folder; choose another --out")
    return out


def write_prepared(prepared: Prepared, out: str | Path) -> dict[str, Any]:
    """Write the folder (module docstring) at once: into a temporary folder beside it, renamed
    into place, so that an interrupted or failed write leaves nothing."""
    out = check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "source": prepared.source,
        "files_read": prepared.files,
        "preprocessing": prepared.preprocessing,
        "kcore": prepared.kcore,
        "raw_actions": prepared.raw_actions,
        **prepared.stats(),
        "interactions": INTERACTIONS,
        "items_table": ITEMS,
        "attribute_columns": prepared.kinds,
    }
    temp = Path(tempfile.mkdtemp(prefix=".famerec-tmp-", dir=out.parent))
    try:
        prepared.interactions.write_csv(temp / INTERACTIONS)
        _joined(prepared.items, prepared.kinds).write_csv(temp / ITEMS)
        (temp / ATTRIBUTES).mkdir()
        for stem, mapping in _attribute_files(prepared.items, prepared.kinds).items():
            (temp / ATTRIBUTES / f"{stem}.json").write_text(json.dumps(mapping))
        (temp / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        mode = 0o777 & ~_umask()
        for path in [temp, *temp.rglob("*")]:
            os.chmod(path, mode if path.is_dir() else mode & 0o666)
        if out.exists():
            out.rmdir()  # empty, checked above
        temp.rename(out)
    except OSError as error:
        raise FamerecError(f"cannot write {out}: {error}") from None
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return summary


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


__all__ = [
    "Prepared",
    "prepare_amazon",
    "prepare_movielens",
    "read_amazon_meta",
    "read_amazon_reviews",
    "read_movielens_movies",
    "read_movielens_ratings",
    "write_prepared",
]
