"""--item-attributes: item vectors add the mean embedding of the item's attributes (a form of
"sub-embeddings tied to attribute embeddings"), for SASRec and FAME."""

import json

import pytest
import torch

from famerec.config import ModelConfig, RunConfig
from famerec.errors import ConfigError
from famerec.models import FAMEOptions, build_model
from famerec.runs.load import load_run
from famerec.training import resolve_config, train_run
from tests.conftest import tiny_overrides

NUM_ITEMS = 12


def members() -> torch.Tensor:
    """(V + 1, 4): item v has attribute v % 3 and, when even, attribute 3; item 12 has none."""
    matrix = torch.zeros(NUM_ITEMS + 1, 4, dtype=torch.uint8)
    for item in range(1, NUM_ITEMS):
        matrix[item, item % 3] = 1
        matrix[item, 3] = int(item % 2 == 0)
    return matrix


def model(name="sasrec", item_attributes="bundled", **options):
    torch.manual_seed(0)
    config = ModelConfig(
        name=name, hidden_size=64, num_heads=2, max_len=6, dropout=0.0,
        item_attributes=item_attributes,
    )  # fmt: skip
    extra = FAMEOptions(num_experts=2, **options) if name == "fame" else None
    return build_model(config, NUM_ITEMS, extra).eval()


def test_attribute_vectors_are_the_mean_of_the_items_attribute_embeddings():
    sasrec = model()
    sasrec.set_item_attributes(members())
    with torch.no_grad():
        sasrec.item_attribute_embedding.weight.normal_()
    table = sasrec.item_attribute_embedding.weight
    vectors = sasrec.attribute_vectors()  # (V + 1, d)
    assert torch.allclose(vectors[4], (table[1] + table[3]) / 2)  # 4 % 3 = 1, even
    assert torch.allclose(vectors[3], table[0])
    assert torch.equal(vectors[0], torch.zeros(64))  # padding
    assert torch.equal(vectors[NUM_ITEMS], torch.zeros(64))  # an item without attributes
    items = torch.tensor([[0, 3, 4]])
    assert torch.allclose(
        sasrec.item_inputs(items)[0, 2], sasrec.item_embedding.weight[4] + vectors[4]
    )
    assert torch.allclose(sasrec.item_vectors(), sasrec.item_embedding.weight + vectors)


@pytest.mark.parametrize("name", ["sasrec", "fame"])
def test_zero_at_first_then_trained(name):
    """A model with attributes starts with the plain model's scores, and learns the table."""
    plain, tied = model(name, item_attributes=None), model(name)
    tied.set_item_attributes(members())
    tied.load_state_dict(plain.state_dict(), strict=False)
    items = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    assert torch.allclose(tied.score(items), plain.score(items))
    tied.train()
    loss = tied.loss((items, torch.tensor([[0, 2, 3, 4, 5], [6, 7, 8, 9, 10]])))
    loss = loss if isinstance(loss, torch.Tensor) else sum(loss.values())
    loss.backward()
    assert tied.item_attribute_embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["gru4rec", "cl4srec", "duorec", "iclrec"])
def test_only_sasrec_and_fame_accept_it(name):
    with pytest.raises(ConfigError, match=f"--item-attributes is not available for {name}"):
        model(name)


def test_fame_starts_only_from_a_sasrec_with_the_same_attribute_table():
    from famerec.models.transfer import init_fame_from_sasrec

    sasrec = model()
    sasrec.set_item_attributes(members())
    with pytest.raises(ConfigError, match=r"item attribute embeddings \(4, 64\), this run none"):
        init_fame_from_sasrec(model("fame", item_attributes=None), sasrec)
    fame = model("fame")
    fame.set_item_attributes(members())
    with torch.no_grad():
        sasrec.item_attribute_embedding.weight.normal_()
    init_fame_from_sasrec(fame, sasrec)
    assert torch.equal(fame.item_attribute_embedding.weight, sasrec.item_attribute_embedding.weight)


def test_runs_save_load_and_pass_the_attributes_on_to_fame(seq_file, tmp_path):
    attributes = tmp_path / "attributes.json"
    attributes.write_text(json.dumps({str(i): [i % 4, 4 + i % 3] for i in range(1, 41)}))
    base = tiny_overrides(seq_file, **{"model.hidden_size": 64})
    sasrec = RunConfig().with_overrides({**base, "model.item_attributes": str(attributes)})
    train_run(sasrec.validate(), tmp_path / "sasrec", progress=False)
    run = load_run(tmp_path / "sasrec")
    table = run.model.item_attribute_embedding.weight
    assert table.shape == (7, 64) and table.abs().sum() > 0  # trained away from zero
    fame = RunConfig().with_overrides(
        {**base, "model.name": "fame", "model.item_attributes": str(attributes),
         "train.init_from": str(tmp_path / "sasrec"), "train.epochs": 1}
    )  # fmt: skip
    train_run(fame.validate(), tmp_path / "fame", progress=False)
    loaded = load_run(tmp_path / "fame")
    items = torch.tensor([[0, 0, 1, 2, 3]])
    with torch.no_grad():
        assert torch.isfinite(loaded.model.score(items)[:, 1:]).all()
    # the plain SASRec run can start a run with attributes (the table starts at zero)
    plain = RunConfig().with_overrides(base)
    train_run(plain.validate(), tmp_path / "plain", progress=False)
    more = RunConfig().with_overrides(
        {
            **base,
            "model.item_attributes": str(attributes),
            "train.init_from": str(tmp_path / "plain"),
        }
    )
    train_run(more.validate(), tmp_path / "more", progress=False)


def test_a_run_keeps_its_attribute_file_and_loads_without_the_original(
    seq_file, tmp_path, monkeypatch
):
    """Given from Python with a relative path, moved elsewhere, the original file deleted."""
    monkeypatch.chdir(tmp_path)
    attributes = tmp_path / "attributes.json"
    attributes.write_text(json.dumps({str(i): [i % 4] for i in range(1, 41)}))
    base = tiny_overrides(seq_file, **{"model.hidden_size": 64, "train.epochs": 1})
    config = RunConfig().with_overrides({**base, "model.item_attributes": "attributes.json"})
    train_run(config.validate(), tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["item_attributes"] == str(attributes)  # made absolute
    scores = load_run(tmp_path / "run").model.score(torch.tensor([[0, 1, 2, 3]]))
    attributes.unlink()
    (tmp_path / "run").rename(tmp_path / "moved")
    moved = load_run(tmp_path / "moved").model.score(torch.tensor([[0, 1, 2, 3]]))
    assert torch.equal(moved, scores)


def test_a_run_resumes_from_its_own_copy_of_the_attribute_file_wherever_it_lies(seq_file, tmp_path):
    attributes = tmp_path / "attributes.json"
    attributes.write_text(json.dumps({str(i): [i % 4] for i in range(1, 41)}))
    base = tiny_overrides(seq_file, **{"model.hidden_size": 64, "train.epochs": 2})
    config = RunConfig().with_overrides({**base, "model.item_attributes": str(attributes)})
    assert train_run(config.validate(), tmp_path / "run", progress=False, stop_after=1) is None
    moved = tmp_path / "elsewhere.json"
    attributes.rename(moved)
    with pytest.raises(ConfigError, match="not the same files"):
        resolve_config(tmp_path / "run", {"model.item_attributes": str(seq_file)}, resume=True)
    config = resolve_config(tmp_path / "run", {"model.item_attributes": str(moved)}, resume=True)
    moved.unlink()
    metrics = train_run(config, tmp_path / "run", resume=True, progress=False)
    assert metrics["epochs_run"] == 2
