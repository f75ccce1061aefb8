"""Item metadata at training (`--items`): names in every answer, attribute columns as kinds."""

from __future__ import annotations

import json
import shutil

import pytest

from famerec.cli import main
from famerec.recommender import load
from tests.test_cli import TINY, assert_one_line_error, run_cli

FAME = ["--model", "fame", "--hidden", "64", "--heads", "2"]


def write_events(root):
    rows = ["user,item,timestamp"]
    for user in range(30):
        for step in range(6):
            rows.append(f"u{user},i{(user + step) % 12},{1000 + step}")
    (root / "events.csv").write_text("\n".join(rows) + "\n")
    return root / "events.csv"


GENRES = ["Drama|Comedy", "Drama", "Action|Sci-Fi", "", "Comedy"]


def write_items(root, name="items.csv", extra_rows=()):
    rows = ["item,title,genre,brand"]
    for n in range(12):
        rows.append(f'i{n},"Item {n}, deluxe",{GENRES[n % 5]},b{n % 2}')
    rows += list(extra_rows)
    rows.append("other,Not in the data,Drama,b0")
    (root / name).write_text("\n".join(rows) + "\n")
    return root / name


def train_args(root, out, *extra):
    return [
        "train",
        "--data",
        str(root / "events.csv"),
        "--format",
        "table",
        "--kcore",
        "2",
        "--out",
        str(out),
        *TINY,
        *extra,
    ]


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    """A FAME run with an item table whose two attribute columns are FAME's two kinds and,
    together, the items' --item-attributes; moved away from its table afterwards."""
    root = tmp_path_factory.mktemp("named")
    write_events(root)
    write_items(root)
    items = ["--items", str(root / "items.csv"), "--item-name-col", "title"]
    items += ["--attribute-cols", "genre,brand", "--item-attributes", "items"]
    fame = [*FAME, "--attribute-weight", "1", "--attributes", "items"]
    code = main(train_args(root, root / "run", *items, *fame))
    assert code == 0
    moved = root / "moved"
    shutil.move(root / "run", moved)
    (root / "items.csv").unlink()
    return moved


def test_the_run_keeps_names_and_attribute_files(named_run):
    config = json.loads((named_run / "config.json").read_text())
    assert config["fame"]["attributes"] == "items:genre,items:brand"
    assert config["model"]["item_attributes"] == "items"
    kept = json.loads((named_run / "items.json").read_text())
    assert kept["names"]["i3"] == "Item 3, deluxe" and "other" not in kept["names"]
    assert kept["attributes"]["genre"]["values"] == ["Drama", "Comedy", "Action", "Sci-Fi"]
    assert "i3" not in kept["attributes"]["genre"]["items"]  # no genre
    genre = json.loads((named_run / "inputs/fame.attributes-1.json").read_text())
    brand = json.loads((named_run / "inputs/fame.attributes-2.json").read_text())
    both = json.loads((named_run / "item_attributes.json").read_text())
    assert genre["i0"] == [1, 2] and genre["i2"] == [3, 4] and genre["i4"] == [2]
    assert brand["i0"] == [1] and brand["i1"] == [2]
    assert both["i0"] == [1, 2, 3] and both["i2"] == [5, 6, 3] and both["i3"] == [4]


def test_names_in_recommend_explain_and_python(named_run, capsys):
    rec = load(named_run)
    result = rec.recommend(["i1", "i2"], k=3).to_dict()
    assert all(entry["name"] == f"Item {entry['item'][1:]}, deluxe" for entry in result["items"])
    code, stdout, _ = run_cli(["recommend", "--run", str(named_run), "--user", "u1"], capsys)
    assert code == 0 and "| name" in stdout and ", deluxe" in stdout
    code, stdout, _ = run_cli(
        ["recommend", "--run", str(named_run), "--items", "i1 i2", "--json"], capsys
    )
    assert all("name" in entry for entry in json.loads(stdout)["items"])
    code, stdout, _ = run_cli(["explain", "--run", str(named_run), "--user", "u1"], capsys)
    assert code == 0
    assert "  i1  Item 1, deluxe" in stdout and "held-out test item: i6 Item 6, deluxe" in stdout
    code, stdout, _ = run_cli(
        ["explain", "--run", str(named_run), "--user", "u1", "--json"], capsys
    )
    payload = json.loads(stdout)
    assert payload["history_names"][0] == "Item 1, deluxe"
    assert payload["test_item_name"] == "Item 6, deluxe"
    assert all("name" in entry for head in payload["heads"] for entry in head["items"])


