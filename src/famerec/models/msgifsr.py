"""MSGIFSR (Guo et al., WSDM 2022): multi-granularity consecutive intent units on a
heterogeneous session graph, fused in the ranking.

"Learning Multi-granularity Consecutive User Intent Unit for Session-based Recommendation".
Follows the paper and the authors' code (github.com/SpaceLearner/SessionRec-pytorch,
`src/models/msgifsr.py`, graphs from `src/utils/data/collate.py::seq_to_ccs_graph`, defaults
from `src/scripts/main_msgifsr.py`), written with per-session tensors and edge lists instead
of DGL:

* session intent units (SIUs): for k = 1..K, every run of k consecutive items of the session
  is a unit of granularity k; identical units (the same k items in the same order) are one
  node, as items are in SR-GNN-style session graphs. A unit's vector is 0.5 * the mean of its
  items' embeddings + 0.5 * the last state of a GRU of its own granularity over them (k = 1:
  the item's embedding), dropout, L2-normalized;
* the multi-granularity intent heterogeneous session graph (MIHSG): intra-granularity edges
  from each unit to the next unit of its granularity; inter-granularity edges from an item to
  the unit of granularity k that starts right after it, and from a unit to the item right
  after it (as the official graph builder; only between items and units);
* message passing: per relation (each intra_k, one shared `inter`), multi-head graph attention
  (GAT: LeakyReLU(a_l . W h_src + a_r . W h_dst), softmax over a node's incoming edges of
  that relation, residual, bias) on the graph and, with other weights, on the reversed graph;
  the relations' outputs are summed per node type, max-pooled over the heads, and the mean of
  the granularity's input vectors is added;
* readout per granularity k: attention over all the session's units (of every granularity)
  with the last unit of granularity k as query (sigmoid-MLP scores, softmax), then
  s_k = W_k [last unit; readout], L2-normalized;
* Intent Fusion Ranking (IFR): each granularity gives softmax(12 * cos(s_k, item)) over all
  items; a learned softmax weight per granularity (starting at granularity 1) mixes them; the
  score of an item is the log of the mixture.

Defaults: K = 3 (`order`), 8 attention heads per relation, scale 12 and IFR on are this
model's flags; the shared flags keep famerec's defaults (64, 2 layers; dropout 0.1 by the
recipe below), where the original uses d = 256, dropout 0.1 and one layer (`--layers 1`); it
trains with Adam, L2 1e-4 (`--weight-decay 1e-4`; the script's default at its latest commit,
1e-5 in earlier ones) and divides the learning rate by 10 every 3 epochs (`--lr-schedule step
--step-epochs 3 --step-factor 0.1`; not the default here).

Recipe (`RECIPE`; `--preset classic` trains without it, at famerec's shared dropout 0.5 and a
constant 1e-3 on batches of 256): the original's dropout of 0.1, Adam at a peak rate of 3e-3
on batches of 512, 50 warmup steps, cosine decay to 0 over 25 epochs. Found here, on Beauty's
validation split only (benchmarks/RESULTS.md, "MSGIFSR's recipe"): three seeds pass 99 % of
the old recipe's best validation NDCG@10 at epoch 11 and end 3-5 % above that best, where the
old recipe needed 108 epochs (740 minutes, against 41-43 of one thread); test NDCG@10 0.0448
against the old recipe's 0.0407 (one seed of it: its other seeds would cost 39 hours). The
original starts at 1e-3 on batches of 512 and divides it by 10 every 3 epochs (above).

Where famerec differs, and why:
* No graph library: units are found on the sessions' dense (B, L) positions (a unit at the
  position where it ends; a unit repeated in the session is one node, at its first
  position), then each granularity's nodes of all sessions form one list, and each relation
  is a list of edges between node indices; the GRUs, attention (per edge, as weighted
  embedding bags), layers and readout compute on these nodes only, never on padding.
* A session shorter than k has no unit of granularity k, and granularity k is left out of its
  fusion (the weights are renormalized over the granularities it has). The official builder
  adds a placeholder unit made of the session's smallest item id repeated k times.
* The GNN layers stack `--layers` times as the official loop does; the official default is 1.
  Feature dropout draws one mask per node type and layer, shared by the relations (the
  official `GATConv` draws one per relation), so each conv projects a node type once.
* Item embeddings are rescaled to norm <= 1 when looked up (the official `max_norm=1` does it
  in place on the weights) and every weight starts from U(-1/sqrt(d), 1/sqrt(d)), as the
  official code re-draws all of them (GAT, GRU and LayerNorm-free layers alike).
* The official repeat/explore normalization (`--extra`, off in its script) is not
  implemented: famerec ranks only items outside the user's history.
* Training follows famerec's session protocol: every prefix of a user's most recent max_len
  items is a session (its own graph) that predicts its next item (`prefix_batch`), as the
  official `AugmentedDataset` does.
* Selection and stopping use the validation split. The official script evaluates the test
  split after every epoch, stops on it and reports the best test MRR/HR; famerec never does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from famerec.config import ModelConfig, ModelOptions, TrainConfig, option
from famerec.data.batching import TrainBatch, prefix_batch
from famerec.errors import ConfigError
from famerec.models.base import SequentialRecommender
from famerec.models.registry import cosine_recipe, register

SCORE_CHUNK = 1 << 24  # granularity x item logits computed at once (64 MB of float32)


@dataclass
class MSGIFSROptions(ModelOptions):
    """MSGIFSR's own settings (`--model msgifsr`)."""

    granularities: int = option(3, "K: intent units of 1..K consecutive items")
    graph_heads: int = option(8, "attention heads of each graph relation (max-pooled)")
    scale: float = option(12.0, "scale of the cosine scores")
    fusion: bool = option(True, "Intent Fusion Ranking of all granularities (off: items only)")

    def validate(self, model: ModelConfig, train: TrainConfig) -> None:
        if not 1 <= self.granularities <= model.max_len:
            raise ConfigError(
                f"--granularities must be from 1 to --max-len, got {self.granularities}"
            )
        if self.graph_heads < 1 or self.scale <= 0:
            raise ConfigError("--graph-heads and --scale must be positive")


