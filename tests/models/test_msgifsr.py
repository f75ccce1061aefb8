import pytest
import torch
import torch.nn.functional as F

from famerec.config import ModelConfig, RunConfig
from famerec.data.batching import TrainBatch, prefix_batch
from famerec.errors import ConfigError
from famerec.models import build_model, msgifsr
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
    h = torch.randn(3, 4)
    nodes = gat.nodes(h)  # W h (3, 2, 4), a_l . W h and a_r . W h (3, 2)
    edges = Edges(torch.tensor([0, 1, 0]), torch.tensor([2, 2, 1]))  # 0,1 -> 2; 0 -> 1
    out = gat(nodes, nodes, edges)  # (3, 2, 4)
    ws, left, right = nodes
    logits = F.leaky_relu(left[[0, 1]] + right[2], 0.2)  # (2 edges, H)
    expected = (torch.softmax(logits, 0)[..., None] * ws[[0, 1]]).sum(0) + gat.bias
    torch.testing.assert_close(out[2], expected)
    torch.testing.assert_close(out[1], ws[0] + gat.bias)  # its one edge has weight 1
    torch.testing.assert_close(out[0], gat.bias)  # no incoming edge: the bias alone


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


# The computation before the graphs were cut to their nodes (main 0719ca8), as the reference:
# dense (B, L) positions per granularity, masks instead of node lists.


def reference_units(embedding, x, exists):
    batch, length, hidden = x.shape
    vectors = [x * exists[0].unsqueeze(-1)]
    for k, gru in enumerate(embedding.grus, start=2):
        windows = F.pad(x, (0, 0, k - 1, 0)).unfold(1, k, 1).transpose(2, 3)  # (B, L, k, d)
        _, state = gru(windows.reshape(batch * length, k, hidden))
        unit = 0.5 * windows.mean(2) + 0.5 * state[0].view(batch, length, hidden)
        vectors.append(unit * exists[k - 1].unsqueeze(-1))
    return vectors


def reference_attention(conv, h_src, h_dst, edges):
    batch, length, hidden = h_src.shape
    weight = conv.project.weight.view(conv.heads, -1, hidden)
    ws = conv.project(h_src).view(batch * length, conv.heads, -1)
    left = (h_src @ torch.einsum("hoi,ho->ih", weight, conv.attn_src)).flatten(0, 1)
    right = (h_dst @ torch.einsum("hoi,ho->ih", weight, conv.attn_dst)).flatten(0, 1)
    logits = F.leaky_relu(left[edges.src] + right[edges.dst], 0.2)
    index = edges.dst[:, None].expand_as(logits)
    peak = torch.full_like(right, float("-inf")).scatter_reduce(0, index, logits, "amax")
    weights = (logits - peak.detach()[edges.dst]).exp()
    weights = weights / torch.zeros_like(right).index_add(0, edges.dst, weights)[edges.dst]
    messages = torch.zeros_like(ws).index_add(0, edges.dst, weights[..., None] * ws[edges.src])
    return messages.view(batch, length, conv.heads, -1) + conv.bias


def reference_layer(layer, h, nodes, relations):
    out, residuals = [0.0] * len(h), [0] * len(h)
    for (name, src, dst), edges in relations.items():
        forward, backward = layer.forward_conv[name], layer.backward_conv[name]
        out[dst] = out[dst] + reference_attention(forward, h[src], h[dst], edges)
        out[src] = out[src] + reference_attention(backward, h[dst], h[src], edges.reversed())
        residuals[dst] += 1
        residuals[src] += 1
    new = []
    for k, vectors in enumerate(out):
        mask = nodes[k].unsqueeze(-1)
        vectors = vectors + residuals[k] * h[k].unsqueeze(2)
        mean = (h[k] * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)
        new.append((vectors.max(2).values + mean) * mask)
    return new


def reference_readout(readout, nodes, node_mask, last):
    keys = torch.einsum("bnd,kde->bkne", nodes, readout.key) + readout.key_bias[:, None]
    queries = torch.einsum("bkd,kde->bke", last, readout.query)
    logits = torch.einsum("bkne,ke->bkn", torch.sigmoid(keys + queries[:, :, None]), readout.score)
    weights = torch.softmax(logits.masked_fill(~node_mask[:, None], float("-inf")), -1)
    readout_vectors = torch.einsum("bkn,bnd->bkd", weights, nodes)
    sessions = torch.einsum("bkd,kde->bke", torch.cat([last, readout_vectors], -1), readout.out)
    return F.normalize(sessions, dim=-1)


