"""The Python API: the same runs, defaults and errors as the command line."""

from __future__ import annotations

import json
import sys

import numpy as np
import polars as pl
import pytest
from safetensors.numpy import load_file

import famerec
from famerec.cli import main
from famerec.errors import FamerecError, InUseError
from famerec.evaluation.significance import paired_t_test, per_user
from famerec.runs.dir import DirectoryLock
from tests.conftest import write_sequences

OPTIONS = {"hidden": 16, "max_len": 10, "epochs": 2, "batch_size": 32, "threads": 1}
FLAGS = ["--hidden", "16", "--max-len", "10", "--epochs", "2", "--batch-size", "32"]
FLAGS += ["--threads", "1"]
TIMINGS = {"train_seconds", "eval_seconds", "positions_per_second", "wall_seconds"}


def without_timings(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMINGS}


def test_python_and_cli_write_the_same_run(seq_file, tmp_path, capsys):
    run = famerec.train(data=seq_file, out=tmp_path / "py", quiet=True, **OPTIONS)
    assert (
        main(["-q", "train", "--data", str(seq_file), "--out", str(tmp_path / "cli"), *FLAGS]) == 0
    )
    capsys.readouterr()
    for name in ("config.json",):
        assert (tmp_path / "py" / name).read_text() == (tmp_path / "cli" / name).read_text()
    py, cli = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("py", "cli"))
    assert without_timings(py) == without_timings(cli)
    logs = [
        [
            without_timings(json.loads(r))
            for r in (tmp_path / d / "log.jsonl").read_text().splitlines()
        ]
        for d in ("py", "cli")
    ]
    assert logs[0] == logs[1]
    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("py", "cli"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert run.metrics["test"] == cli["test"]


def test_a_dataframe_or_a_mapping_trains_like_the_same_file(tmp_path):
    path = write_sequences(tmp_path / "s.txt", num_users=60, num_items=25)
    rows = {"user": [], "item": [], "timestamp": []}
    mapping = {}
    for line in path.read_text().splitlines():
        user, *items = map(int, line.split())
        mapping[user] = items
        rows["user"] += [user] * len(items)
        rows["item"] += items
        rows["timestamp"] += list(range(len(items)))
    table = tmp_path / "s.csv"
    pl.DataFrame(rows).write_csv(table)
    from_file = famerec.train(
        data=str(table), format="table", kcore=0, out=tmp_path / "file", quiet=True, **OPTIONS
    )
    from_frame = famerec.train(
        data=pl.DataFrame(rows), kcore=0, out=tmp_path / "frame", quiet=True, **OPTIONS
    )
    from_mapping = famerec.train(data=mapping, out=tmp_path / "mapping", quiet=True, **OPTIONS)
    for run in (from_frame, from_mapping):
        assert run.metrics["test"] == from_file.metrics["test"]
        assert run.metrics["dataset"]["fingerprint"] == from_file.metrics["dataset"]["fingerprint"]
        assert (run.path / "input.parquet").is_file()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"lr": -1.0}, "--lr must be positive"),
        ({"epochs": 0}, "--epochs must be a positive integer"),
        ({"experts": 4}, "unknown option experts= for --model sasrec"),
        ({"model": "fame", "heads": 3, "hidden": 64}, "FAME needs --heads in"),
        ({"model": "nosuchmodel"}, "unknown --model 'nosuchmodel'"),
        ({"dataset": "netflix"}, "unknown dataset 'netflix'"),
        ({"data": 42}, "data must be a file path, a Polars or pandas DataFrame"),
        ({"data": {"u1": "abc"}}, "items must be a list"),
    ],
)
def test_bad_input_raises_the_clis_error(tmp_path, kwargs, words):
    options = {**OPTIONS, "out": tmp_path / "run", "quiet": True}
    options.update(kwargs)
    with pytest.raises(FamerecError, match=words):
        famerec.train(**options)