def test_names_in_http_answers(named_run):
    from famerec.serving import create_app
    from tests.test_serving import serving_in_thread

    with serving_in_thread(create_app(load(named_run))) as client:
        body = client.post("/recommend", json={"items": ["i1"], "k": 2, "explain": True}).json()
        batch = client.post("/recommend/batch", json={"sequences": [["i1"], ["i2"]]}).json()
    assert body["items"][0]["name"].endswith(", deluxe")
    assert all("name" in entry for head in body["heads"] for entry in head["items"])
    assert all("name" in entry for r in batch["results"] for entry in r["items"])


def test_runs_without_an_item_table_answer_as_before(trained_runs):
    rec = load(trained_runs["fame"])
    assert rec.item_table is None and not rec.has_names
    answer = rec.explain(["i1", "i2"], k=2).to_dict()
    assert set(answer["items"][0]) == {"item", "score"}
    assert set(answer["heads"][0]["items"][0]) == {"item", "score"}


def test_the_name_column_defaults_to_name(tmp_path):
    write_events(tmp_path)
    (tmp_path / "items.tsv").write_text("item\tname\ni1\tOne\ni1\tOne\n")  # same name twice: fine
    args = train_args(tmp_path, tmp_path / "run", "--items", str(tmp_path / "items.tsv"))
    assert main(args) == 0
    assert load(tmp_path / "run").item_name("i1") == "One"
    assert load(tmp_path / "run").item_name("i2") is None


@pytest.mark.parametrize(
    "items, flags, words",
    [
        ("id,title\ni1,One\n", [], ["no column 'item' (--item-id-col)", "columns are: id, title"]),
        (
            "item,title\ni1,One\ni2,Two\ni1,Uno\n",
            ["--item-name-col", "title"],
            ["items.csv:4: item 'i1' has two names: 'One' (line 2) and 'Uno'"],
        ),
        ("item,genre\ni1,a\n", ["--attribute-cols", "genre,year"], ["'year' (--attribute-cols)"]),
        ("item,genre\ni1,a\n", ["--attribute-cols", "genre", "--attribute-sep", ""], ["sep"]),
        ("item,genre\n001,a\n", [], ["no id of column 'item' is an item of the data"]),
    ],
)
def test_bad_item_tables_are_one_line_and_write_nothing(tmp_path, capsys, items, flags, words):
    write_events(tmp_path)
    (tmp_path / "items.csv").write_text(items)
    args = train_args(tmp_path, tmp_path / "run", "--items", str(tmp_path / "items.csv"), *flags)
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / "run").exists()


def test_table_attributes_need_a_table(tmp_path, capsys):
    write_events(tmp_path)
    code, _, err = run_cli(
        train_args(
            tmp_path, tmp_path / "run", *FAME, "--attribute-weight", "1", "--attributes", "items"
        ),
        capsys,
    )
    assert_one_line_error(code, err, "--attributes items: needs an item table")
    code, _, err = run_cli(
        train_args(tmp_path, tmp_path / "run", "--attribute-cols", "genre"), capsys
    )
    assert_one_line_error(code, err, "--attribute-cols name columns of --items FILE")
    assert not (tmp_path / "run").exists()


def test_a_run_resumes_without_its_table(tmp_path):
    from famerec.training import resolve_config, train_run

    write_events(tmp_path)
    write_items(tmp_path)
    overrides = {
        "data.path": str(tmp_path / "events.csv"),
        "data.format": "table",
        "data.kcore": 2,
        "data.items": str(tmp_path / "items.csv"),
        "data.item_name_col": "title",
        "data.attribute_cols": "genre",
        "model.item_attributes": "items",
        "model.hidden_size": 16,
        "train.epochs": 2,
        "train.threads": 1,
    }
    out = tmp_path / "run"
    config = resolve_config(out, overrides)
    assert train_run(config, out, progress=False, stop_after=1) is None
    (tmp_path / "items.csv").unlink()
    config = resolve_config(out, {}, resume=True)
    assert train_run(config, out, resume=True, progress=False) is not None
    assert load(out).item_name("i2") == "Item 2, deluxe"


def test_python_api_takes_the_item_table(tmp_path):
    import famerec

    write_events(tmp_path)
    write_items(tmp_path)
    run = famerec.train(
        data=tmp_path / "events.csv",
        format="table",
        kcore=2,
        items=tmp_path / "items.csv",
        item_name_col="title",
        out=tmp_path / "run",
        hidden=16,
        epochs=1,
        threads=1,
    )
    assert run.recommender.recommend(["i1"], k=2).names[0].endswith(", deluxe")


def test_facets_use_the_runs_attribute_columns(named_run, capsys):
    code, stdout, err = run_cli(
        ["explain", "--run", str(named_run), "--facets", "-k", "3", "--json"], capsys
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert {row["list"] for row in report["lists"]} >= {"head 1", "head 2", "integrated"}
