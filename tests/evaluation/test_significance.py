"""The paired bootstrap beside the paired t-test, on per-user metrics of the same users."""

import numpy as np
import pytest

from famerec.errors import FamerecError
from famerec.evaluation.significance import paired_bootstrap, paired_t_test, per_user


def test_paired_bootstrap_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(1)
    a = rng.normal(0.5, 0.1, 400)
    better = a + 0.02 + rng.normal(0, 0.05, 400)
    assert paired_bootstrap(a, better) < 0.01 and paired_t_test(a, better) < 0.001
    noise = rng.normal(0, 0.05, 400)
    level = a + noise - noise.mean()  # the same mean: nothing to find
    assert paired_bootstrap(a, level) > 0.5
    assert paired_bootstrap(a, better, seed=3) == paired_bootstrap(a, better, seed=3)
    assert paired_bootstrap(a, a) == 1.0
    with pytest.raises(FamerecError, match="at least two users"):
        paired_bootstrap(a[:1], a[:1])


def test_per_user_ndcg_from_int32_ranks_with_excluded_targets():
    ranks = np.array([0, 1, 9, 10, np.iinfo(np.int32).max], dtype=np.int32)
    assert per_user(ranks, "NDCG@10") == pytest.approx([1.0, 1 / np.log2(3), 1 / np.log2(11), 0, 0])
