"""FAME's facet-pressure terms: attribute supervision per head, gate balance, head
diversity. Each is off by default and adds a named loss beside the unchanged next-item loss."""

import json
import math

import numpy as np
import pytest
import torch

from famerec.config import ModelConfig, RunConfig
from famerec.data import load_dataset
from famerec.data.sequences import SequenceData, from_user_sequences
from famerec.errors import ConfigError, DataError
from famerec.models import FAME, FAMEOptions, build_model
from famerec.models.losses import gate_balance_loss

NUM_ITEMS = 30
GENRE = torch.arange(NUM_ITEMS + 1) % 3  # item v has genre v % 3 (row 0: padding)
ACTOR = torch.arange(NUM_ITEMS + 1) % 5  # and actor v % 5


def fame(heads=2, **options) -> FAME:
    torch.manual_seed(0)
    config = ModelConfig(name="fame", hidden_size=64, num_heads=heads, max_len=8, dropout=0.0)
    model = build_model(config, NUM_ITEMS, FAMEOptions(num_experts=2, **options)).eval()
    assert isinstance(model, FAME)
    return model


def planted_members() -> tuple[torch.Tensor, torch.Tensor]:
    """(V + 1, 8) membership: columns 0-2 genres (kind 0), 3-7 actors (kind 1)."""
    members = torch.zeros(NUM_ITEMS + 1, 8, dtype=torch.uint8)
    items = torch.arange(1, NUM_ITEMS + 1)
    members[items, GENRE[items]] = 1
    members[items, 3 + ACTOR[items]] = 1
    return members, torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])


def with_attributes(heads=2, **options) -> FAME:
    model = fame(heads=heads, attribute_weight=1.0, **options)
    model.set_attributes(*planted_members())
    return model


torch.manual_seed(1)
SEQ = torch.randint(1, NUM_ITEMS + 1, (4, 6))
TARGETS = torch.randint(1, NUM_ITEMS + 1, (4, 6))
TARGETS[0, :2] = 0  # padding: no loss


def real_states(model: FAME) -> torch.Tensor:
    return model.facets(SEQ).head_states[TARGETS != 0]  # (P, H, d')


@pytest.mark.parametrize("fusion", ["score", "softmax"])
@pytest.mark.parametrize(
    "options",
    [
        {"attribute_weight": 0.5},
        {"attribute_gate_weight": 0.5},
        {"gate_balance_weight": 0.5},
        {"head_diversity_weight": 0.5},
    ],
)
def test_the_next_item_loss_is_unchanged_and_each_term_is_weighted(fusion, options):
    old = fame(fusion=fusion).loss((SEQ, TARGETS))
    model = fame(fusion=fusion, **options)
    if "gate_balance_weight" not in options and "head_diversity_weight" not in options:
        model.set_attributes(*planted_members())
    losses = model.loss((SEQ, TARGETS))
    assert torch.equal(losses["next_item"], old)  # exactly the old loss
    (name,) = set(losses) - {"next_item"}
    assert losses[name].shape == ()
    double = fame(fusion=fusion, **{k: 2 * v for k, v in options.items()})
    if "gate_balance_weight" not in options and "head_diversity_weight" not in options:
        double.set_attributes(*planted_members())
    torch.testing.assert_close(double.loss((SEQ, TARGETS))[name], 2 * losses[name])


def test_zero_weights_are_the_old_loss_exactly():
    zero = {"attribute_weight": 0.0, "attribute_gate_weight": 0.0, "gate_balance_weight": 0.0}
    model = fame(head_diversity_weight=0.0, **zero)
    loss = model.loss((SEQ, TARGETS))
    assert isinstance(loss, torch.Tensor)
    assert torch.equal(loss, fame().loss((SEQ, TARGETS)))


