"""Approximate top-k with a vector index (the optional `famerec[ann]` extra, faiss-cpu).

A run's scores are exact dot products `query_vectors(...) @ item_vectors().T`, so any
maximum-inner-product index can serve them. The HNSW index here first turns inner-product
search into nearest-neighbour search (each item vector gets one extra coordinate
sqrt(M - |x|^2), M the largest squared norm; queries get 0), where HNSW recalls much better than
on raw inner products. `recall_at_k` measures an index against exact scoring.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from famerec.errors import FamerecError
from famerec.serving.recommender import ItemId, Recommender


def _faiss():
    try:
        import faiss
    except ImportError:
        raise FamerecError(
            "vector indexes need faiss: pip install 'famerec[ann]' (or faiss-cpu)"
        ) from None
    return faiss


class ItemIndex:
    """Maximum-inner-product search over a run's item vectors."""

    def __init__(
        self,
        recommender: Recommender,
        kind: str = "hnsw",
        neighbors: int = 32,
        ef_search: int = 128,
        ef_construction: int = 200,
    ):
        faiss = _faiss()
        self.recommender = recommender
        self.kind = kind
        vectors = recommender.item_vectors().astype(np.float32)
        dim = vectors.shape[1]
        if kind == "hnsw":
            squared = (vectors**2).sum(1)
            self.max_squared_norm = float(squared.max())
            extra = np.sqrt(np.maximum(self.max_squared_norm - squared, 0.0))[:, None]
            self.index = faiss.IndexHNSWFlat(dim + 1, neighbors)
            self.index.hnsw.efConstruction = ef_construction
            self.index.add(np.ascontiguousarray(np.hstack([vectors, extra]), dtype=np.float32))
            self.index.hnsw.efSearch = ef_search
        elif kind == "flat":
            self.index = faiss.IndexFlatIP(dim)
            self.index.add(np.ascontiguousarray(vectors))
        else:
            raise FamerecError(f"unknown index kind '{kind}' (hnsw or flat)")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, d) query vectors -> (B, k) item rows (index into `item_ids`) and their scores."""
        queries = np.asarray(queries, dtype=np.float32)
        if self.kind == "flat":
            scores, rows = self.index.search(np.ascontiguousarray(queries), k)
            return rows, scores
        padded = np.hstack([queries, np.zeros((len(queries), 1), dtype=np.float32)])
        distances, rows = self.index.search(np.ascontiguousarray(padded), k)
        # |q - x'|^2 = |q|^2 + M - 2 q.x, so the inner product follows from the distance
        scores = ((queries**2).sum(1, keepdims=True) + self.max_squared_norm - distances) / 2
        return rows, scores

    def recommend_batch(self, sequences: Sequence[Sequence[ItemId]], k: int = 10) -> list[list]:
        """Approximate top-k original ids for each sequence (seen items are not excluded)."""
        rows, _ = self.search(self.recommender.query_vectors(sequences), k)
        ids = self.recommender.item_ids
        return [[ids[r] for r in row if r >= 0] for row in rows]


def build_index(recommender: Recommender, kind: str = "hnsw", **options) -> ItemIndex:
    return ItemIndex(recommender, kind=kind, **options)


def recall_at_k(index: ItemIndex, queries: np.ndarray, k: int = 10) -> float:
    """Share of the exact top-k items (by dot product) that the index returns."""
    exact = queries @ index.recommender.item_vectors().T  # (B, V)
    truth = np.argpartition(-exact, k, axis=1)[:, :k]
    found, _ = index.search(queries, k)
    hits = sum(len(set(t) & set(f)) for t, f in zip(truth, found))
    return hits / (k * len(queries))