def test_missing_file_raises_like_the_cli(tmp_path):
    with pytest.raises(FamerecError, match="file not found"):
        famerec.train(data=tmp_path / "missing.txt", out=tmp_path / "run", **OPTIONS)


def test_run_object_shows_itself_and_compares(seq_file, tmp_path):
    first = famerec.train(data=seq_file, out=tmp_path / "a", quiet=True, **OPTIONS)
    second = famerec.train(data=seq_file, out=tmp_path / "b", quiet=True, seed=7, **OPTIONS)
    text = repr(first)
    assert "sasrec" in text and "test NDCG@10" in text and "best epoch" in text
    history = first.history
    assert history["epoch"].to_list() == [1, 2]
    assert "valid_NDCG@10" in history.columns
    assert first.recommender.recommend([1, 2, 3], k=3).items
    table = famerec.compare([first, second])
    assert table["model"].to_list() == ["sasrec", "sasrec"]
    p_values = table["p vs first (NDCG@10)"].to_list()
    assert p_values[0] is None and 0.0 <= p_values[1] <= 1.0  # paired on the same test users
    assert table["test NDCG@10"].to_list() == [
        first.metrics["test"]["NDCG@10"],
        second.metrics["test"]["NDCG@10"],
    ]
    import matplotlib

    matplotlib.use("Agg")
    assert first.plot() is not None


def test_paired_t_test_on_per_user_metrics():
    ranks_a = np.array([0, 5, 50, 3, 100, 2, 7, 1000])
    assert per_user(ranks_a, "HR@10").tolist() == [1, 1, 0, 1, 0, 1, 1, 0]
    assert per_user(np.array([0]), "NDCG@10")[0] == 1.0
    same = per_user(ranks_a)
    assert paired_t_test(same, same) == 1.0
    rng = np.random.default_rng(0)
    base = rng.random(2000)
    assert paired_t_test(base, base + 0.05 + rng.normal(0, 0.1, 2000)) < 1e-6
    assert paired_t_test(base, base + rng.normal(0, 0.1, 2000)) > 0.01


def events(path):
    """The (user, item, timestamp) rows of a sequence file, timestamps 0, 1, ... per user."""
    rows = {"user": [], "item": [], "timestamp": []}
    for line in path.read_text().splitlines():
        user, *items = map(int, line.split())
        rows["user"] += [user] * len(items)
        rows["item"] += items
        rows["timestamp"] += list(range(len(items)))
    return rows


def train_on(data, out, **options):
    options = {**OPTIONS, "epochs": 1, "kcore": 0, **options}
    return famerec.train(data=data, out=out, quiet=True, **options)


