"""Top-k recommendations from a finished run, in the ids of the user's own data.

    rec = famerec.load("runs/fame-beauty")
    rec.recommend(["B0001", "B0002"], k=10)

Sequences are lists of original item ids, oldest first. Unknown ids are reported back (and
skipped, unless `strict=True`); only the most recent `max_len` known items are used, but the
whole given sequence is excluded from the results when `exclude_seen` is on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from famerec.errors import FamerecError
from famerec.models import FAME
from famerec.runs import load_run, resolve_device

ItemId = int | str


class UnknownItemsError(FamerecError):
    """Raised with strict=True when a sequence holds ids the model has never seen."""


def _native(value: Any) -> Any:
    """numpy scalars -> plain Python values (for JSON and comparisons)."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class Recommendation:
    items: list  # original item ids, best first
    scores: list[float]
    unknown: list = field(default_factory=list)  # ids of the input the model does not know
    used: int = 0  # known input items (before truncation to max_len)

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": [{"item": i, "score": s} for i, s in zip(self.items, self.scores)],
            "unknown": self.unknown,
            "used": self.used,
        }


@dataclass
class HeadList:
    head: int
    gate: float  # the head's weight in the integrated score (Eq. 10)
    experts: list[float]  # router weights over the head's experts at the last position
    items: list
    scores: list[float]


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
                "items": [{"item": i, "score": s} for i, s in zip(h.items, h.scores)],
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

    @property
    def model_name(self) -> str:
        return self.config.model.name

    # -- ids -------------------------------------------------------------------------------

    def _internal_item(self, item: ItemId) -> int | None:
        found = self._item_index.get(item)
        if found is None and self._ids_are_ints and isinstance(item, str):
            try:
                found = self._item_index.get(int(item))
            except ValueError:
                found = None
        elif found is None and not self._ids_are_ints and not isinstance(item, str):
            found = self._item_index.get(str(item))
        return found

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
        row = self._user_index.get(user_id)
        if row is None and self._users_are_ints and isinstance(user_id, str):
            try:
                row = self._user_index.get(int(user_id))
            except ValueError:
                row = None
        elif row is None and not self._users_are_ints and not isinstance(user_id, str):
            row = self._user_index.get(str(user_id))
        if row is None:
            raise FamerecError(f"unknown user {user_id!r}")
        return [self.item_ids[i - 1] for i in self.data.sequence(row)]

    # -- batching ------------------------------------------------------------------------------

    def _prepare(
        self, sequences: Sequence[Sequence[ItemId]], strict: bool
    ) -> tuple[torch.Tensor, list[list[int]], list[list]]:
        """Left-padded (B, width) tensor of the most recent known items of each sequence."""
        encoded, unknowns = [], []
        for position, items in enumerate(sequences):
            known, unknown = self.encode(items, strict=strict)
            if not known:
                where = f"sequence {position}" if len(sequences) > 1 else "the sequence"
                raise FamerecError(f"{where} has no item the model knows")
            encoded.append(known)
            unknowns.append(unknown)
        width = min(self.max_len, max(len(k) for k in encoded))
        batch = torch.zeros(len(encoded), width, dtype=torch.long)
        for row, known in enumerate(encoded):
            recent = known[-width:]
            batch[row, width - len(recent) :] = torch.tensor(recent)
        return batch.to(self.device), encoded, unknowns

    def _exclusion(self, encoded: list[list[int]]) -> torch.Tensor:
        mask = torch.zeros(len(encoded), self.num_items + 1, dtype=torch.bool)
        rows = torch.repeat_interleave(
            torch.arange(len(encoded)), torch.tensor([len(k) for k in encoded])
        )
        mask[rows, torch.tensor([i for k in encoded for i in k])] = True
        return mask.to(self.device)

    def _check_k(self, k: int) -> int:
        if not isinstance(k, int) or k < 1:
            raise FamerecError(f"k must be a positive integer, got {k!r}")
        return min(k, self.num_items)

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
        batch, encoded, unknowns = self._prepare(sequences, strict)
        scores = self.model.score(batch)  # (B, V + 1)
        if exclude_seen:
            scores.masked_fill_(self._exclusion(encoded), float("-inf"))
        top = scores.topk(k, dim=1)
        values, indices = top.values.cpu().tolist(), top.indices.cpu().tolist()
        results = []
        for row in range(len(sequences)):
            pairs = [(i, s) for i, s in zip(indices[row], values[row]) if s != float("-inf")]
            results.append(
                Recommendation(
                    items=[self.item_ids[i - 1] for i, _ in pairs],
                    scores=[s for _, s in pairs],
                    unknown=unknowns[row],
                    used=len(encoded[row]),
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
        if not isinstance(self.model, FAME):
            recommendation = self.recommend(items, k, exclude_seen, strict)
            return ExplainedRecommendation(
                recommendation,
                [],
                note=f"{self.model_name} has no facet heads to explain; only FAME does",
            )
        batch, encoded, unknowns = self._prepare([items], strict)
        exclude = self._exclusion(encoded) if exclude_seen else None
        explanation = self.model.explain(batch, k, exclude=exclude)
        heads = []
        for head in range(explanation.head_items.shape[1]):
            pairs = zip(
                explanation.head_items[0, head].tolist(), explanation.head_scores[0, head].tolist()
            )
            kept = [(i, s) for i, s in pairs if s != float("-inf")]
            heads.append(
                HeadList(
                    head=head + 1,
                    gate=float(explanation.gate[0, head]),
                    experts=explanation.router[0, head].tolist(),
                    items=[self.item_ids[i - 1] for i, _ in kept],
                    scores=[s for _, s in kept],
                )
            )
        pairs = [
            (i, s)
            for i, s in zip(explanation.items[0].tolist(), explanation.scores[0].tolist())
            if s != float("-inf")
        ]
        recommendation = Recommendation(
            items=[self.item_ids[i - 1] for i, _ in pairs],
            scores=[s for _, s in pairs],
            unknown=unknowns[0],
            used=len(encoded[0]),
        )
        return ExplainedRecommendation(recommendation, heads)

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
        batch, _, _ = self._prepare(sequences, strict)
        return self.model.last_query_vectors(batch).float().cpu().numpy()

    @torch.inference_mode()
    def item_vectors(self) -> np.ndarray:
        """(num_items, d) float32, row j for item `item_ids[j]`."""
        self._check_vectors()
        return self.model.item_vectors()[1:].float().cpu().numpy()


def load(run_dir: str | Path, device: str = "cpu") -> Recommender:
    """Load a finished run for recommendation (`device`: cpu, cuda or auto)."""
    return Recommender(run_dir, device=device)