def uniform_init(module: nn.Module, hidden_size: int) -> None:
    """Every parameter of `module` from U(-1/sqrt(d), 1/sqrt(d)), as the official code."""
    bound = hidden_size**-0.5
    for parameter in module.parameters(recurse=False):
        nn.init.uniform_(parameter, -bound, bound)


def find_units(item_seq: torch.Tensor, granularities: int):
    """(B, L) left-padded ids -> each (K, B, L): `exists`, a unit of k real consecutive items
    ends at t; `first`, the position where the same unit first ends (its node); `nodes`,
    exists and first == t: the graph's nodes.

    Unit k at position t holds items t-k+1..t; it exists when all of them are real, so a
    session shorter than k has none. Identical units share the node at their first position.
    """
    real = item_seq != 0
    length = item_seq.shape[1]
    seen = real.cumsum(1)  # (B, L) real items up to t (left padding: contiguous)
    same_item = (item_seq[:, :, None] == item_seq[:, None, :]) & real[:, :, None]  # (B, L, L)
    same, exists, first = same_item, [], []
    positions = torch.arange(length, device=item_seq.device)
    for k in range(1, granularities + 1):
        if k > 1:  # unit k at (t, s) equal: unit k-1 equal and the items k-1 earlier equal
            shifted = F.pad(same_item, (k - 1, 0, k - 1, 0))[:, :length, :length]
            same = same & shifted
        here = real & (seen >= k)  # (B, L)
        equal = same & here[:, :, None] & here[:, None, :]
        # the first position s holding the same unit (t itself when none is earlier)
        first.append(torch.where(equal.any(-1), equal.int().argmax(-1), positions))
        exists.append(here)
    exists, first = torch.stack(exists), torch.stack(first)  # (K, B, L)
    return exists, first, exists & (first == positions)


