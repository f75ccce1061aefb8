"""Do FAME's heads follow facets? A benchmark with facets planted in generated data.

Every item carries two kinds of attribute, a genre and an actor, drawn independently. Half of
the users follow a genre (each next item shares the genre of their favourite, any actor), the
other half follow an actor (same actor, any genre). A model that knows the facets can tell the
two kinds of user apart from their history; FAME's heads should then specialize (one head
ranks by genre, one by actor) and the gate (Eq. 10) should pick the head by the kind of user.

Measured on the test users (scored from all but their last item, seen items excluded):
* gate AUC: how well head h's gate weight separates genre users from actor users (ROC AUC,
  reported as max(AUC, 1 - AUC) for the best head; 0.5 = no separation, 1 = perfect);
* per head, the share of its top-10 that has the user's genre (genre purity) and the user's
  actor (actor purity), over all test users; a genre head has high genre purity for everybody;
* test NDCG@10 of the integrated list, and SASRec's for reference.

The data is generated from a seed at run time; nothing is downloaded.

    python studies/planted_facets.py                      # paper recipe, warm start, softmax
    python studies/planted_facets.py --variants paper --epochs 10
    python studies/planted_facets.py --variants warm+attr,warm+balance --out /tmp/pf

With --out, finished runs there are reused (SASRec trains once for all variants). Variants
whose name has `attr` train with the planted genre and actor as attribute kinds of heads 1 and
2 (`--attribute-weight`), `gate` adds the gate's target from them (`--attribute-gate-weight`);
`balance` and `diversity` are the gate-balance and head-diversity terms
(`--gate-balance-weight`, `--head-diversity-weight`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from famerec.config import RunConfig  # noqa: E402
from famerec.runs.load import load_run  # noqa: E402
from famerec.training import train_run  # noqa: E402

GENRE, ACTOR = 0, 1

# FAME variants: name -> overrides of the FAME run that starts from the SASRec run. Variants
# with an attribute weight get the planted genre and actor as attribute kinds of heads 1 and 2.
WARM = {"fame.warm_start": True}
ATTR = {"fame.attribute_weight": 1.0}
GATE = {"fame.attribute_gate_weight": 1.0}
SOFTMAX = {"fame.fusion": "softmax"}
VARIANTS = {
    "paper": {},
    "warm": WARM,
    "softmax": {"fame.fusion": "softmax"},
    "warm+softmax": {**WARM, "fame.fusion": "softmax"},
    "attr": ATTR,
    "warm+attr": {**WARM, **ATTR},
    "warm+balance": {**WARM, "fame.gate_balance_weight": 1.0},
    "warm+diversity": {**WARM, "fame.head_diversity_weight": 1.0},
    "warm+attr+diversity": {**WARM, **ATTR, "fame.head_diversity_weight": 1.0},
    "attr+gate": {**ATTR, **GATE},
    "warm+attr+gate": {**WARM, **ATTR, **GATE},
    "warm+attr5+gate5": {**WARM, "fame.attribute_weight": 5.0, "fame.attribute_gate_weight": 5.0},
    "warm+attr+gate+diversity": {**WARM, **ATTR, **GATE, "fame.head_diversity_weight": 1.0},
    "warm+attr+gate+diversity0.1": {**WARM, **ATTR, **GATE, "fame.head_diversity_weight": 0.1},
    "softmax+attr+gate": {**SOFTMAX, **ATTR, **GATE},
    "warm+softmax+attr+gate": {**WARM, **SOFTMAX, **ATTR, **GATE},
}
DEFAULT_VARIANTS = "paper,warm,softmax,warm+softmax"


@dataclass
class Planted:
    sequences: list[np.ndarray]  # item ids 1..num_items, oldest first
    genre: np.ndarray  # (num_items + 1,) genre of each item (index 0 unused)
    actor: np.ndarray  # (num_items + 1,)
    kind: np.ndarray  # (users,) GENRE or ACTOR: the facet the user follows
    favourite: np.ndarray  # (users,) the genre or actor the user follows


def generate(users: int, items: int, genres: int, actors: int, length: int, seed: int) -> Planted:
    """Users that follow one facet value; each next item is uniform among matching items."""
    rng = np.random.default_rng(seed)
    genre = np.concatenate([[-1], rng.integers(0, genres, items)])
    actor = np.concatenate([[-1], rng.integers(0, actors, items)])
    kind = rng.integers(0, 2, users)
    favourite = np.where(
        kind == GENRE, rng.integers(0, genres, users), rng.integers(0, actors, users)
    )
    by_genre = [np.flatnonzero(genre == g) for g in range(genres)]
    by_actor = [np.flatnonzero(actor == a) for a in range(actors)]
    sequences = []
    for user in range(users):
        pool = (by_genre if kind[user] == GENRE else by_actor)[favourite[user]]
        size = int(rng.integers(length // 2, length + 1))
        sequences.append(rng.choice(pool, size=min(size, len(pool)), replace=False))
    return Planted(sequences, genre, actor, kind, favourite)


def write(planted: Planted, path: Path) -> Path:
    lines = [" ".join(map(str, [u + 1, *s])) for u, s in enumerate(planted.sequences)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_attributes(values: np.ndarray, path: Path) -> Path:
    """One attribute kind as famerec reads it: {"item_id": [attribute_id]}."""
    path.write_text(json.dumps({str(item): [int(values[item])] for item in range(1, len(values))}))
    return path


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of `scores` for binary `labels` (Mann-Whitney, ties counted half)."""
    order = scores.argsort(kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0
    ranks[order] = np.repeat(average, counts) + 1
    positives = labels.sum()
    negatives = len(labels) - positives
    return float(
        (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    )


@torch.inference_mode()
def facet_measures(run_dir: Path, planted: Planted, k: int = 10) -> dict:
    run = load_run(run_dir)
    data, model = run.data, run.model
    original = data.item_ids.astype(np.int64)  # internal j + 1 -> original id
    to_internal = np.zeros(original.max() + 1, dtype=np.int64)
    to_internal[original] = np.arange(1, len(original) + 1)
    users = data.user_ids.astype(np.int64) - 1  # rows of `planted`
    max_len = run.config.model.max_len
    inputs = torch.zeros(len(users), max_len, dtype=torch.long)
    for row, user in enumerate(users):
        history = to_internal[planted.sequences[user][:-1][-max_len:]]
        inputs[row, max_len - len(history) :] = torch.from_numpy(history)
    exclude = torch.zeros(len(users), data.num_items + 1, dtype=torch.bool)
    exclude.scatter_(1, inputs, True)
    explanation = model.explain(inputs, k=k, exclude=exclude)
    kind = planted.kind[users]
    favourite = planted.favourite[users]
    item_genre = torch.from_numpy(planted.genre[np.concatenate([[0], original])])
    item_actor = torch.from_numpy(planted.actor[np.concatenate([[0], original])])
    gate = explanation.gate.numpy()  # (U, H)
    heads = []
    for head in range(gate.shape[1]):
        top = explanation.head_items[:, head]  # (U, k) internal ids
        follows_genre = kind == GENRE
        genre_match = (
            item_genre[top] == torch.from_numpy(np.where(follows_genre, favourite, -2))[:, None]
        )
        actor_match = (
            item_actor[top] == torch.from_numpy(np.where(~follows_genre, favourite, -2))[:, None]
        )
        # purity of the head's list in the facet that the user follows, per kind of user
        heads.append(
            {
                "gate_auc": auc(gate[:, head], (kind == GENRE).astype(int)),
                "gate_genre_users": float(gate[kind == GENRE, head].mean()),
                "gate_actor_users": float(gate[kind == ACTOR, head].mean()),
                "genre_users_hit_genre": float(genre_match[follows_genre].float().mean()),
                "actor_users_hit_actor": float(actor_match[~follows_genre].float().mean()),
            }
        )
    separation = max(max(h["gate_auc"], 1 - h["gate_auc"]) for h in heads)
    return {
        "heads": heads,
        "gate_auc": separation,
        "valid": run.metrics["valid"],
        "test": run.metrics["test"],
        "best_epoch": run.metrics["best_epoch"],
        "train_seconds": run.metrics["train_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--genres", type=int, default=8)
    parser.add_argument("--actors", type=int, default=8)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help=f"comma-separated FAME variants of: {', '.join(VARIANTS)}",
    )
    parser.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()

    started = time.perf_counter()
    planted = generate(args.users, args.items, args.genres, args.actors, args.length, args.seed)
    root = Path(args.out or tempfile.mkdtemp(prefix="planted-"))
    root.mkdir(parents=True, exist_ok=True)
    path = write(planted, root / "planted.txt")
    kinds = [write_attributes(planted.genre, root / "genre.json")]
    kinds.append(write_attributes(planted.actor, root / "actor.json"))
    common = {
        "data.path": str(path),
        "model.hidden_size": 64,
        "model.num_heads": args.heads,
        "model.dropout": 0.2,
        "model.max_len": args.length,
        "train.epochs": args.epochs,
        "train.patience": 10,
        "train.seed": args.seed,
        "train.threads": args.threads,
        "train.device": args.device,
    }
    sasrec = train_run(
        RunConfig().with_overrides(common), root / "sasrec", progress=False, resume=True
    )
    rows = []
    names = args.variants.split(",")
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    for name in names:
        overrides = {
            **common,
            "model.name": "fame",
            "fame.num_experts": args.experts,
            "train.init_from": str(root / "sasrec"),
            **VARIANTS[name],
        }
        if overrides.get("fame.attribute_weight") or overrides.get("fame.attribute_gate_weight"):
            overrides["fame.attributes"] = ",".join(str(kind) for kind in kinds)  # genre, actor
        train_run(RunConfig().with_overrides(overrides), root / name, progress=False, resume=True)
        rows.append((name, facet_measures(root / name, planted)))

    print(
        f"Planted facets: {args.users} users ({args.genres} genres, {args.actors} actors), "
        f"{args.items} items, length {args.length // 2}-{args.length}, seed {args.seed}; FAME "
        f"H={args.heads}, N={args.experts}, d=64 from SASRec; {args.epochs} epochs at most. "
        f"Wall time {time.perf_counter() - started:.0f} s.\n"
    )
    print(
        f"SASRec valid NDCG@10 {sasrec['valid']['NDCG@10']:.4f}, "
        f"test NDCG@10 {sasrec['test']['NDCG@10']:.4f}\n"
    )
    print(
        "| variant | valid NDCG@10 | test NDCG@10 | best epoch | train s | gate AUC (best head) | "
        "head | gate: genre users | gate: actor users | genre users: top-10 share with their "
        "genre | actor users: top-10 share with their actor |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, result in rows:
        for index, head in enumerate(result["heads"]):
            lead = (
                f"| {name} | {result['valid']['NDCG@10']:.4f} | {result['test']['NDCG@10']:.4f} "
                f"| {result['best_epoch']} | {result['train_seconds']:.0f} | "
                f"{result['gate_auc']:.3f}"
                if index == 0
                else "| | | | | |"
            )
            print(
                f"{lead} | {index + 1} | {head['gate_genre_users']:.3f} | "
                f"{head['gate_actor_users']:.3f} | {head['genre_users_hit_genre']:.3f} | "
                f"{head['actor_users_hit_actor']:.3f} |"
            )


if __name__ == "__main__":
    main()
