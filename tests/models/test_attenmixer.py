import pytest
import torch
import torch.nn.functional as F

from famerec.config import ModelConfig, RunConfig
from famerec.errors import ConfigError
from famerec.models import build_model
from famerec.models.attenmixer import AttenMixer, AttenMixerOptions, last_item_sums
from tests.conftest import tiny_overrides
from tests.models import session_checks

NUM_ITEMS = 30


def model(levels=3, lp_norm=4.0, **kwargs) -> AttenMixer:
    torch.manual_seed(0)
    config = ModelConfig(
        name="attenmixer", hidden_size=16, num_heads=2, max_len=10, dropout=0.0, **kwargs
    )
    return build_model(config, NUM_ITEMS, AttenMixerOptions(levels, lp_norm)).eval()


def test_level_sums_hold_only_the_last_real_items():
    x = torch.randn(1, 6, 4)
    x[:, :2] = 0.0  # left padding: the model zeroes padded items before summing
    sums = last_item_sums(x, levels=5)  # (1, 6, 5, 4)
    for t in range(6):
        for level in range(1, 6):
            first = max(t - level + 1, 0)
            torch.testing.assert_close(sums[0, t, level - 1], x[0, first : t + 1].sum(0))
    # a session of two items: every level from 2 on holds exactly those two items
    two = sums[0, 3]
    torch.testing.assert_close(two[1:], x[0, 2:4].sum(0).expand(4, -1))


def test_level_queries_never_see_padding():
    mixer = model(levels=4)
    seq = torch.tensor([[0, 0, 0, 7, 8]])
    x, _ = mixer.session_items(seq)
    before = mixer.level_queries(x)
    with torch.no_grad():
        mixer.item_embedding.weight[0] = torch.randn(16)  # padding row no longer zero
    x, _ = mixer.session_items(seq)
    assert (x[0, :3] == 0).all()
    torch.testing.assert_close(mixer.level_queries(x), before)
    # levels 2, 3 and 4 of the last position sum the same two real items
    sums = last_item_sums(x, 4)[0, -1]
    torch.testing.assert_close(sums[1:], sums[1].expand(3, -1))


def test_padding_never_reaches_a_readout():
    mixer = model()
    seq = torch.tensor([[3, 4, 5]])
    expected = mixer.score(seq)
    torch.testing.assert_close(mixer.score(torch.tensor([[0, 0, 0, 0, 3, 4, 5]])), expected)
    with torch.no_grad():
        mixer.item_embedding.weight[0] = torch.randn(16)
    torch.testing.assert_close(mixer.score(torch.tensor([[0, 0, 3, 4, 5]]))[:, 1:], expected[:, 1:])


def test_each_position_is_the_session_of_its_prefix():
    """One causal pass trains every prefix -> next item, as separate sessions would."""
    mixer = model()
    seq = torch.tensor([[0, 0, 3, 9, 4, 5, 12], [1, 2, 3, 4, 5, 6, 7]])
    every = mixer.query_vectors(seq)  # (2, 7, d)
    for t in range(2, 7):
        torch.testing.assert_close(every[:, t], mixer.last_query_vectors(seq[:, : t + 1]))


def test_scores_are_scaled_cosines():
    mixer = model()
    seq = torch.tensor([[3, 4, 5], [0, 6, 7]])
    scores = mixer.score(seq)
    session = mixer.sessions(seq, last_only=True)[:, -1]
    cosine = F.normalize(session, dim=-1) @ F.normalize(mixer.item_embedding.weight[1:], dim=-1).T
    torch.testing.assert_close(scores[:, 1:], 16.0 * cosine)
    assert torch.isneginf(scores[:, 0]).all()


def test_the_mixer_is_an_lp_pool_of_the_levels_maps():
    mixer = model(levels=3, lp_norm=1.0)  # p = 1: the pool is the sum of the maps
    seq = torch.tensor([[0, 3, 4, 5, 6]])
    x, real = mixer.session_items(seq)
    queries = mixer.level_queries(x)[:, -1:]  # (1, 1, 3, d)
    mask = real[:, None, None, :]
    weights = mixer.mixer.attention(queries, x, mask)  # (1, H, 1, L)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2, 1))
    assert (weights[..., 0] == 0).all()  # the padded position gets no weight
    q = mixer.mixer.query(queries).view(1, 3, 2, 8)
    k = mixer.mixer.key(x).view(1, 5, 2, 8)
    affinity = torch.sigmoid(torch.einsum("lhe,jhe->hlj", q[0], k[0]))[..., 1:]  # (H, 3, 4)
    maps = torch.softmax(2 * affinity, dim=-1).sum(1)  # sum over levels (p = 1)
    torch.testing.assert_close(weights[0, :, 0, 1:], torch.softmax(2 * maps, dim=-1))


def test_invalid_options():
    base = tiny_overrides("unused.txt", **{"model.name": "attenmixer"})
    for key, value in (("levels", 0), ("levels", 13), ("lp_norm", 0.5), ("scale", 0.0)):
        with pytest.raises(ConfigError):
            RunConfig().with_overrides({**base, f"attenmixer.{key}": value}).validate()


class TestProtocol(session_checks.SessionProtocol):
    name = "attenmixer"
    flags = ["--levels", "--lp-norm", "--scale"]
