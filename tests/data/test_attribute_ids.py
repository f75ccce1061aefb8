"""Item attributes as sparse indices: any id from 0 to 2**63 - 1, no table that grows with the
largest id, one line for an id out of range, and runs saved with the old table still load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from famerec.cli import main
from famerec.data.attributes import DIRECT_IDS, ItemAttributes, read_attributes
from famerec.data.sequences import from_user_sequences
from famerec.errors import DataError
from famerec.runs.load import load_run
from tests.conftest import write_sequences
from tests.test_cli import assert_one_line_error

FLAGS = ["--hidden", "64", "--max-len", "10", "--epochs", "1", "--batch-size", "32"]
FLAGS += ["--threads", "1"]
BILLION = 1_000_000_000


def train(tmp_path, *extra, out="run"):
    data = tmp_path / "s.txt"
    if not data.exists():
        write_sequences(data, num_users=60, num_items=25)
    return main(["-q", "train", "--data", str(data), "--out", str(tmp_path / out), *FLAGS, *extra])


def attribute_file(tmp_path, by_item: dict, name="attributes.json"):
    path = tmp_path / name
    path.write_text(json.dumps(by_item))
    return str(path)


def small_data():
    """Three items with original ids 10, 20, 30 (internal 1, 2, 3)."""
    sequences = [np.array([1, 2, 3, 1]), np.array([2, 3, 1, 2])]
    return from_user_sequences("small", np.array([1, 2]), sequences, np.array([10, 20, 30]))


@pytest.mark.parametrize(
    "value, words",
    [
        (2**70, ["1180591620717411303424 is out of range"]),
        (2**63, ["9223372036854775808 is out of range"]),
        (-1, ["-1 is out of range"]),
        (True, ["true is not an integer"]),
        (1.5, ["1.5 is not an integer"]),
        ("7", ['"7" is not an integer']),
    ],
)
def test_an_attribute_id_out_of_range_is_one_line_naming_file_and_item(
    tmp_path, capsys, value, words
):
    path = attribute_file(tmp_path, {"1": [3], "2": [4, value]})
    code = train(tmp_path, "--item-attributes", path)
    assert_one_line_error(code, capsys.readouterr().err, path, "item '2'", *words)
    assert not (tmp_path / "run").exists()  # nothing written


def test_fame_attributes_are_checked_the_same_way(tmp_path, capsys):
    path = attribute_file(tmp_path, {"5": [2**64]})
    code = train(tmp_path, "--model", "fame", "--attribute-weight", "1", "--attributes", path)
    assert_one_line_error(code, capsys.readouterr().err, path, "item '5'", "out of range")
    assert not (tmp_path / "run").exists()


def test_a_list_is_required_per_item(tmp_path):
    path = attribute_file(tmp_path, {"10": [1], "20": 3})
    with pytest.raises(DataError, match="item '20': attributes must be a list of attribute ids"):
        read_attributes(path, small_data())


def test_small_ids_are_their_own_columns_large_ones_a_compact_vocabulary():
    small = ItemAttributes.from_lists({1: [3, 1, 3], 3: [5]}, num_items=3)
    assert small.vocabulary.tolist() == list(range(6))  # as tables indexed by id always were
    assert small.offsets.tolist() == [0, 0, 2, 2, 3]
    assert small.columns.tolist() == [1, 3, 5]  # sorted, each once
    large = ItemAttributes.from_lists({1: [BILLION, 7], 2: [2**63 - 1], 3: [7]}, num_items=3)
    assert large.vocabulary.tolist() == [0, 7, BILLION, 2**63 - 1]  # 0, then the ids in order
    assert large.columns.tolist() == [1, 2, 3, 1]
    dense = large.rows(torch.arange(4))
    assert dense.shape == (4, 4) and dense.dtype == torch.uint8
    assert dense.tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0]]
    assert DIRECT_IDS == 2**16


def test_sparse_rows_are_the_dense_matrix():
    generator = torch.Generator().manual_seed(0)
    members = (torch.rand(9, 6, generator=generator) < 0.4).to(torch.uint8)
    members[0] = 0
    sparse = ItemAttributes.from_matrix(members)
    items = torch.tensor([[1, 8, 8], [0, 3, 5]])
    assert torch.equal(sparse.rows(items), members[items])
    keep = torch.tensor([True, False, True, True, False, True])
    assert torch.equal(sparse.select(keep).rows(torch.arange(9)), members[:, keep])
    both = ItemAttributes.side_by_side([sparse, sparse.select(keep)])
    assert torch.equal(both.rows(torch.arange(9)), torch.cat([members, members[:, keep]], 1))


def test_a_billion_trains_serves_and_analyses_with_a_small_table(tmp_path, capsys):
    """Before: a dense items x (largest id + 1) table (1e9 columns: terabytes)."""
    by_item = {str(i): [BILLION + i % 3, 5 * BILLION * (i % 2)] for i in range(1, 26)}
    path = attribute_file(tmp_path, by_item)
    assert train(tmp_path, "--item-attributes", path) == 0
    table = load_run(tmp_path / "run").model.item_attribute_embedding.weight
    assert table.shape == (5, 64)  # id 0, three ids near a billion, five billion
    pressure = ["--model", "fame", "--attribute-weight", "1", "--attributes", path]
    assert train(tmp_path, *pressure, "--item-attributes", path, out="fame") == 0
    capsys.readouterr()
    assert main(["explain", "--run", str(tmp_path / "fame"), "--facets", "--attributes", path]) == 0
    assert str(BILLION) in capsys.readouterr().out  # the table names the file's ids
    code = main(
        ["explain", "--run", str(tmp_path / "fame"), "--facets", "--json", "--attributes", path]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    shown = {a["attribute"] for row in report["lists"] for a in row.get("top_attributes", [])}
    assert shown <= {0, BILLION, BILLION + 1, BILLION + 2, 5 * BILLION}  # the file's own ids


def test_a_run_saved_with_a_table_row_per_id_still_loads_and_scores_the_same(tmp_path):
    """Runs before the compact vocabulary kept a row for every id 0..largest; such a run (here
    made by writing its table back in that layout) loads, and scores as it did."""
    by_item = {str(i): [i % 4, 70_000 + i % 3] for i in range(1, 26)}
    path = attribute_file(tmp_path, by_item)
    assert train(tmp_path, "--item-attributes", path) == 0
    run = load_run(tmp_path / "run")
    vocabulary = run.model.attribute_vocabulary
    assert vocabulary.tolist() == [0, 1, 2, 3, 70_000, 70_001, 70_002]
    items = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    with torch.no_grad():
        before = run.model.score(items)
    weights = tmp_path / "run" / "model.safetensors"
    state = load_file(weights)
    compact = state["item_attribute_embedding.weight"]
    old = torch.randn(70_003, compact.shape[1])  # rows of unused ids: never read
    old[vocabulary] = compact
    state["item_attribute_embedding.weight"] = old
    save_file(state, weights)
    loaded = load_run(tmp_path / "run").model
    assert loaded.item_attribute_embedding.weight.shape == compact.shape
    with torch.no_grad():
        assert torch.equal(loaded.score(items), before)
    # the optimizer's moments of such a table (a checkpoint to resume) fit the same way
    optimizer = torch.optim.Adam(loaded.parameters())
    optimizer.state[loaded.item_attribute_embedding.weight] = {
        "step": torch.tensor(3.0), "exp_avg": old.clone(), "exp_avg_sq": old.abs()
    }  # fmt: skip
    loaded.by_column_moments(optimizer)
    moments = optimizer.state[loaded.item_attribute_embedding.weight]
    assert torch.equal(moments["exp_avg"], compact) and moments["step"] == 3