def test_attribute_loss_matches_its_definition():
    """Head k scores attribute a of kind k by F^(k) . mean_{v has a} x_v W_f^(k)."""
    model = with_attributes()
    states = real_states(model)  # (P, H, d')
    targets = TARGETS[TARGETS != 0]
    x, w_f = model.item_embedding.weight, model.facet_layer.facet_projection
    expected = []
    for head, labels in ((0, GENRE), (1, ACTOR)):
        values = int(labels[1:].max()) + 1
        prototypes = torch.stack(
            [(x[1:][labels[1:] == a] @ w_f[head]).mean(0) for a in range(values)]
        )  # (A_k, d')
        logits = states[:, head] @ prototypes.T  # (P, A_k)
        expected.append(torch.nn.functional.cross_entropy(logits, labels[targets]))
    loss = model.attribute_loss(*model.attribute_log_likelihoods(states, targets))
    torch.testing.assert_close(loss, torch.stack(expected).mean(), rtol=1e-5, atol=1e-6)


def test_several_attributes_of_a_kind_are_a_uniform_target():
    members = torch.zeros(NUM_ITEMS + 1, 3, dtype=torch.uint8)
    members[1:, 0] = 1
    members[1:, 1] = 1  # every item has attributes 0 and 1 of the one kind
    members[5, 2] = 1
    model = fame(attribute_weight=1.0)
    model.set_attributes(members, torch.zeros(3, dtype=torch.long))
    states = real_states(model)
    targets = torch.full((len(states),), 3)  # item 3: attributes 0 and 1
    loss = model.attribute_loss(*model.attribute_log_likelihoods(states, targets))
    assert model.num_attribute_kinds == 1
    x, w_f = model.item_embedding.weight, model.facet_layer.facet_projection[0]
    prototypes = torch.stack([(x[1:] @ w_f).mean(0), (x[1:] @ w_f).mean(0), x[5] @ w_f])
    log_p = torch.log_softmax(states[:, 0] @ prototypes.T, -1)  # head 1 only
    torch.testing.assert_close(loss, -(log_p[:, :2].mean(1)).mean(), rtol=1e-5, atol=1e-6)


def test_attribute_loss_reaches_its_heads_and_not_the_gate():
    """Kind 1 only, with 2 heads: head 1's W_f^(1) and the items learn, head 2's W_f^(2) and
    the gate get nothing from it."""
    members, kinds = planted_members()
    model = fame(attribute_weight=1.0).train()
    model.set_attributes(members[:, :3], kinds[:3])
    model.loss((SEQ, TARGETS))["attributes"].backward()
    layer = model.facet_layer
    assert layer.facet_projection.grad[0].abs().sum() > 0
    assert torch.equal(layer.facet_projection.grad[1], torch.zeros_like(layer.facet_projection[1]))
    assert model.item_embedding.weight.grad.abs().sum() > 0
    assert layer.attention.expert_queries.weight.grad.abs().sum() > 0
    assert layer.head_gate.weight.grad is None


def test_attribute_gate_target_is_the_posterior_over_kinds():
    """Kind 1 explains the next item better than kind 2 -> the gate is pulled to head 1."""
    model = fame(attribute_gate_weight=1.0)
    model.set_attributes(*planted_members())
    log_likelihood = torch.log(torch.tensor([[0.8, 0.1], [0.5, 0.5], [0.3, 0.9]]))
    known = torch.tensor([[True, True], [True, True], [True, False]])  # row 3: one kind only
    gate = torch.tensor([[0.6, 0.4], [0.5, 0.5], [0.1, 0.9]], requires_grad=True)
    loss = model.attribute_gate_loss(gate, log_likelihood, known)
    posterior = torch.tensor([[8 / 9, 1 / 9], [0.5, 0.5]])
    expected = -(posterior * gate[:2].log()).sum() / 2
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, gate)
    assert grad[0, 0] < grad[0, 1]  # descent raises head 1's weight for row 1
    assert torch.equal(grad[2], torch.zeros(2))  # nothing to compare for row 3