class UnitEmbedding(nn.Module):
    """SIU vectors: 0.5 * mean + 0.5 * GRU state of the unit's items (official `reducer`
    'mean' with the GRU 'var' part); granularity 1 is the item itself."""

    def __init__(self, hidden_size: int, granularities: int):
        super().__init__()
        self.grus = nn.ModuleList(
            nn.GRU(hidden_size, hidden_size, batch_first=True) for _ in range(granularities - 1)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for gru in self.grus:
            uniform_init(gru, gru.hidden_size)

    def forward(self, x: torch.Tensor, windows: list[torch.Tensor]) -> list[torch.Tensor]:
        """(P, d) vectors of the sessions' real positions, K x (N_k, k) each node's positions
        (oldest first) -> K x (N_k, d) unit vectors."""
        vectors = [x[windows[0][:, 0]]]  # (N_1, d) the items themselves
        for k, gru in enumerate(self.grus, start=2):
            items = x[windows[k - 1]]  # (N_k, k, d)
            if len(items) == 0:  # no session of the batch has k items
                vectors.append(items.sum(1))
                continue
            _, state = gru(items)  # all units of granularity k at once
            vectors.append(0.5 * items.mean(1) + 0.5 * state[0])
        return vectors


class GraphAttention(nn.Module):
    """One relation's GAT (Velickovic et al.) as the official `GATConv`: per head,
    a_ij = softmax_j LeakyReLU(a_l . W h_j + a_r . W h_i) over i's incoming edges and the
    message sum_j a_ij W h_j + b; a node without incoming edges gets b. (The residual h_i is
    added by the layer.)"""

    def __init__(self, hidden_size: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.project = nn.Linear(hidden_size, heads * hidden_size, bias=False)  # W per head
        self.attn_src = nn.Parameter(torch.empty(heads, hidden_size))  # a_l
        self.attn_dst = nn.Parameter(torch.empty(heads, hidden_size))  # a_r
        self.bias = nn.Parameter(torch.empty(heads, hidden_size))
        self.attention_dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        hidden = self.attn_src.shape[1]
        uniform_init(self, hidden)
        uniform_init(self.project, hidden)

    def nodes(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, d) -> W h per head (N, H, d), and a_l . W h, a_r . W h (N, H), the latter two
        as h times (d, H) matrices (the (N, H, d) tensor is not multiplied)."""
        weight = self.project.weight.view(self.heads, -1, h.shape[-1])  # (H, d_out, d_in)
        to_src = torch.einsum("hoi,ho->ih", weight, self.attn_src)  # (d, H)
        to_dst = torch.einsum("hoi,ho->ih", weight, self.attn_dst)
        return self.project(h).view(len(h), self.heads, weight.shape[1]), h @ to_src, h @ to_dst

    def messages(self, src: tuple, dst: tuple, edges: Edges) -> torch.Tensor:
        """`nodes` of the sources and of the destinations and the relation's edges between
        them -> (N_dst, H, d) sum_j a_ij W h_j over each node's incoming edges. Work is per
        edge, O(E H d), as the official sparse graph: one weighted embedding bag per
        (destination, head), so no (E, H, d) tensor is made."""
        ws, left, _ = src  # (N_src, H, d), (N_src, H)
        right = dst[2]  # (N_dst, H)
        if len(right) == 0:
            return ws.new_zeros(0, *ws.shape[1:])
        logits = F.leaky_relu(left[edges.src] + right[edges.dst], 0.2)  # (E, H)
        weights = segment_softmax(logits, edges.dst, len(right))  # over each node's in-edges
        weights = self.attention_dropout(weights)
        rows, order, offsets = edges.bags(self.heads, len(right))
        summed = F.embedding_bag(
            rows, ws.flatten(0, 1), offsets, mode="sum", per_sample_weights=weights.flatten()[order]
        )  # (N_dst H, d)
        return summed.view(len(right), self.heads, -1)

    def forward(self, src: tuple, dst: tuple, edges: Edges) -> torch.Tensor:
        """(N_dst, H, d) the summed messages plus b (a node without incoming edges gets b)."""
        return self.messages(src, dst, edges) + self.bias


@dataclass
class Edges:
    """One relation's edges, deduplicated: between flattened positions b * L + t (from
    `relation_edges`), or between node indices of two granularities (in a SessionGraph)."""

    src: torch.Tensor  # (E,)
    dst: torch.Tensor  # (E,)
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def reversed(self) -> Edges:
        if "reversed" not in self.cache:  # one object: its bags are built once
            self.cache["reversed"] = Edges(self.dst, self.src)
        return self.cache["reversed"]

    def bags(self, heads: int, num_dst: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The edges as embedding bags, one per (destination, head), destination-major:
        (E H,) rows src * H + h of the (N_src H, d) head vectors, (E H,) the order of the
        (E, H) edge weights flattened that matches them, (N_dst H,) each bag's first row."""
        if (heads, num_dst) not in self.cache:
            head = torch.arange(heads, device=self.dst.device)
            bag = (self.dst.unsqueeze(1) * heads + head).flatten()  # (E H,)
            order = torch.argsort(bag, stable=True)
            rows = (self.src.unsqueeze(1) * heads + head).flatten()[order]
            sizes = torch.bincount(bag, minlength=num_dst * heads)  # (N_dst H,)
            self.cache[heads, num_dst] = rows, order, sizes.cumsum(0) - sizes
        return self.cache[heads, num_dst]


def relation_edges(units_first: torch.Tensor, exists: torch.Tensor) -> dict[tuple, Edges]:
    """The MIHSG's relations as edge lists between node positions.

    Returns {(relation, src granularity, dst granularity): Edges}, granularities 0-based.
    Edges join the nodes (first positions) of the units they connect; an edge between the
    same two nodes is kept once."""
    kk, batch, length = exists.shape
    rows = torch.arange(batch, device=exists.device)[:, None]

    def edge_list(src_k, src_t, dst_k, dst_t, valid) -> Edges:
        """Edges from unit (src_k, ends at src_t) to unit (dst_k, dst_t), t: (L',) vectors."""
        src = rows * length + units_first[src_k][:, src_t]  # (B, L') flat node positions
        dst = rows * length + units_first[dst_k][:, dst_t]
        pairs = torch.unique((src * (batch * length) + dst)[valid])  # (E,) sorted, once each
        return Edges(pairs // (batch * length), pairs % (batch * length))

    steps = torch.arange(length - 1, device=exists.device)  # t -> t + 1
    relations = {}
    for k in range(kk):
        valid = exists[k][:, :-1] & exists[k][:, 1:]
        relations[(f"intra{k + 1}", k, k)] = edge_list(k, steps, k, steps + 1, valid)
    for k in range(1, kk):
        before = torch.arange(max(length - k - 1, 0), device=exists.device)  # item -> unit
        valid = exists[0][:, before] & exists[k][:, before + k + 1]
        relations[("inter", 0, k)] = edge_list(0, before, k, before + k + 1, valid)
        # unit ending at t -> the item at t + 1
        valid = exists[k][:, :-1] & exists[0][:, 1:]
        relations[("inter", k, 0)] = edge_list(k, steps, 0, steps + 1, valid)
    return relations


@dataclass
class SessionGraph:
    """The MIHSGs of B sessions with their nodes only, each granularity's in one list: what
    the layers compute on is real nodes (no padding, no repeated unit, no unit of k items in
    a session shorter than k)."""

    items: torch.Tensor  # (P,) item ids of the sessions' real positions, session after session
    windows: list[torch.Tensor]  # K x (N_k, k) each node's positions (into items), oldest first
    owners: list[torch.Tensor]  # K x (N_k,) each node's session
    relations: dict[tuple, Edges]  # (relation, src k, dst k) -> edges between node indices
    last: torch.Tensor  # (B, K) node index (within its granularity) of the last unit; -1: none
    present: torch.Tensor  # (B, K) the session has units of granularity k (k items or more)

    @property
    def num_sessions(self) -> int:
        return len(self.present)

    @classmethod
    def of_part(cls, item_seq: torch.Tensor, granularities: int) -> SessionGraph:
        """The graphs of (b, w) left-padded sessions: `find_units` and `relation_edges` on
        the dense positions, renumbered to nodes."""
        batch, length = item_seq.shape
        device = item_seq.device
        position = (item_seq != 0).flatten().cumsum(0) - 1  # (b w,) index into the real ones
        exists, first, nodes = find_units(item_seq, granularities)  # (K, b, w)
        flat_nodes = nodes.flatten(1)  # (K, b w)
        numbers = flat_nodes.cumsum(1) - 1  # (K, b w) node index at each node position
        windows, owners = [], []
        for k in range(granularities):
            at = flat_nodes[k].nonzero().squeeze(1)  # (N_k,) flat positions of the nodes
            steps = torch.arange(-k, 1, device=device)  # (k + 1,) the unit's items
            windows.append(position[at[:, None] + steps])  # (N_k, k + 1)
            owners.append(at // length)
        relations = {
            key: Edges(numbers[key[1]][edges.src], numbers[key[2]][edges.dst])
            for key, edges in relation_edges(first, exists).items()
        }
        present = exists[:, :, -1].T  # (b, K)
        ends = torch.arange(batch, device=device) * length + first[:, :, -1]  # (K, b)
        last = torch.where(present, numbers.gather(1, ends).T, -1)  # (b, K)
        return cls(item_seq[item_seq != 0], windows, owners, relations, last, present)

    @classmethod
    def of(cls, parts: list[torch.Tensor], granularities: int) -> SessionGraph:
        """The graphs of the sessions of several (b, w) batches, in order, as one graph."""
        items, windows, owners, relations, last, present = [], [], [], {}, [], []
        positions, sessions, nodes = 0, 0, [0] * granularities  # offsets of the next part
        for item_seq in parts:
            part = cls.of_part(item_seq, granularities)
            items.append(part.items)
            windows.append([w + positions for w in part.windows])
            owners.append([o + sessions for o in part.owners])
            for (name, src, dst), edges in part.relations.items():
                shifted = (edges.src + nodes[src], edges.dst + nodes[dst])
                relations.setdefault((name, src, dst), []).append(shifted)
            offsets = torch.tensor(nodes, device=part.last.device)  # (K,)
            last.append(torch.where(part.present, part.last + offsets, -1))
            present.append(part.present)
            positions, sessions = positions + len(part.items), sessions + part.num_sessions
            nodes = [n + len(w) for n, w in zip(nodes, part.windows)]
        return cls(
            torch.cat(items),
            [torch.cat(w) for w in zip(*windows)],
            [torch.cat(o) for o in zip(*owners)],
            {key: Edges(*map(torch.cat, zip(*pairs))) for key, pairs in relations.items()},
            torch.cat(last),
            torch.cat(present),
        )


def segment_softmax(logits: torch.Tensor, owners: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, H) logits, (N,) their group -> (N, H) softmax over each group's rows, per column
    (shifted by the group's max, a constant)."""
    index = owners.unsqueeze(1).expand_as(logits)
    peak = logits.new_full((groups, logits.shape[1]), float("-inf"))
    weights = (logits - peak.scatter_reduce(0, index, logits, "amax").detach()[owners]).exp()
    return (
        weights / weights.new_zeros(groups, logits.shape[1]).index_add(0, owners, weights)[owners]
    )


def segment_mean(x: torch.Tensor, owners: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, d) rows, (N,) their group -> (groups, d) each group's mean (0 for none)."""
    sums = x.new_zeros(groups, x.shape[-1]).index_add(0, owners, x)
    return sums / torch.bincount(owners, minlength=groups).clamp(min=1).unsqueeze(-1)


class HeterogeneousLayer(nn.Module):
    """One MSHGNN layer: GAT per relation on the graph and on the reversed graph, summed per
    node type with a residual per relation, max over heads, plus the granularity's mean input
    vector."""

    def __init__(self, hidden_size: int, granularities: int, heads: int, dropout: float):
        super().__init__()
        names = [f"intra{k + 1}" for k in range(granularities)] + ["inter"]
        self.forward_conv = nn.ModuleDict(
            {name: GraphAttention(hidden_size, heads, dropout) for name in names}
        )
        self.backward_conv = nn.ModuleDict(
            {name: GraphAttention(hidden_size, heads, dropout) for name in names}
        )
        self.feature_dropout = nn.Dropout(dropout)

    def forward(self, h: list[torch.Tensor], graph: SessionGraph) -> list[torch.Tensor]:
        """K x (N_k, d) node vectors -> K x (N_k, d)."""
        dropped = [self.feature_dropout(vectors) for vectors in h]  # one mask per node type
        projected = {}  # (conv, node type) -> W h: each relation of a conv reuses it

        def project(conv, k):
            if (id(conv), k) not in projected:
                projected[id(conv), k] = conv.nodes(dropped[k])
            return projected[id(conv), k]

        incoming = [[] for _ in h]  # per node type: (conv, sources, destinations, edges)
        for (name, src, dst), edges in graph.relations.items():
            forward, backward = self.forward_conv[name], self.backward_conv[name]
            incoming[dst].append((forward, src, dst, edges))
            incoming[src].append((backward, dst, src, edges.reversed()))  # reversed graph
        new = []
        for k, vectors in enumerate(h):
            # each relation's GATConv adds its residual and bias to its messages
            out = len(incoming[k]) * dropped[k].unsqueeze(1)  # (N_k, 1, d)
            out = out + sum(conv.bias for conv, *_ in incoming[k])  # (N_k, H, d)
            for conv, src, dst, edges in incoming[k]:
                out = out + conv.messages(project(conv, src), project(conv, dst), edges)
            mean = segment_mean(vectors, graph.owners[k], graph.num_sessions)  # (B, d)
            new.append(out.max(1).values + mean[graph.owners[k]])  # max over heads, + mean
        return new


class GranularityReadout(nn.Module):
    """s_k = W_k [last unit; sum_j alpha_j h_j], alpha = softmax_j w_k . sigmoid(U_k h_j +
    V_k last unit) over all the session's nodes (official `AttnReadout` and `fc_sr`)."""

    def __init__(self, hidden_size: int, granularities: int):
        super().__init__()
        k, d = granularities, hidden_size
        self.key = nn.Parameter(torch.empty(k, d, d))  # U_k
        self.key_bias = nn.Parameter(torch.empty(k, d))
        self.query = nn.Parameter(torch.empty(k, d, d))  # V_k
        self.score = nn.Parameter(torch.empty(k, d))  # w_k
        self.out = nn.Parameter(torch.empty(k, 2 * d, d))  # W_k
        self.reset_parameters()

    def reset_parameters(self) -> None:
        uniform_init(self, self.key.shape[1])

    def forward(self, nodes: torch.Tensor, owners: torch.Tensor, last: torch.Tensor):
        """(N, d) all nodes of all sessions, (N,) their session, (B, K, d) last units ->
        (B, K, d) unit session vectors."""
        batch, granularities, hidden = last.shape
        key = self.key.transpose(0, 1).reshape(hidden, -1)  # (d, K d): U_1 .. U_K side by side
        keys = (nodes @ key).view(-1, granularities, hidden) + self.key_bias  # (N, K, d)
        queries = torch.einsum("bkd,kde->bke", last, self.query)  # (B, K, d)
        logits = torch.einsum("nke,ke->nk", torch.sigmoid(keys + queries[owners]), self.score)
        weights = segment_softmax(logits, owners, batch)  # (N, K) over each session's nodes
        readout = last.new_zeros(batch, granularities, hidden).index_add(
            0, owners, weights.unsqueeze(-1) * nodes.unsqueeze(1)
        )  # (B, K, d)
        sessions = torch.einsum("bkd,kde->bke", torch.cat([last, readout], -1), self.out)
        return F.normalize(sessions, dim=-1)


RECIPE = cosine_recipe(25, dropout=0.1)


@register(
    "msgifsr",
    summary="MSGIFSR (Guo et al., WSDM 2022): intent units of 1..K consecutive items on a "
    "heterogeneous session graph (GAT), fused over granularities in the ranking",
    options=MSGIFSROptions,
    recipe=RECIPE,
)
class MSGIFSR(SequentialRecommender):
    options: MSGIFSROptions
    dot_product_scores = False  # a mixture of softmaxes over granularities

    def __init__(self, num_items: int, config: ModelConfig, options: MSGIFSROptions | None = None):
        super().__init__(num_items, config, options or MSGIFSROptions())
        del self.position_embedding  # order enters through units and edges only
        hidden, k = config.hidden_size, self.options.granularities
        self.unit_embedding = UnitEmbedding(hidden, k)
        self.layers = nn.ModuleList(
            HeterogeneousLayer(hidden, k, self.options.graph_heads, config.dropout)
            for _ in range(config.num_layers)
        )
        self.readout = GranularityReadout(hidden, k)
        self.fusion = nn.Parameter(torch.empty(k))  # IFR weights (logits) per granularity
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(d), 1/sqrt(d)) item embeddings; IFR starts at granularity 1, as the
        official code; the submodules initialize themselves."""
        bound = self.hidden_size**-0.5
        nn.init.uniform_(self.item_embedding.weight, -bound, bound)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
            self.fusion.zero_()
            self.fusion[0] = 1.0

    def sessions(self, item_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) left-padded sessions -> (B, K, d) unit session vectors s_k and (B, K) which
        granularities the session has (at least k items)."""
        graph = SessionGraph.of([item_seq[:, -self.max_len :]], self.options.granularities)
        return self.encode(graph), graph.present

    def encode(self, graph: SessionGraph) -> torch.Tensor:
        """The sessions of `graph` -> (B, K, d) unit session vectors s_k (granularities a
        session lacks have a zero last unit)."""
        x = self.item_embedding(graph.items)  # (P, d) the real positions only
        x = x / x.norm(dim=-1, keepdim=True).clamp(min=1.0)  # max_norm = 1
        units = self.unit_embedding(self.embedding_dropout(x), graph.windows)  # K x (N_k, d)
        h = [F.normalize(vectors, dim=-1) for vectors in units]
        for layer in self.layers:
            h = layer(h, graph)
        h = [F.normalize(vectors, dim=-1) for vectors in h]
        # the last unit of each granularity (index -1, none: the zero row appended)
        last = [F.pad(v, (0, 0, 0, 1))[graph.last[:, k]] for k, v in enumerate(h)]  # K x (B, d)
        return self.readout(torch.cat(h), torch.cat(graph.owners), torch.stack(last, 1))

    def fusion_weights(self, present: torch.Tensor) -> torch.Tensor:
        """(B, K) log IFR weights of the granularities a session has (all on granularity 1
        without --fusion)."""
        if not self.options.fusion:
            present = present & (torch.arange(present.shape[1], device=present.device) == 0)
        return self.fusion.masked_fill(~present, float("-inf")).log_softmax(-1)

    def log_scores(self, item_seq: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B, V') log of the IFR mixture of the granularities' softmax(scale * cos) over the
        items (V', d) (Sec. IFR: sum_k w_k softmax_k)."""
        sessions, present = self.sessions(item_seq)  # (B, K, d), (B, K)
        weights = self.fusion_weights(present)  # (B, K)
        steps = max(1, SCORE_CHUNK // (sessions.shape[1] * items.shape[0]))
        chunks = []
        for start in range(0, len(sessions), steps):  # bounded memory: (steps, K, V')
            logits = self.options.scale * (sessions[start : start + steps] @ items.T).float()
            mixed = logits.log_softmax(-1) + weights[start : start + steps, :, None]
            chunks.append(mixed.logsumexp(1))
        return torch.cat(chunks)

    def item_vectors(self) -> torch.Tensor:
        """(V + 1, d) unit item vectors."""
        return F.normalize(self.item_embedding.weight, dim=-1)

    def loss(self, batch: TrainBatch | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Negative log-likelihood of the next item of every prefix of the batch's sequences
        under the IFR mixture; only each granularity's log-normalizer needs all items, and
        only the granularities a prefix has are normalized (the others weigh 0)."""
        batch = batch if isinstance(batch, TrainBatch) else TrainBatch((batch,), 0)
        items = self.item_vectors()[1:]  # (V, d)
        parts = prefix_batch(batch).parts  # one session (graph) per prefix
        graph = SessionGraph.of([item_seq for item_seq, _ in parts], self.options.granularities)
        targets = torch.cat([target[:, -1] for _, target in parts]) - 1  # (B,)
        scaled = self.options.scale * self.encode(graph)  # (B, K, d)
        dtype = torch.promote_types(scaled.dtype, torch.float32)  # float32 under autocast
        rows = scaled[graph.present]  # (R, d) the granularities the prefixes have
        row_targets = targets.unsqueeze(1).expand_as(graph.present)[graph.present]  # (R,)
        steps = max(1, SCORE_CHUNK // items.shape[0])
        log_softmax = -torch.cat(
            [
                F.cross_entropy((chunk @ items.T).to(dtype), target, reduction="none")
                for chunk, target in zip(rows.split(steps), row_targets.split(steps))
            ]
        )  # (R,) each granularity's log softmax(scale * cos) of the target
        log_softmax = log_softmax.new_zeros(graph.present.shape).masked_scatter(
            graph.present, log_softmax
        )  # (B, K), 0 where absent (its weight is 0)
        log_p = (self.fusion_weights(graph.present) + log_softmax).logsumexp(1)
        return -log_p.mean()

    def score(self, item_seq: torch.Tensor) -> torch.Tensor:
        with torch.autocast(item_seq.device.type, enabled=False):
            scores = self.log_scores(item_seq, self.item_vectors()[1:])  # (B, V)
        return F.pad(scores, (1, 0), value=float("-inf"))  # column 0: padding
