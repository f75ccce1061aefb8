"""`famerec data prepare`: MovieLens and Amazon files in their published formats, small."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from famerec.cli import main
from famerec.data import read_table
from famerec.data.attributes import read_attributes
from famerec.data.prepare import prepare_amazon, prepare_movielens
from famerec.errors import DataError

CORE = [10, 20, 30, 40, 50]


def events() -> list[tuple[int, int, int, int]]:
    """(user, item, rating, time) in file order. Users 1-6 rate the five core items; user 1's
    times tie (100 twice: file order decides) and are not in file order. User 7 has 4 actions;
    items 99 and 98 have 2; item 97 has 5 until user 7 goes, then user 8 (5 actions) goes with
    it in a second round. So 5-core keeps users 1-6, the five core items, 30 of 46 actions."""
    rows = []
    user1 = [(30, 300), (10, 100), (50, 100), (20, 200), (40, 50)]  # -> 40, 10, 50, 20, 30
    rows += [(1, item, 4, time) for item, time in user1]
    for user in range(2, 7):
        rows += [(user, item, 3, 1000 * user + step) for step, item in enumerate(CORE)]
    rows += [(7, item, 5, 5000 + i) for i, item in enumerate([10, 20, 30, 97])]
    rows += [(1, 99, 2, 10), (2, 99, 2, 10)]
    rows += [(8, item, 1, 7000 + i) for i, item in enumerate([10, 20, 30, 40, 98, 97])]
    rows += [(1, 98, 4, 20), (1, 97, 4, 30), (2, 97, 4, 30), (3, 97, 4, 30)]
    return rows


RAW_ACTIONS = 46
ORDER_OF_USER_1 = [40, 10, 50, 20, 30]
TITLES = {
    10: "Toy Story (1995)",
    20: "Café Noir (1999)",
    30: "Heat: Extended (1995)",
    40: "American President, The (1995)",
    50: "Nothing (2001)",
    97: "Rare (1990)",
}
GENRES = {
    10: ["Animation", "Children's", "Comedy"],
    20: ["Drama"],
    30: ["Action", "Crime"],
    40: ["Comedy", "Drama"],
    50: [],
    97: ["Drama"],
}


def check_kept(prepared, source: str, user, item) -> None:
    """What 5-core keeps of events(), in order, with ids spelled by `user` and `item`."""
    assert prepared.source == source
    assert prepared.raw_actions == RAW_ACTIONS
    assert prepared.stats() == {"users": 6, "items": 5, "actions": 30}
    frame = prepared.interactions
    assert frame["user"].unique(maintain_order=True).to_list() == [user(u) for u in range(1, 7)]
    first = frame.filter(pl.col("user") == user(1))["item"].to_list()
    assert first == [item(i) for i in ORDER_OF_USER_1]
    assert prepared.items["item"].to_list() == [item(i) for i in CORE]


def write_ml100k(root: Path) -> tuple[Path, Path]:
    from famerec.data.prepare import ML100K_GENRES

    ratings = root / "u.data"
    ratings.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in events()))
    lines = []
    for movie, title in TITLES.items():
        genres = GENRES[movie] or ["unknown"]
        flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
        lines.append(f"{movie}|{title}|01-Jan-1995||http://example.org/{movie}|{flags}\n")
    movies = root / "u.item"
    movies.write_bytes("".join(lines).encode("latin-1"))  # as in the real file
    return ratings, movies


def write_ml1m(root: Path) -> tuple[Path, Path]:
    ratings = root / "ratings.dat"
    ratings.write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in events()))
    lines = [
        f"{movie}::{title}::{'|'.join(GENRES[movie]) or '(no genres listed)'}\n"
        for movie, title in TITLES.items()
    ]
    movies = root / "movies.dat"
    movies.write_bytes("".join(lines).encode("latin-1"))
    return ratings, movies


def write_ml20m(root: Path) -> tuple[Path, Path]:
    ratings = root / "ratings.csv"
    rows = [f"{u},{i},{r}.0,{t}\n" for u, i, r, t in events()]
    ratings.write_text("userId,movieId,rating,timestamp\n" + "".join(rows))
    rows = []
    for movie, title in TITLES.items():
        shown = f'"{title}"' if "," in title else title
        rows.append(f"{movie},{shown},{'|'.join(GENRES[movie]) or '(no genres listed)'}\n")
    movies = root / "movies.csv"
    movies.write_text("movieId,title,genres\n" + "".join(rows), encoding="utf-8")
    return ratings, movies


@pytest.mark.parametrize(
    "writer, source",
    [
        (write_ml100k, "movielens-100k"),
        (write_ml1m, "movielens-1m/10m"),
        (write_ml20m, "movielens-20m/25m/32m"),
    ],
)
def test_movielens_formats(tmp_path, writer, source):
    ratings, movies = writer(tmp_path)
    prepared = prepare_movielens(ratings, movies)
    check_kept(prepared, source, user=int, item=int)
    items = prepared.items
    assert items["name"].to_list() == [TITLES[i] for i in CORE]
    assert items["genre"].to_list() == [GENRES[i] for i in CORE]


def test_movielens_without_movies_has_no_names(tmp_path):
    ratings, _ = write_ml1m(tmp_path)
    prepared = prepare_movielens(ratings)
    assert prepared.items["name"].to_list() == [None] * 5
    assert prepared.stats()["actions"] == 30


def test_cli_writes_files_famerec_reads(tmp_path, capsys):
    ratings, movies = write_ml20m(tmp_path)
    out = tmp_path / "ml"
    code = main(
        ["data", "prepare", "movielens", str(ratings), "--movies", str(movies), "--out", str(out)]
    )
    stdout = capsys.readouterr().out
    assert code == 0
    assert "movielens-20m/25m/32m: 6 users, 5 items, 30 actions (5-core of 46)" in stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "attributes",
        "interactions.csv",
        "items.csv",
        "prepare.json",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".famerec-tmp-")]
    data = read_table(out / "interactions.csv")  # the defaults: user, item, timestamp
    assert (data.num_users, data.num_items, data.num_actions) == (6, 5, 30)
    user1 = data.item_ids[data.sequence(list(data.user_ids).index(1)) - 1].tolist()
    assert user1 == ORDER_OF_USER_1
    table = pl.read_csv(out / "items.csv")
    assert table.columns == ["item", "name", "genre"]
    assert table.row(3) == (40, "American President, The (1995)", "Comedy|Drama")
    assert table.row(4) == (50, "Nothing (2001)", None)
    genre = json.loads((out / "attributes/genre.json").read_text())
    # ids 1.. by first appearance over the items in id order; items without genre left out
    assert genre == {"10": [1, 2, 3], "20": [4], "30": [5, 6], "40": [3, 4]}
    attributes = read_attributes(str(out / "attributes/genre.json"), data)  # FAME's --attributes
    assert sorted(len(a) for a in attributes.values()) == [1, 2, 2, 3]
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["raw_actions"] == 46 and summary["attribute_columns"] == ["genre"]


def test_cli_refuses_a_folder_with_files_and_bad_files(tmp_path, capsys):
    ratings, _ = write_ml1m(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full/x").write_text("x")
    code = main(["data", "prepare", "movielens", str(ratings), "--out", str(tmp_path / "full")])
    err = capsys.readouterr().err
    assert code == 2 and "already exists and is not an empty folder" in err
    bad = tmp_path / "bad.dat"
    bad.write_text("1::10::5::978300760\n2::x::5::978300761\n")
    code = main(["data", "prepare", "movielens", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "bad.dat:2: item 'x' is not an integer" in err
    other = tmp_path / "other.txt"
    other.write_text("a;b;c\n")
    code = main(["data", "prepare", "movielens", str(other), "--out", str(tmp_path / "o")])
    assert code == 2 and "not a MovieLens ratings file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# -- Amazon ----------------------------------------------------------------------------------


def asin(item: int) -> str:
    return f"B{item:09d}"


def user_id(user: int) -> str:
    return f"A{user}XYZ"


def write_gzip(path: Path, lines: list[str]) -> Path:
    path.write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode(), 1))
    return path


META_2014 = {
    10: {"title": "Rose Soap", "categories": [["Beauty", "Bath & Body", "Soaps"]], "brand": "Acme"},
    20: {
        "title": 'Nail "Pro" Kit',
        "categories": [["Beauty", "Tools"], ["Beauty", "Bath & Body"]],
    },
    30: {"title": "Lip Balm", "categories": [["Beauty"]], "brand": "Acme"},
    40: {"title": "Face Cream", "categories": [["Beauty", "Skin Care", "Face"]], "brand": "Dewy"},
    # 50 has no meta line; 96 is not in the reviews
    96: {"title": "Unreviewed", "categories": [["Beauty", "Other"]], "brand": "Nobody"},
}


def write_amazon_2014(root: Path) -> tuple[Path, Path]:
    reviews = [
        json.dumps(
            {
                "reviewerID": user_id(u),
                "asin": asin(i),
                "reviewerName": "someone",
                "helpful": [0, 0],
                "reviewText": "fine",
                "overall": float(r),
                "summary": "ok",
                "unixReviewTime": t,
                "reviewTime": "01 1, 2014",
            }
        )
        for u, i, r, t in events()
    ]
    meta = [repr({"asin": asin(item), **fields}) for item, fields in META_2014.items()]
    return (
        write_gzip(root / "reviews_Beauty_5.json.gz", reviews),
        write_gzip(root / "meta_Beauty.json.gz", meta),
    )


def write_amazon_2018(root: Path) -> tuple[Path, Path]:
    reviews = [
        json.dumps(
            {
                "overall": float(r),
                "verified": True,
                "reviewerID": user_id(u),
                "asin": asin(i),
                "unixReviewTime": t,
                "reviewText": "fine",
            }
        )
        for u, i, r, t in events()
    ]
    meta = []
    for item, fields in META_2014.items():
        flat = fields["categories"][0] + [c for p in fields["categories"][1:] for c in p[1:]]
        record = {"category": flat, "also_buy": [asin(50)], "title": fields["title"]}
        if "brand" in fields:
            record["brand"] = fields["brand"]
        record["asin"] = asin(item)  # last, as in the published files
        meta.append(json.dumps(record))
    return (
        write_gzip(root / "All_Beauty_5.json.gz", reviews),
        write_gzip(root / "meta_All_Beauty.json.gz", meta),
    )


def write_amazon_2023(root: Path) -> tuple[Path, Path]:
    reviews = [
        json.dumps(
            {
                "rating": float(r),
                "title": "ok",
                "text": "fine",
                "asin": asin(i) + "X",
                "parent_asin": asin(i),
                "user_id": user_id(u),
                "timestamp": t * 1000,
                "verified_purchase": True,
            }
        )
        for u, i, r, t in events()
    ]
    meta = []
    for item, fields in META_2014.items():
        flat = fields["categories"][0] + [c for p in fields["categories"][1:] for c in p[1:]]
        meta.append(
            json.dumps(
                {
                    "main_category": "All Beauty",
                    "title": fields["title"],
                    "categories": flat,
                    "store": fields.get("brand"),
                    "parent_asin": asin(item),
                }
            )
        )
    return (
        write_gzip(root / "All_Beauty.jsonl.gz", reviews),
        write_gzip(root / "meta_All_Beauty.jsonl.gz", meta),
    )


@pytest.mark.parametrize(
    "writer, source",
    [
        (write_amazon_2014, "amazon-2014/2018"),
        (write_amazon_2018, "amazon-2014/2018"),
        (write_amazon_2023, "amazon-2023"),
    ],
)
def test_amazon_formats(tmp_path, writer, source):
    reviews, meta = writer(tmp_path)
    prepared = prepare_amazon(reviews, meta)
    check_kept(prepared, source, user=user_id, item=asin)
    items = prepared.items
    assert items["name"].to_list() == [
        "Rose Soap",
        'Nail "Pro" Kit',
        "Lip Balm",
        "Face Cream",
        None,
    ]
    assert items["brand"].to_list() == [["Acme"], [], ["Acme"], ["Dewy"], []]
    assert items["category"].to_list() == [
        ["Bath & Body", "Soaps"],
        ["Tools", "Bath & Body"],
        [],
        ["Skin Care", "Face"],
        [],
    ]


def test_amazon_cli_attribute_files(tmp_path, capsys):
    reviews, meta = write_amazon_2014(tmp_path)
    out = tmp_path / "beauty"
    code = main(["data", "prepare", "amazon", str(reviews), "--meta", str(meta), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert (
        "amazon-2014/2018: 6 users, 5 items, 30 actions (5-core of 46)" in capsys.readouterr().out
    )
    brand = json.loads((out / "attributes/brand.json").read_text())
    category = json.loads((out / "attributes/category.json").read_text())
    every = json.loads((out / "attributes/all.json").read_text())
    a = asin
    assert brand == {a(10): [1], a(30): [1], a(40): [2]}
    assert category == {a(10): [1, 2], a(20): [3, 1], a(40): [4, 5]}
    # S3-Rec's one kind: the brand first, then the categories
    assert every == {a(10): [1, 2, 3], a(20): [4, 2], a(30): [1], a(40): [5, 6, 7]}
    data = read_table(out / "interactions.csv")
    assert data.item_ids.tolist() == [a(i) for i in CORE]  # asins stay strings
    assert len(read_attributes(str(out / "attributes/all.json"), data)) == 4
    table = pl.read_csv(out / "items.csv")
    assert table.columns == ["item", "name", "brand", "category"]
    assert table.row(1) == (a(20), 'Nail "Pro" Kit', None, "Tools|Bath & Body")


def test_meta_lines_are_literals_never_code(tmp_path):
    reviews, _ = write_amazon_2014(tmp_path)
    marker = tmp_path / "ran"
    meta = write_gzip(
        tmp_path / "meta_bad.json.gz",
        [f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"],
    )
    with pytest.raises(DataError, match=r"meta_bad.json.gz:1: not a JSON object or a Python"):
        prepare_amazon(reviews, meta)
    assert not marker.exists()


def test_amazon_review_without_a_field(tmp_path):
    path = write_gzip(tmp_path / "r.json.gz", [json.dumps({"reviewerID": "A", "asin": "B"})])
    with pytest.raises(DataError, match=r"r.json.gz:1: the review has no unixReviewTime"):
        prepare_amazon(path)


def test_prepared_movielens_trains_fame_on_genres_with_names(tmp_path, capsys):
    ratings, movies = write_ml1m(tmp_path)
    out = tmp_path / "ml"
    assert (
        main(
            [
                "data",
                "prepare",
                "movielens",
                str(ratings),
                "--movies",
                str(movies),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    hint = capsys.readouterr().out.splitlines()[-1]
    assert f"--items {out}/items.csv --attribute-cols genre" in hint
    run = tmp_path / "run"
    args = ["train", "--data", str(out / "interactions.csv"), "--format", "table"]
    args += ["--items", str(out / "items.csv"), "--attribute-cols", "genre", "--out", str(run)]
    args += ["--model", "fame", "--attribute-weight", "1", "--attributes", "items"]
    args += ["--epochs", "1", "--batch-size", "8", "--threads", "1"]
    assert main(args) == 0, capsys.readouterr().err
    assert json.loads((run / "inputs/fame.attributes-1.json").read_text()) == {
        "10": [1, 2, 3],
        "20": [4],
        "30": [5, 6],
        "40": [3, 4],
    }
    from famerec.recommender import load

    answer = load(run).recommend([10, 20], k=3).to_dict()
    assert {entry["name"] for entry in answer["items"]} <= {TITLES[i] for i in CORE}


def test_beauty_actions_in_review_form_come_back_as_the_bundled_sequences(tmp_path):
    """The bundled Beauty (S3-Rec's output) as a 2014 reviews file, in shuffled file order:
    prepare gives back its 22,363 users, 12,101 items, 198,502 actions and every sequence."""
    import random

    from famerec.data import load_bundled

    data = load_bundled("beauty")
    expected, rows = {}, []
    for user in range(data.num_users):
        items = data.item_ids[data.sequence(user) - 1].tolist()
        expected[f"U{data.user_ids[user]}"] = [f"I{i}" for i in items]
        rows += [
            (f"U{data.user_ids[user]}", f"I{i}", 1_300_000_000 + 86_400 * t)
            for t, i in enumerate(items)
        ]
    random.Random(0).shuffle(rows)
    lines = [
        json.dumps({"reviewerID": u, "asin": i, "overall": 5.0, "unixReviewTime": t})
        for u, i, t in rows
    ]
    prepared = prepare_amazon(write_gzip(tmp_path / "reviews_Beauty_5.json.gz", lines))
    assert prepared.stats() == {"users": 22_363, "items": 12_101, "actions": 198_502}
    got = {}
    for user, item in prepared.interactions.select("user", "item").iter_rows():
        got.setdefault(user, []).append(item)
    assert got == expected