def test_pandas_frames_train_without_pyarrow(tmp_path, monkeypatch):
    pd = pytest.importorskip("pandas")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as where pyarrow is not installed
    rows = events(write_sequences(tmp_path / "s.txt", num_users=40, num_items=20))
    text = pl.DataFrame(rows).with_columns(
        ("u" + pl.col("user").cast(pl.String)).alias("user"),
        ("i" + pl.col("item").cast(pl.String)).alias("item"),
    )
    fingerprint = {
        "numbers": train_on(pl.DataFrame(rows), tmp_path / "polars numbers").metrics["dataset"],
        "text": train_on(text, tmp_path / "polars text").metrics["dataset"],
    }
    fingerprint = {kind: summary["fingerprint"] for kind, summary in fingerprint.items()}
    start = pd.Timestamp("2024-03-31", tz="Europe/Berlin")  # a clock change in the first days
    frames = {
        "text": pd.DataFrame(text.to_dict(as_series=False)),  # pandas 3: its str dtype
        "zoned times": pd.DataFrame(rows).assign(
            timestamp=lambda f: start + pd.to_timedelta(f.timestamp, unit="h")
        ),
        "categories, lists, objects": pd.DataFrame(text.to_dict(as_series=False)).assign(
            item=lambda f: f.item.astype("category"),
            tags=lambda f: [[1, 2]] * len(f),
            extra=lambda f: [object()] * len(f),
        ),
    }
    expected = {"text": "text", "zoned times": "numbers", "categories, lists, objects": "text"}
    for name, frame in frames.items():
        run = train_on(frame, tmp_path / name)
        assert run.metrics["dataset"]["fingerprint"] == fingerprint[expected[name]], name
        assert (run.path / "input.parquet").is_file()
    # a None among text ids: the row is left out, as a file's empty id would be
    with_none = pd.DataFrame(text.to_dict(as_series=False))
    with_none.loc[0, "user"] = None
    without = train_on(text.slice(1), tmp_path / "without")
    assert (
        train_on(with_none, tmp_path / "none").metrics["dataset"]["fingerprint"]
        == (without.metrics["dataset"]["fingerprint"])
    )
    # integer ids with a None: pandas stores them as floats, which are refused in one line
    # that says why and what to do (tests/data/test_id_columns.py); pandas' Int64 trains
    with_none = pd.DataFrame(rows)
    with_none.loc[0, "user"] = None
    assert with_none["user"].dtype == "float64"
    with pytest.raises(famerec.FamerecError, match="drop those rows first, or give the column"):
        train_on(with_none, tmp_path / "int-none")
    assert not (tmp_path / "int-none").exists()
    without = train_on(pl.DataFrame(rows).slice(1), tmp_path / "int-without")
    nullable = with_none.astype({"user": "Int64"})
    assert (
        train_on(nullable, tmp_path / "int64").metrics["dataset"]["fingerprint"]
        == (without.metrics["dataset"]["fingerprint"])
    )


@pytest.mark.parametrize(
    "column, values, words",
    [
        ("user", ["u1", 2], "column 'user': values of two types, integer and text"),
        ("item", [1.5, "x"], "column 'item': values of two types, number and text"),
        ("item", [[1], [2]], "column 'item': list values"),
        ("timestamp", [b"1", b"2"], "column 'timestamp': bytes values"),
    ],
)
def test_pandas_columns_of_mixed_types_are_refused_and_nothing_is_written(
    tmp_path, monkeypatch, column, values, words
):
    pd = pytest.importorskip("pandas")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    frame = pd.DataFrame({"user": [1, 1, 1, 2], "item": [1, 2, 3, 1], "timestamp": [0, 1, 2, 0]})
    frame[column] = pd.Series(values * 2, dtype=object)
    with pytest.raises(FamerecError, match=words) as caught:
        train_on(frame, tmp_path / "run")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_in_memory_data_is_written_only_once_read_checked_and_locked(tmp_path):
    rows = events(write_sequences(tmp_path / "s.txt", num_users=30, num_items=15))
    one_each = pl.DataFrame({"user": [1, 2], "item": [1, 2], "timestamp": [0, 0]})
    with pytest.raises(FamerecError, match="no user with at least 3 items"):
        train_on(one_each, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FamerecError, match="no column 'timestamp'"):
        train_on(pl.DataFrame(rows).drop("timestamp"), tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []
    with DirectoryLock(tmp_path / "held"):  # another famerec process writes this run
        with pytest.raises(InUseError):
            train_on(pl.DataFrame(rows), tmp_path / "held")
        assert [p.name for p in (tmp_path / "held").iterdir()] == [".lock"]


def test_init_from_trains_on_the_starting_runs_data(seq_file, tmp_path):
    options = {**OPTIONS, "hidden": 64, "quiet": True}
    sasrec = famerec.train(data=seq_file, out=tmp_path / "sasrec", **options)
    fame = famerec.train(model="fame", init_from=sasrec, out=tmp_path / "fame", **options)
    assert fame.metrics["dataset"] == sasrec.metrics["dataset"]
    assert fame.metrics["config"]["data"]["path"] == str(seq_file)
    with pytest.raises(FamerecError, match="it was trained on dataset 'tiny'"):
        famerec.train(
            model="fame", init_from=sasrec, dataset="beauty", out=tmp_path / "b", **options
        )
    assert not (tmp_path / "b").exists()
