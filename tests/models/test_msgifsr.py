import pytest
import torch
import torch.nn.functional as F

from famerec.config import ModelConfig, RunConfig
from famerec.errors import ConfigError
from famerec.models import build_model
from famerec.models.msgifsr import (
    MSGIFSR,
    Edges,
    GraphAttention,
    MSGIFSROptions,
    find_units,
    relation_edges,
)
from tests.conftest import tiny_overrides
from tests.models import session_checks

NUM_ITEMS = 30


def model(**options) -> MSGIFSR:
    torch.manual_seed(0)
    config = ModelConfig(name="msgifsr", hidden_size=16, num_heads=2, max_len=10, dropout=0.0)
    return build_model(config, NUM_ITEMS, MSGIFSROptions(**options)).eval()


def units_of(seq, k):
    """{end position: the unit's items} of granularity k, from find_units."""
    exists, _, _ = find_units(torch.tensor([seq]), 3)
    return {t: tuple(seq[t - k + 1 : t + 1]) for t in exists[k - 1, 0].nonzero().flatten().tolist()}


def test_units_are_real_consecutive_items():
    seq = [0, 0, 0, 5, 6, 7, 8]
    assert units_of(seq, 1) == {3: (5,), 4: (6,), 5: (7,), 6: (8,)}
    assert units_of(seq, 2) == {4: (5, 6), 5: (6, 7), 6: (7, 8)}
    assert units_of(seq, 3) == {5: (5, 6, 7), 6: (6, 7, 8)}
    for k in (2, 3):  # never padding inside a unit
        assert all(0 not in unit for unit in units_of(seq, k).values())
    short = [0, 0, 0, 0, 0, 4, 9]  # two items: no unit of three
    assert units_of(short, 2) == {6: (4, 9)} and units_of(short, 3) == {}
    assert units_of([0, 0, 0, 0, 0, 0, 3], 2) == {}


def test_repeated_units_are_one_node():
    seq = torch.tensor([[5, 6, 5, 6, 8]])
    _, first, nodes = find_units(seq, 3)
    assert first[0, 0].tolist() == [0, 1, 0, 1, 4]  # items 5 and 6 live where they first occur
    assert first[1, 0].tolist()[1:] == [1, 2, 1, 4]  # (5, 6) at 1 and 3 is one node
    assert nodes[1, 0].tolist() == [False, True, True, False, True]


def test_graph_edges_follow_the_session():
    seq = torch.tensor([[0, 0, 3, 4, 5, 6]])
    exists, first, _ = find_units(seq, 3)
    edges = {  # one session: flat node positions are its positions
        key: torch.stack([value.src, value.dst], 1).tolist()
        for key, value in relation_edges(first, exists).items()
    }
    assert edges[("intra1", 0, 0)] == [[2, 3], [3, 4], [4, 5]]  # item -> next item
    assert edges[("intra2", 1, 1)] == [[3, 4], [4, 5]]  # (3,4) -> (4,5) -> (5,6)
    assert edges[("intra3", 2, 2)] == [[4, 5]]  # (3,4,5) -> (4,5,6)
    assert edges[("inter", 0, 1)] == [[2, 4], [3, 5]]  # item 3 -> (4,5), item 4 -> (5,6)
    assert edges[("inter", 1, 0)] == [[3, 4], [4, 5]]  # (3,4) -> item 5, (4,5) -> item 6
    assert edges[("inter", 0, 2)] == [[2, 5]]  # item 3 -> (4,5,6)
    assert edges[("inter", 2, 0)] == [[4, 5]]  # (3,4,5) -> item 6


def test_graph_attention_is_a_softmax_over_each_nodes_incoming_edges():
    torch.manual_seed(0)
    gat = GraphAttention(hidden_size=4, heads=2, dropout=0.0)
    h = torch.randn(1, 3, 4)
    nodes = gat.nodes(h)  # W h (1, 3, 2, 4), a_l . W h and a_r . W h (1, 3, 2)
    edges = Edges(torch.tensor([0, 1, 0]), torch.tensor([2, 2, 1]))  # 0,1 -> 2; 0 -> 1
    out = gat(nodes, nodes, edges)  # (1, 3, 2, 4)
    ws, left, right = (x[0] for x in nodes)
    logits = F.leaky_relu(left[[0, 1]] + right[2], 0.2)  # (2 edges, H)
    expected = (torch.softmax(logits, 0)[..., None] * ws[[0, 1]]).sum(0) + gat.bias
    torch.testing.assert_close(out[0, 2], expected)
    torch.testing.assert_close(out[0, 1], ws[0] + gat.bias)  # its one edge has weight 1
    torch.testing.assert_close(out[0, 0], gat.bias)  # no incoming edge: the bias alone


def test_padding_never_reaches_a_readout():
    ms = model()
    expected = ms.score(torch.tensor([[3, 4, 3, 5]]))
    padded = ms.score(torch.tensor([[0, 0, 0, 3, 4, 3, 5]]))
    torch.testing.assert_close(padded, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        ms.item_embedding.weight[0] = torch.randn(16)
    moved = ms.score(torch.tensor([[0, 0, 3, 4, 3, 5]]))
    torch.testing.assert_close(moved, expected, atol=1e-5, rtol=1e-5)


def test_fusion_mixes_the_granularities_a_session_has():
    ms = model(scale=12.0)
    with torch.no_grad():
        ms.fusion.copy_(torch.tensor([0.5, -0.2, 0.3]))
    seq = torch.tensor([[0, 0, 2, 3, 4], [0, 0, 0, 6, 7]])  # the second has no unit of 3
    sessions, present = ms.sessions(seq)
    assert present.tolist() == [[True, True, True], [True, True, False]]
    items = F.normalize(ms.item_embedding.weight[1:], dim=-1)
    for row, k in ((0, 3), (1, 2)):
        weights = torch.softmax(ms.fusion[:k], -1)
        per_k = torch.softmax(12.0 * sessions[row, :k] @ items.T, -1)  # (k, V)
        expected = (weights[:, None] * per_k).sum(0).log()
        torch.testing.assert_close(ms.score(seq)[row, 1:], expected)
    items_only = model(fusion=False)
    sessions, _ = items_only.sessions(seq)
    expected = torch.log_softmax(12.0 * sessions[:, 0] @ items.T, -1)
    torch.testing.assert_close(items_only.score(seq)[:, 1:], expected)


def test_loss_is_the_mean_over_every_prefix():
    session_checks.check_loss_is_the_mean_over_every_prefix(model())


def test_invalid_options():
    base = tiny_overrides("unused.txt", **{"model.name": "msgifsr"})
    for key, value in (("granularities", 0), ("granularities", 13), ("graph_heads", 0)):
        with pytest.raises(ConfigError):
            RunConfig().with_overrides({**base, f"msgifsr.{key}": value}).validate()


class TestProtocol(session_checks.SessionProtocol):
    name = "msgifsr"
    flags = ["--granularities", "--graph-heads", "--scale", "--no-fusion"]
