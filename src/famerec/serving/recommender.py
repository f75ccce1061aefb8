"""Top-k recommendations from a finished run, in the ids of the user's own data.

    rec = famerec.load("runs/fame-beauty")
    rec.recommend(["B0001", "B0002"], k=10)

Sequences are lists of original item ids, oldest first. Unknown ids are reported back (and
skipped, unless `strict=True`); only the most recent `max_len` known items are used, but the
whole given sequence is excluded from the results when `exclude_seen` is on.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from famerec.data.ids import query_id
from famerec.data.items import load_item_table
from famerec.errors import FamerecError
from famerec.runs.load import load_run, resolve_device

ItemId = int | str


class UnknownItemsError(FamerecError):
    """Raised with strict=True when a sequence holds ids the model has never seen."""


class NoKnownItemsError(FamerecError):
    """Raised when a sequence holds no id the model knows: there is nothing to score."""


def _native(value: Any) -> Any:
    """numpy scalars -> plain Python values (for JSON and comparisons)."""
    return value.item() if isinstance(value, np.generic) else value


def scored(items: list, scores: list[float], names: list | None) -> list[dict[str, Any]]:
    """`{"item", "score"}` per item, and `"name"` where the run's item table names it."""
    if names is None:
        return [{"item": i, "score": s} for i, s in zip(items, scores)]
    return [
        {"item": i, "score": s, **({"name": n} if n is not None else {})}
        for i, s, n in zip(items, scores, names)
    ]


@dataclass
class Recommendation:
    items: list  # original item ids, best first
    scores: list[float]
    unknown: list = field(default_factory=list)  # ids of the input the model does not know
    used: int = 0  # known input items (before truncation to max_len)
    names: list | None = None  # the items' names (None where unnamed); None: no item table

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": scored(self.items, self.scores, self.names),
            "unknown": self.unknown,
            "used": self.used,
        }


@dataclass(frozen=True)
class Query:
    """One sequence and its own settings, for `Recommender.answer_each`."""

    items: Sequence[ItemId]
    k: int = 10
    exclude_seen: bool = True
    strict: bool = False
    explain: bool = False  # FAME's per-head lists too (`Recommender.explain`)


@dataclass
class HeadList:
    head: int
    gate: float  # the head's weight in the integrated score (Eq. 10)
    experts: list[float]  # router weights over the head's experts at the last position
    items: list
    scores: list[float]
    names: list | None = None  # as Recommendation.names


@dataclass
class ExplainedRecommendation:
    recommendation: Recommendation
    heads: list[HeadList]  # empty for models without facet heads (SASRec)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        payload = self.recommendation.to_dict()
        payload["heads"] = [
            {
                "head": h.head,
                "gate": h.gate,
                "experts": h.experts,
                "items": scored(h.items, h.scores, h.names),
            }
            for h in self.heads
        ]
        if self.note:
            payload["note"] = self.note
        return payload


