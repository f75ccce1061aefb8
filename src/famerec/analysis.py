"""Do FAME's heads specialize in facets? Attribute concentration of each head's top-k lists.

For every user, each list (a head's own top-k, the integrated top-k, SASRec's top-k, k random
items) is summarized by its item attributes (categories and brand on the Amazon data):

* entropy: of the attribute distribution over the k items (nats; lower = more concentrated);
* purity: share of the k items that carry the list's most common attribute;
* overlap: mean Jaccard similarity between the heads' lists (low = heads recommend differently).

The users are those of the test split, scored from everything but their last item, with seen
items excluded, exactly as in evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from famerec.data.attributes import ItemAttributes, read_attributes, to_internal
from famerec.data.batching import EvalBatches
from famerec.data.items import load_item_table
from famerec.data.split import PrefixSet, leave_one_out
from famerec.errors import ConfigError
from famerec.runs.load import TrainedRun


def attribute_matrix_for(run: TrainedRun, attributes_path: str | None = None) -> ItemAttributes:
    """Which items have which attributes (sparse, over the ids the items have). Without a
    file, a run with an item table (`--items`) uses its attribute columns, together."""
    table = load_item_table(run.path) if attributes_path is None else None
    if table is not None and table.attributes:
        attributes = to_internal(table.attribute_ids(list(table.attributes)), run.data)
    else:
        attributes = read_attributes(attributes_path, run.data)
    return ItemAttributes.from_lists(attributes, run.data.num_items)


@dataclass
class ListStats:
    entropy: float
    purity: float
    attributes: torch.Tensor  # (A,) attribute occurrences summed over all lists


def list_statistics(items: torch.Tensor, attributes: ItemAttributes) -> tuple[torch.Tensor, ...]:
    """(B, k) item ids -> per-list entropy (B,), purity (B,) and attribute counts (B, A)."""
    counts = attributes.rows(items).sum(1, dtype=torch.float32)  # (B, A)
    total = counts.sum(1, keepdim=True).clamp(min=1)
    share = counts / total
    entropy = -(share * share.clamp(min=1e-12).log()).sum(1)
    purity = counts.max(1).values / items.shape[1]
    return entropy, purity, counts


class _Accumulator:
    def __init__(self, width: int):
        self.entropy = 0.0
        self.purity = 0.0
        self.count = 0
        self.attributes = torch.zeros(width)

    def add(self, items: torch.Tensor, attributes: ItemAttributes) -> None:
        entropy, purity, counts = list_statistics(items, attributes)
        self.entropy += float(entropy.sum())
        self.purity += float(purity.sum())
        self.count += len(items)
        self.attributes += counts.sum(0)

    def result(self) -> ListStats:
        n = max(self.count, 1)
        return ListStats(self.entropy / n, self.purity / n, self.attributes)


@torch.inference_mode()
def facet_report(
    run: TrainedRun,
    attributes: ItemAttributes,
    k: int = 10,
    max_users: int | None = None,
    compare: TrainedRun | None = None,
    batch_size: int = 512,
    seed: int = 0,
) -> dict:
    """Entropy, purity and top attributes of every head's lists vs integrated/SASRec/random."""
    if not run.model.explains:
        raise ConfigError("facet analysis needs a FAME run (SASRec has no facet heads)")
    test = leave_one_out(run.data).test
    if max_users is not None and max_users < len(test):
        chosen = np.sort(np.random.default_rng(seed).choice(len(test), max_users, replace=False))
        test = PrefixSet(test.items, test.starts[chosen], test.ends[chosen], test.targets[chosen])
    batches = EvalBatches(test, run.config.model.max_len, batch_size)
    heads = run.model.config.num_heads
    width = attributes.width
    acc = {
        name: _Accumulator(width)
        for name in [f"head {h + 1}" for h in range(heads)] + ["integrated", "random"]
    }
    if compare is not None:
        acc["sasrec"] = _Accumulator(width)
    gate_sum = torch.zeros(heads)
    overlap_sum, pairs = 0.0, 0
    generator = torch.Generator().manual_seed(seed)
    users = 0
    for batch in batches:
        exclude = torch.zeros(len(batch.targets), run.data.num_items + 1, dtype=torch.bool)
        exclude[batch.seen_rows, batch.seen_items] = True
        explanation = run.model.explain(batch.inputs, k, exclude=exclude)
        for h in range(heads):
            acc[f"head {h + 1}"].add(explanation.head_items[:, h], attributes)
        acc["integrated"].add(explanation.items, attributes)
        random_items = torch.randint(
            1, run.data.num_items + 1, explanation.items.shape, generator=generator
        )
        acc["random"].add(random_items, attributes)
        if compare is not None:
            scores = compare.model.score(batch.inputs).masked_fill(exclude, float("-inf"))
            acc["sasrec"].add(scores.topk(k, dim=1).indices, attributes)
        gate_sum += explanation.gate.sum(0)
        for a in range(heads):
            for b in range(a + 1, heads):
                overlap_sum += float(
                    _jaccard(explanation.head_items[:, a], explanation.head_items[:, b]).sum()
                )
                pairs += len(batch.targets)
        users += len(batch.targets)

    results = {name: accumulator.result() for name, accumulator in acc.items()}
    baseline = results["integrated"].attributes
    baseline_share = baseline / baseline.sum().clamp(min=1)
    rows = []
    for name, stats in results.items():
        row = {"list": name, "entropy": stats.entropy, "purity": stats.purity}
        if name.startswith("head "):
            head = int(name.split()[1]) - 1
            row["mean_gate"] = float(gate_sum[head] / max(users, 1))
            share = stats.attributes / stats.attributes.sum().clamp(min=1)
            lift = share / baseline_share.clamp(min=1e-9)
            lift[baseline_share * baseline.sum() < 20] = 0  # ignore rare attributes
            top = lift.topk(min(3, len(lift))).indices.tolist()
            row["top_attributes"] = [
                {
                    "attribute": int(attributes.vocabulary[a]),
                    "lift": round(float(lift[a]), 2),
                    "share": round(float(share[a]), 4),
                }
                for a in top
            ]
        rows.append(row)
    return {
        "users": users,
        "k": k,
        "heads": heads,
        "experts": run.model.options.num_experts,
        "head_overlap_jaccard": overlap_sum / max(pairs, 1) if heads > 1 else None,
        "lists": rows,
    }


def _jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, k) x2 -> (B,) Jaccard similarity of the item sets."""
    shared = (a.unsqueeze(2) == b.unsqueeze(1)).any(2).sum(1).float()
    return shared / (a.shape[1] + b.shape[1] - shared)