def test_attribute_gate_reaches_the_gate_only():
    """The posterior is held fixed: the term trains the gate (and what feeds it), not W_f."""
    model = fame(attribute_gate_weight=1.0).train()
    model.set_attributes(*planted_members())
    model.loss((SEQ, TARGETS))["attribute_gate"].backward()
    layer = model.facet_layer
    assert layer.head_gate.weight.grad.abs().sum() > 0
    assert layer.facet_projection.grad is None


def test_gate_balance_reaches_the_gate_and_not_the_sub_embeddings():
    model = fame(gate_balance_weight=1.0).train()
    model.loss((SEQ, TARGETS))["gate_balance"].backward()
    layer = model.facet_layer
    assert layer.head_gate.weight.grad.abs().sum() > 0
    assert layer.attention.expert_queries.weight.grad.abs().sum() > 0
    assert layer.facet_projection.grad is None


def test_head_diversity_reaches_the_heads_and_not_the_gate():
    model = fame(head_diversity_weight=1.0).train()
    model.loss((SEQ, TARGETS))["head_diversity"].backward()
    layer = model.facet_layer
    assert layer.facet_projection.grad.abs().sum() > 0
    assert layer.attention.expert_queries.weight.grad.abs().sum() > 0
    assert layer.head_gate.weight.grad is None


def test_gate_balance_values():
    h = 4
    one_hot = torch.eye(h).repeat(3, 1)  # (12, H) every head chosen by a quarter of the rows
    assert math.isclose(float(gate_balance_loss(one_hot)), -math.log(h), rel_tol=1e-6)
    uniform = torch.full((12, h), 1 / h)
    assert abs(float(gate_balance_loss(uniform))) < 1e-6  # no confidence: 0
    collapsed = torch.eye(h)[[0] * 12]  # confident, one head for everybody: 0
    assert abs(float(gate_balance_loss(collapsed))) < 1e-6


def test_head_diversity_is_the_squared_correlation_of_the_heads_scores():
    model = fame(heads=4, head_diversity_weight=1.0)
    states = real_states(model)  # (P, H, d')
    scores = torch.einsum(
        "vd,hde,phe->phv",
        model.item_embedding.weight[1:],
        model.facet_layer.facet_projection,
        states,
    )  # (P, H, V) every head's score of every item, Eq. 8
    centered = scores - scores.mean(-1, keepdim=True)
    unit = centered / centered.norm(dim=-1, keepdim=True)
    correlation = unit @ unit.transpose(1, 2)  # (P, H, H)
    pairs = ~torch.eye(4, dtype=torch.bool)
    expected = correlation[:, pairs].pow(2).mean()
    torch.testing.assert_close(model.head_diversity_loss(states), expected, rtol=1e-4, atol=1e-6)
    same = fame(heads=2)
    with torch.no_grad():
        same.facet_layer.facet_projection[1] = same.facet_layer.facet_projection[0]
    twin = real_states(same)[:, :1].expand(-1, 2, -1)  # head 2 = head 1
    torch.testing.assert_close(same.head_diversity_loss(twin), torch.tensor(1.0))


def test_attributes_are_buffers_not_weights():
    model = with_attributes()
    assert set(model.state_dict()) == set(fame().state_dict())  # runs load without them


def planted_data() -> SequenceData:
    """Internal item j has the original id 10 j."""
    item_ids = np.arange(1, NUM_ITEMS + 1) * 10
    sequences = [np.arange(1, NUM_ITEMS + 1)]
    return from_user_sequences("planted", np.array([1]), sequences, item_ids)


def write_kind(path, labels: torch.Tensor, skip=()) -> str:
    by_original = {str(10 * v): [int(labels[v])] for v in range(1, NUM_ITEMS + 1) if v not in skip}
    by_original["99999"] = [7]  # an item the data does not have: ignored
    path.write_text(json.dumps(by_original))
    return str(path)