class Recommender:
    """A trained model with its id mapping and the training histories."""

    def __init__(self, run_dir: str | Path, device: str = "cpu"):
        self.device = resolve_device(device)
        run = load_run(run_dir, device=self.device)
        self.run_dir = Path(run_dir)
        self.config = run.config
        self.model = run.model
        self.data = run.data
        self.metrics = run.metrics
        self.max_len = run.config.model.max_len
        self.num_items = run.data.num_items
        self.item_ids = [_native(i) for i in run.data.item_ids]  # internal id j+1 at index j
        self._item_index = {item: j + 1 for j, item in enumerate(self.item_ids)}
        self._user_index = {_native(u): row for row, u in enumerate(run.data.user_ids)}
        self._ids_are_ints = run.data.item_ids.dtype.kind in "iu"
        self._users_are_ints = run.data.user_ids.dtype.kind in "iu"
        self.item_table = load_item_table(self.run_dir)  # None: the run has no --items table
        self._names = self.item_table.names if self.item_table is not None else None
        self._run = run
        self._facets: dict[tuple[int, int], dict] = {}  # (k, users) -> `facets` answer
        self._facets_lock = threading.Lock()

    def facets(self, k: int = 10, users: int = 1000) -> dict:
        """`famerec explain --facets`'s report on `users` sampled test users (the same sample
        every time): how concentrated each head's top-k lists are in item attributes, beside
        the integrated and random lists. Computed once per (k, users), then kept."""
        from famerec.analysis import attribute_matrix_for, facet_report

        if not self.model.explains:
            raise FamerecError(
                f"facets need a model that explains its heads (FAME); this is {self.model_name}"
            )
        with self._facets_lock:
            key = (k, users)
            if key not in self._facets:
                attributes = attribute_matrix_for(self._run)
                self._facets[key] = facet_report(self._run, attributes, k=k, max_users=users)
            return self._facets[key]

    @property
    def model_name(self) -> str:
        return self.config.model.name

    # -- ids -------------------------------------------------------------------------------

    @property
    def has_names(self) -> bool:
        return bool(self._names)

    def item_name(self, item: ItemId) -> str | None:
        """The item's name in the run's item table (`--items`), or None."""
        return self._names.get(str(item)) if self._names else None

    def item_names(self, items: Sequence[ItemId]) -> list | None:
        """Each item's name (None where unnamed); None when the run has no item table."""
        if self._names is None:
            return None
        return [self._names.get(str(item)) for item in items]

    def item_info(self, items: Sequence[ItemId]) -> list[dict[str, Any]]:
        """`{"item", "name", "attributes": {column: [values]}}` per known item, from the run's
        item table (`--items`); fields the table does not have are left out, unknown ids too."""
        table = self.item_table
        found = []
        for item in items:
            internal = self._internal_item(item)
            if internal is None:
                continue
            original = self.item_ids[internal - 1]
            entry: dict[str, Any] = {"item": original}
            if table is not None:
                key = str(original)
                if key in table.names:
                    entry["name"] = table.names[key]
                attributes = {c: v[key] for c, v in table.attributes.items() if v.get(key)}
                if attributes:
                    entry["attributes"] = attributes
            found.append(entry)
        return found

    def items_named(self, name: str, limit: int = 10) -> list[ItemId]:
        """Ids of the items whose name is `name` (any case), else of those whose name holds
        it, at most `limit`, in catalog order; [] without names."""
        if not self._names:
            return []
        wanted = name.strip().casefold()
        named = [(item, self._names.get(str(item), "").casefold()) for item in self.item_ids]
        exact = [item for item, text in named if text == wanted]
        return (exact or [item for item, text in named if wanted and wanted in text])[:limit]

    def _internal_item(self, item: ItemId) -> int | None:
        return _lookup(self._item_index, item, self._ids_are_ints)

    def encode(self, items: Sequence[ItemId], strict: bool = False) -> tuple[list[int], list]:
        """Original ids -> (internal ids of the known ones, unknown ids)."""
        if isinstance(items, (str, bytes)):
            raise FamerecError("a sequence must be a list of item ids, not a single string")
        known, unknown = [], []
        for item in items:
            internal = self._internal_item(item)
            if internal is None:
                unknown.append(item)
            else:
                known.append(internal)
        if unknown and strict:
            shown = ", ".join(map(repr, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
            raise UnknownItemsError(f"{len(unknown)} unknown item ids: {shown}")
        return known, unknown

    def user_history(self, user_id: ItemId) -> list:
        """The user's whole known sequence (train, validation and test items), original ids."""
        row = _lookup(self._user_index, user_id, self._users_are_ints, "user")
        if row is None:
            raise FamerecError(f"unknown user {user_id!r}")
        return [self.item_ids[i - 1] for i in self.data.sequence(row)]

    # -- batching ------------------------------------------------------------------------------

    def _encode_known(
        self, items: Sequence[ItemId], strict: bool, where: str = "the sequence"
    ) -> tuple[list[int], list]:
        known, unknown = self.encode(items, strict=strict)
        if not known:
            raise NoKnownItemsError(f"{where} has no item the model knows")
        return known, unknown

    def _encode_all(
        self, sequences: Sequence[Sequence[ItemId]], strict: bool
    ) -> tuple[list[list[int]], list[list]]:
        encoded, unknowns = [], []
        for position, items in enumerate(sequences):
            where = f"sequence {position}" if len(sequences) > 1 else "the sequence"
            known, unknown = self._encode_known(items, strict, where)
            encoded.append(known)
            unknowns.append(unknown)
        return encoded, unknowns

    def _pad(self, encoded: list[list[int]]) -> torch.Tensor:
        """Left-padded (B, width) tensor of the most recent known items of each sequence."""
        width = min(self.max_len, max(len(k) for k in encoded))
        batch = torch.zeros(len(encoded), width, dtype=torch.long)
        for row, known in enumerate(encoded):
            recent = known[-width:]
            batch[row, width - len(recent) :] = torch.tensor(recent)
        return batch.to(self.device)

    def _exclusion(self, encoded: list[list[int]], exclude: list[bool]) -> torch.Tensor | None:
        """(B, V + 1) True at the seen items of the rows that exclude them; None if none do."""
        if not any(exclude):
            return None
        seen = [known if row_excludes else [] for known, row_excludes in zip(encoded, exclude)]
        mask = torch.zeros(len(seen), self.num_items + 1, dtype=torch.bool)
        counts = torch.tensor([len(s) for s in seen])
        rows = torch.repeat_interleave(torch.arange(len(seen)), counts)
        mask[rows, torch.tensor([i for s in seen for i in s], dtype=torch.long)] = True
        return mask.to(self.device)

    def _exclude(self, scores: torch.Tensor, encoded: list[list[int]], exclude: list[bool]) -> None:
        """Set the seen items of the rows that exclude them to -inf, in place: what
        `_exclusion`'s mask does, without a (B, V + 1) mask to build and read."""
        seen = [known if out else [] for known, out in zip(encoded, exclude)]
        items = [item for known in seen for item in known]
        if items:
            rows = [row for row, known in enumerate(seen) for _ in known]
            where = torch.tensor([rows, items], dtype=torch.long, device=scores.device)
            scores.index_put_(
                (where[0], where[1]), torch.tensor(float("-inf"), device=scores.device)
            )

    def _check_k(self, k: int) -> int:
        if not isinstance(k, int) or k < 1:
            raise FamerecError(f"k must be a positive integer, got {k!r}")
        return min(k, self.num_items)

    def _listed(self, indices: list[int], scores: list[float], k: int) -> tuple[list, list]:
        """The first k (internal id, score) pairs, -inf (excluded) ones left out, as original
        ids and scores."""
        pairs = [(i, s) for i, s in zip(indices[:k], scores[:k]) if s != float("-inf")]
        return [self.item_ids[i - 1] for i, _ in pairs], [s for _, s in pairs]

    # -- recommending --------------------------------------------------------------------------

    @torch.inference_mode()
    def recommend_batch(
        self,
        sequences: Sequence[Sequence[ItemId]],
        k: int = 10,
        exclude_seen: bool = True,
        strict: bool = False,
    ) -> list[Recommendation]:
        k = self._check_k(k)
        if len(sequences) == 0:
            return []
        encoded, unknowns = self._encode_all(sequences, strict)
        count = len(encoded)
        return self._recommend_encoded(encoded, unknowns, [k] * count, [exclude_seen] * count)

    def _recommend_encoded(
        self, encoded: list[list[int]], unknowns: list[list], ks: list[int], exclude: list[bool]
    ) -> list[Recommendation]:
        """One model call for all rows, each with its own k and exclusion."""
        scores = self.model.score(self._pad(encoded))  # (B, V + 1)
        self._exclude(scores, encoded, exclude)
        top = scores.topk(max(ks), dim=1)
        values, indices = top.values.cpu().tolist(), top.indices.cpu().tolist()
        results = []
        for row, k in enumerate(ks):
            items, item_scores = self._listed(indices[row], values[row], k)
            results.append(
                Recommendation(
                    items, item_scores, unknowns[row], len(encoded[row]), self.item_names(items)
                )
            )
        return results

    def recommend(
        self, items: Sequence[ItemId], k: int = 10, exclude_seen: bool = True, strict: bool = False
    ) -> Recommendation:
        return self.recommend_batch([items], k, exclude_seen, strict)[0]

    def recommend_user(self, user_id: ItemId, k: int = 10, exclude_seen: bool = True):
        return self.recommend(self.user_history(user_id), k, exclude_seen)

    @torch.inference_mode()
    def explain(
        self, items: Sequence[ItemId], k: int = 10, exclude_seen: bool = True, strict: bool = False
    ) -> ExplainedRecommendation:
        """FAME's per-head lists with gate and router weights, and the integrated list."""
        k = self._check_k(k)
        if not self.model.explains:
            return self._without_heads(self.recommend(items, k, exclude_seen, strict))
        known, unknown = self._encode_known(items, strict)
        return self._explain_encoded([known], [unknown], [k], [exclude_seen])[0]

    def _without_heads(self, recommendation: Recommendation) -> ExplainedRecommendation:
        note = f"{self.model_name} has no facet heads to explain; only FAME does"
        return ExplainedRecommendation(recommendation, [], note=note)

    def _explain_encoded(
        self, encoded: list[list[int]], unknowns: list[list], ks: list[int], exclude: list[bool]
    ) -> list[ExplainedRecommendation]:
        """A model that explains: one model call for all rows, each with its own k and exclusion."""
        explanation = self.model.explain(
            self._pad(encoded), max(ks), exclude=self._exclusion(encoded, exclude)
        )
        head_items, head_scores = explanation.head_items.tolist(), explanation.head_scores.tolist()
        items, scores = explanation.items.tolist(), explanation.scores.tolist()
        gates, routers = explanation.gate.tolist(), explanation.router.tolist()
        results = []
        for row, k in enumerate(ks):
            heads = []
            for head, (gate, experts) in enumerate(zip(gates[row], routers[row])):
                listed = self._listed(head_items[row][head], head_scores[row][head], k)
                heads.append(HeadList(head + 1, gate, experts, *listed, self.item_names(listed[0])))
            listed = self._listed(items[row], scores[row], k)
            recommendation = Recommendation(
                *listed, unknowns[row], len(encoded[row]), self.item_names(listed[0])
            )
            results.append(ExplainedRecommendation(recommendation, heads))
        return results

    @torch.inference_mode()
    def answer_each(
        self, queries: Sequence[Query]
    ) -> list[Recommendation | ExplainedRecommendation | FamerecError]:
        """Each query's own answer, or its own error (a bad k, unknown ids with `strict`, no
        known item), with one model call for all the plain queries and one for the explained
        ones: what `recommend` (or `explain`) answers for each query alone, up to float
        rounding (a batch's shape changes the order of float additions, not the ranking
        beyond exact ties). One query's error does not touch the others."""
        answers: list = [None] * len(queries)
        groups: dict[bool, list] = {False: [], True: []}  # plain, explained (FAME's heads)
        for position, query in enumerate(queries):
            try:
                k = self._check_k(query.k)
                known, unknown = self._encode_known(query.items, query.strict)
            except FamerecError as error:
                answers[position] = error
                continue
            explained = query.explain and self.model.explains
            groups[explained].append((position, known, unknown, k, query.exclude_seen))
        for explained, members in groups.items():
            if members:
                positions, encoded, unknowns, ks, exclude = (list(c) for c in zip(*members))
                score = self._explain_encoded if explained else self._recommend_encoded
                for position, answer in zip(positions, score(encoded, unknowns, ks, exclude)):
                    explain_anyway = queries[position].explain and not explained
                    answers[position] = self._without_heads(answer) if explain_anyway else answer
        return answers

    # -- vectors -----------------------------------------------------------------------------

    @property
    def dot_product_scores(self) -> bool:
        """True when scores are query vector . item vector, so vector indexes apply."""
        return self.model.dot_product_scores

    def _check_vectors(self) -> None:
        if not self.dot_product_scores:
            raise FamerecError(
                f"{self.model_name} scores are not one dot product of a query and an item "
                "vector: vector indexes (ANN) do not apply; use recommend(), which scores exactly"
            )

    @torch.inference_mode()
    def query_vectors(self, sequences: Sequence[Sequence[ItemId]], strict: bool = False):
        """(B, d) float32: one vector per sequence; its dot product with `item_vectors()` rows
        is the model's score (for FAME, sum_h g_h W_f^(h) F^(h), Eq. 11 collapsed)."""
        self._check_vectors()
        encoded, _ = self._encode_all(sequences, strict)
        return self.model.last_query_vectors(self._pad(encoded)).float().cpu().numpy()

    @torch.inference_mode()
    def item_vectors(self) -> np.ndarray:
        """(num_items, d) float32, row j for item `item_ids[j]`."""
        self._check_vectors()
        return self.model.item_vectors()[1:].float().cpu().numpy()


def load(run_dir: str | Path, device: str = "cpu") -> Recommender:
    """Load a finished run for recommendation (`device`: cpu, cuda or auto)."""
    return Recommender(run_dir, device=device)


def _lookup(index: dict, key: ItemId, ints: bool, what: str = "item") -> int | None:
    """`index[key]` under the data's id rule (`famerec.data.ids.query_id`): an id of
    integer-keyed data may come as its plain text, an id of text-keyed data as a number; None
    when unknown. An id that the data files would refuse is one line (FamerecError)."""
    try:
        found = query_id(key, ints)
    except ValueError as error:
        raise FamerecError(f"{what} {error}") from None
    return None if found is None else index.get(found)
