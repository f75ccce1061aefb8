import pytest
import torch
import torch.nn.functional as F

from famerec.config import ModelConfig
from famerec.errors import ConfigError
from famerec.models import FAMEOptions, build_model, init_fame_from_sasrec, warm_start_new_parts


def build(name, num_items=25, num_experts=None, **kwargs):
    config = ModelConfig(name=name, hidden_size=64, max_len=10, **kwargs)
    options = FAMEOptions(num_experts=num_experts) if num_experts else None
    return build_model(config, num_items, options)


def test_transfer_copies_exactly_the_right_tensors():
    torch.manual_seed(0)
    sasrec = build("sasrec", num_layers=3, num_heads=2)
    torch.manual_seed(1)
    fame = build("fame", num_layers=3, num_heads=4, num_experts=3)
    before = {k: v.clone() for k, v in fame.state_dict().items()}
    copied = init_fame_from_sasrec(fame, sasrec)
    source = sasrec.state_dict()
    after = fame.state_dict()

    expected = {
        "item_embedding.weight": "item_embedding.weight",
        "position_embedding.weight": "position_embedding.weight",
        "facet_layer.attn_norm.weight": "blocks.2.attn_norm.weight",
        "facet_layer.attn_norm.bias": "blocks.2.attn_norm.bias",
        "facet_layer.attention.key.weight": "blocks.2.attn.key.weight",
        "facet_layer.attention.key.bias": "blocks.2.attn.key.bias",
        "facet_layer.attention.value.weight": "blocks.2.attn.value.weight",
        "facet_layer.attention.value.bias": "blocks.2.attn.value.bias",
    }
    for name in source:
        if name.startswith(("blocks.0.", "blocks.1.")):
            expected[name] = name
    assert sorted(copied) == sorted(expected)
    for target, origin in expected.items():
        assert torch.equal(after[target], source[origin]), target
    # the new parts keep their own random initialisation
    for name, value in after.items():
        if name not in expected:
            assert torch.equal(value, before[name]), name
    new_parts = {n for n in after if n not in expected}
    assert any(n.startswith("facet_layer.attention.expert_queries") for n in new_parts)
    assert {
        "facet_layer.attention.router",
        "facet_layer.facet_projection",
        "facet_layer.head_gate.weight",
        "facet_layer.head_ffn.inner.weight",
        "facet_layer.head_norm.weight",
    } <= new_parts


def test_key_value_split_per_head_whatever_the_head_count():
    sasrec = build("sasrec", num_heads=2)
    fame = build("fame", num_heads=8, num_experts=2)
    init_fame_from_sasrec(fame, sasrec)
    x = torch.randn(1, 3, 64)
    keys = fame.facet_layer.attention.key(x).view(1, 3, 8, 8)
    torch.testing.assert_close(keys.flatten(2), sasrec.blocks[-1].attn.key(x))


@pytest.mark.parametrize(
    "fame_kwargs, sasrec_kwargs, words",
    [
        ({}, {"num_items": 26}, "26 items in the SASRec run, 25 here"),
        ({"hidden_size": 128}, {}, "hidden size 64 in the SASRec run, 128 here"),
        ({"num_layers": 3}, {}, "layers 2 in the SASRec run, 3 here"),
    ],
)
def test_mismatch_is_a_clear_error(fame_kwargs, sasrec_kwargs, words):
    num_items = sasrec_kwargs.pop("num_items", 25)
    sasrec = build("sasrec", num_items=num_items, **sasrec_kwargs)
    fame_config = ModelConfig(name="fame", max_len=10, **{"hidden_size": 64, **fame_kwargs})
    fame = build_model(fame_config, 25)
    with pytest.raises(ConfigError, match=words):
        init_fame_from_sasrec(fame, sasrec)


@pytest.mark.parametrize("fame_heads", [2, 4])
def test_warm_start_reproduces_sasrec_last_attention_per_head(fame_heads):
    """Without noise, FAME's query vector is SASRec's last attention output, normalized per head."""
    torch.manual_seed(0)
    sasrec = build("sasrec", num_heads=fame_heads).eval()
    fame = build("fame", num_heads=fame_heads, num_experts=3).eval()
    init_fame_from_sasrec(fame, sasrec)
    names = warm_start_new_parts(fame, sasrec, noise=0.0)
    assert "facet_layer.facet_projection" in names
    seq = torch.tensor([[0, 0, 3, 7, 1, 9, 4, 2, 5, 8], [0, 0, 0, 0, 0, 0, 0, 11, 12, 13]])

    x, real = sasrec.embed(seq)
    mask = sasrec.attention_mask(real)
    x = sasrec.blocks[0](x, mask, real)
    last = sasrec.blocks[1]
    queries = last.attn_norm(x)
    attended = (queries + last.attn(queries, x, mask))[:, -1]  # (B, d)
    expected = F.layer_norm(attended.view(2, fame_heads, -1), (64 // fame_heads,), eps=1e-8)

    out = fame.facets(seq, last_only=True)
    torch.testing.assert_close(out.gate[:, -1], torch.full((2, fame_heads), 1 / fame_heads))
    torch.testing.assert_close(fame.last_query_vectors(seq), expected.flatten(1))


def test_warm_start_experts_differ_by_the_noise_only():
    torch.manual_seed(0)
    sasrec = build("sasrec", num_heads=2)
    fame = build("fame", num_heads=2, num_experts=4)
    init_fame_from_sasrec(fame, sasrec)
    warm_start_new_parts(fame, sasrec, noise=0.1, generator=torch.Generator().manual_seed(0))
    experts = fame.facet_layer.attention.expert_queries.weight.view(2, 4, 32, 64)
    source = sasrec.blocks[-1].attn.query.weight.view(2, 1, 32, 64)
    deviation = (experts - source).std() / source.std()
    assert 0.05 < deviation < 0.2
    assert not torch.equal(experts[:, 0], experts[:, 1])