def test_attach_data_reads_one_file_per_kind(tmp_path):
    genre = write_kind(tmp_path / "genre.json", GENRE)
    actor = write_kind(tmp_path / "actor.json", ACTOR, skip=(4,))  # item 4 has no actor
    model = fame(attribute_weight=1.0, attributes=f"{genre},{actor}")
    model.attach_data(planted_data())
    members, kinds = planted_members()
    members[4, 3 + ACTOR[4]] = 0
    assert torch.equal(model.item_attributes, members)
    assert torch.equal(model.attribute_kind, kinds)
    assert model.num_attribute_kinds == 2
    assert torch.isfinite(model.loss((SEQ, TARGETS))["attributes"])


def test_attach_data_errors(tmp_path):
    model = fame(attribute_weight=1.0, attributes=str(tmp_path / "missing.json"))
    with pytest.raises(DataError, match="cannot read attributes"):
        model.attach_data(planted_data())
    (tmp_path / "empty.json").write_text("{}")
    model = fame(attribute_weight=1.0, attributes=str(tmp_path / "empty.json"))
    with pytest.raises(DataError, match="no item of the data has an attribute of kind 1"):
        model.attach_data(planted_data())
    (tmp_path / "bad.json").write_text('{"10": "genre"}')
    model = fame(attribute_weight=1.0, attributes=str(tmp_path / "bad.json"))
    with pytest.raises(DataError, match="JSON object"):
        model.attach_data(planted_data())
    model = fame(attribute_weight=1.0)  # default: bundled attributes, which 'planted' has not
    with pytest.raises(ConfigError, match="no item attributes for dataset 'planted'"):
        model.attach_data(planted_data())
    untrained = fame(attribute_weight=1.0)
    with pytest.raises(ConfigError, match="call attach_data"):
        untrained.loss((SEQ, TARGETS))


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"fame.attribute_weight": -1.0}, "--attribute-weight must be 0 or more"),
        ({"fame.gate_balance_weight": -0.1}, "--gate-balance-weight must be 0 or more"),
        ({"fame.attributes": "a.json"}, "set one above 0"),
        ({"fame.attribute_gate_weight": 1.0, "fame.attributes": "a.json"}, "2 or more kinds"),
        (
            {"fame.attribute_weight": 1.0, "fame.attributes": "a.json,b.json,c.json"},
            "3 attribute kinds, more than the 2 heads",
        ),
        ({"model.num_heads": 1, "fame.head_diversity_weight": 1.0}, "need --heads 2+"),
    ],
)
def test_invalid_options(overrides, words):
    with pytest.raises(ConfigError, match=words):
        RunConfig().with_overrides({"model.name": "fame", **overrides}).validate()


def test_trains_with_attribute_files_and_loads_without_them(seq_file, tmp_path):
    from famerec.runs.load import load_run
    from famerec.training import train_run
    from tests.conftest import tiny_overrides

    data = load_dataset(RunConfig().with_overrides(tiny_overrides(seq_file)).data)
    kinds = []
    for name, modulus in (("a", 3), ("b", 4)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({str(i): [int(i) % modulus] for i in data.item_ids}))
        kinds.append(str(path))
    overrides = tiny_overrides(
        seq_file,
        **{"model.name": "fame", "model.hidden_size": 64, "fame.attribute_weight": 0.5},
        **{"fame.attributes": ",".join(kinds), "fame.gate_balance_weight": 0.1},
    )
    train_run(RunConfig().with_overrides(overrides), tmp_path / "run", progress=False)
    log = [json.loads(r) for r in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert {"next_item", "attributes", "gate_balance"} <= set(log[0]["train_losses"])
    saved = json.loads((tmp_path / "run/config.json").read_text())["fame"]
    assert saved["attribute_weight"] == 0.5 and saved["attributes"] == ",".join(kinds)
    assert saved["gate_balance_weight"] == 0.1 and saved["head_diversity_weight"] == 0.0
    run = load_run(tmp_path / "run")
    assert run.model.score(SEQ[:, -5:] % 5 + 1).shape[1] == data.num_items + 1