def reference_sessions(ms, item_seq):
    exists, first, nodes = find_units(item_seq, ms.options.granularities)
    x = ms.item_embedding(item_seq)
    x = x / x.norm(dim=-1, keepdim=True).clamp(min=1.0)
    units = reference_units(ms.unit_embedding, x, exists)
    h = [F.normalize(u, dim=-1) * n.unsqueeze(-1) for u, n in zip(units, nodes)]
    relations = relation_edges(first, exists)
    for layer in ms.layers:
        h = reference_layer(layer, h, nodes, relations)
    h = [F.normalize(vectors, dim=-1) for vectors in h]
    last = torch.stack([v[torch.arange(len(v)), f[:, -1]] for v, f in zip(h, first)], 1)
    node_mask = nodes.permute(1, 0, 2).reshape(len(item_seq), -1)
    sessions = reference_readout(ms.readout, torch.cat(h, 1), node_mask, last)
    return sessions, exists[:, :, -1].T


def reference_loss(ms, batch):
    items = ms.item_vectors()[1:]
    losses = []
    for item_seq, target in prefix_batch(TrainBatch((batch,), 0)).parts:
        sessions, present = reference_sessions(ms, item_seq)
        normalizer = torch.logsumexp(ms.options.scale * sessions @ items.T, -1)
        positive = ms.options.scale * (sessions @ items[target[:, -1] - 1].unsqueeze(-1))
        log_p = (ms.fusion_weights(present) + positive.squeeze(-1) - normalizer).logsumexp(1)
        losses.append(-log_p)
    return torch.cat(losses).mean()


def random_batch(seed: int, rows: int = 12, width: int = 10):
    """Left-padded random sequences (with repeated items and units) and their next items."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (rows,), generator=generator)
    items = torch.randint(1, 8, (rows, width + 1), generator=generator)  # few items: repeats
    real = torch.arange(width + 1) >= width + 1 - (lengths[:, None] + 1)
    items = items * real
    return items[:, :-1], items[:, 1:] * real[:, :-1]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("layers", [1, 2])
def test_node_graphs_match_the_reference(seed, layers):
    """Computing on the nodes only changes nothing: the same session vectors, scores, loss
    and parameter gradients as the dense computation (dropout off; float64, so that only
    rounding can differ)."""
    torch.manual_seed(seed)
    config = ModelConfig(name="msgifsr", hidden_size=16, max_len=10, dropout=0.0, num_layers=layers)
    ms = build_model(config, NUM_ITEMS, MSGIFSROptions(graph_heads=3)).double().eval()
    with torch.no_grad():
        ms.fusion.copy_(torch.tensor([0.5, -0.2, 0.3]))
    inputs, targets = random_batch(seed)
    sessions, present = ms.sessions(inputs)
    expected, expected_present = reference_sessions(ms, inputs)
    assert torch.equal(present, expected_present)
    torch.testing.assert_close(sessions, expected, atol=1e-12, rtol=1e-10)
    names, parameters = zip(*ms.named_parameters())
    expected_loss = reference_loss(ms, (inputs, targets))
    expected_grads = torch.autograd.grad(expected_loss, parameters)
    loss = ms.loss((inputs, targets))
    torch.testing.assert_close(loss, expected_loss, atol=1e-12, rtol=1e-10)
    for name, grad, expected in zip(names, torch.autograd.grad(loss, parameters), expected_grads):
        torch.testing.assert_close(grad, expected, atol=1e-12, rtol=1e-9, msg=name)


def test_loss_in_chunks_and_under_bf16_autocast(monkeypatch):
    ms = model().train()
    inputs, targets = random_batch(5)
    expected = ms.loss((inputs, targets)).detach()
    monkeypatch.setattr(msgifsr, "SCORE_CHUNK", 2 * NUM_ITEMS)  # two rows per chunk
    torch.testing.assert_close(ms.loss((inputs, targets)).detach(), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = ms.loss((inputs, targets))
    low.backward()  # runs, with float32 gradients
    torch.testing.assert_close(low.detach(), expected, atol=0.05, rtol=0.02)
    assert {p.grad.dtype for p in ms.parameters()} == {torch.float32}
    assert all(p.grad.isfinite().all() for p in ms.parameters())
