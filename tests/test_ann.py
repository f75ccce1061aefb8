import numpy as np
import pytest

import famerec

faiss = pytest.importorskip("faiss")  # the famerec[ann] extra; CI installs it

from famerec.ann import build_index, recall_at_k  # noqa: E402


def test_flat_index_is_exact_and_hnsw_recalls(trained_runs):
    rec = famerec.load(trained_runs["fame"])
    sequences = [[f"i{(3 * n + j) % 30 + 1}" for j in range(4)] for n in range(20)]
    queries = rec.query_vectors(sequences)
    flat = build_index(rec, kind="flat")
    assert recall_at_k(flat, queries, k=5) == 1.0
    exact = rec.recommend_batch(sequences, k=5, exclude_seen=False)
    assert flat.recommend_batch(sequences, k=5) == [r.items for r in exact]
    hnsw = build_index(rec, kind="hnsw", neighbors=8, ef_search=64)
    assert recall_at_k(hnsw, queries, k=5) >= 0.9
    rows, scores = hnsw.search(queries, 5)
    assert rows.shape == (20, 5) and np.all(np.diff(scores, axis=1) <= 1e-5)
