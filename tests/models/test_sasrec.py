import pytest
import torch
import torch.nn.functional as F

import famerec
from famerec.config import ModelConfig
from famerec.errors import ConfigError
from famerec.models import SASRec, build_model, init_fame_from_sasrec
from famerec.models.layers import BLOCK_PARTS, block_parts
from famerec.models.sasrec import SASRecOptions
from tests.models.contrastive_checks import train_tiny

NUM_ITEMS = 30


def model(name="sasrec", **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(name=name, hidden_size=16, num_heads=2, max_len=10, dropout=0.0, **kwargs)
    return build_model(config, NUM_ITEMS).eval()


def test_score_shape_and_padding_never_wins():
    sasrec = model()
    seq = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    scores = sasrec.score(seq)
    assert scores.shape == (2, NUM_ITEMS + 1)
    assert torch.isneginf(scores[:, 0]).all()
    assert (scores.argmax(1) != 0).all()


def test_left_padding_does_not_change_scores():
    sasrec = model()
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[0, 0, 0, 0, 3, 4, 5]])
    torch.testing.assert_close(sasrec.score(short), sasrec.score(padded))


def test_sequences_longer_than_max_len_keep_the_most_recent():
    sasrec = model()
    long = torch.arange(1, 16).unsqueeze(0)  # 15 items, max_len 10
    torch.testing.assert_close(sasrec.score(long), sasrec.score(long[:, -10:]))


def test_causality_later_items_do_not_change_earlier_positions():
    sasrec = model()
    seq = torch.tensor([[0, 1, 2, 3, 4, 5, 6]])
    changed = seq.clone()
    changed[0, 5:] = torch.tensor([9, 12])
    before = sasrec.query_vectors(seq)
    after = sasrec.query_vectors(changed)
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_loss_only_at_real_positions():
    sasrec = model()
    seq = torch.tensor([[0, 0, 1, 2], [5, 6, 7, 8]])
    targets = torch.tensor([[0, 0, 2, 3], [6, 7, 8, 9]])
    loss = sasrec.loss((seq, targets))
    queries = sasrec.query_vectors(seq)
    logits = queries @ sasrec.item_embedding.weight[1:].T
    real = targets != 0
    expected = torch.nn.functional.cross_entropy(logits[real], targets[real] - 1)
    torch.testing.assert_close(loss, expected)


def test_whatever_padded_positions_hold_never_reaches_real_positions():
    sasrec = model()
    seq = torch.tensor([[0, 0, 1, 2], [0, 6, 7, 8], [5, 6, 7, 8]])
    targets = torch.tensor([[0, 0, 2, 3], [0, 7, 8, 9], [6, 7, 8, 9]])
    real = seq != 0
    before, loss_before = sasrec.query_vectors(seq), sasrec.loss((seq, targets))
    embed = sasrec.embed

    def garbage_at_padding(item_seq):
        x, is_real = embed(item_seq)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 100
        return torch.where(is_real.unsqueeze(-1), x, noise), is_real

    sasrec.embed = garbage_at_padding
    seen = []
    sasrec.blocks[0].register_forward_pre_hook(lambda block, args: seen.append(args[0]))
    after, loss_after = sasrec.query_vectors(seq), sasrec.loss((seq, targets))
    assert seen[0][~real].abs().min() > 0  # the garbage does enter the Transformer blocks
    torch.testing.assert_close(after[real], before[real])
    torch.testing.assert_close(loss_after, loss_before)


def test_output_layer_is_tied_to_item_embeddings():
    sasrec = model()
    assert isinstance(sasrec, SASRec)
    seq = torch.tensor([[1, 2, 3]])
    expected = sasrec.query_vectors(seq)[:, -1] @ sasrec.item_embedding.weight.T
    torch.testing.assert_close(sasrec.score(seq)[:, 1:], expected[:, 1:])


# -- --block pytorch: the block as SASRecs on nn.MultiheadAttention write it ---------------------


def pytorch_block_model(block: str = "pytorch") -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(name="sasrec", hidden_size=16, num_heads=2, max_len=10, dropout=0.0)
    return build_model(config, NUM_ITEMS, SASRecOptions(block=block)).eval()


def reference_query_vectors(sasrec, seq: torch.Tensor) -> torch.Tensor:
    """The same weights run through torch's nn.MultiheadAttention, every sequence padded to
    max_len and only a causal mask, residual from the block's input: the model written the way
    Xu et al.'s SASRec is."""
    d, heads = sasrec.hidden_size, sasrec.config.num_heads
    seq = F.pad(seq, (sasrec.max_len - seq.shape[1], 0))
    padding = (seq == 0).unsqueeze(-1)
    x = sasrec.item_embedding(seq) * d**0.5 + sasrec.position_embedding.weight
    x = x.masked_fill(padding, 0.0)
    causal = torch.ones(seq.shape[1], seq.shape[1], dtype=torch.bool).triu(1)  # True = hidden
    for block in sasrec.blocks:
        mha = torch.nn.MultiheadAttention(d, heads, batch_first=True).eval()
        with torch.no_grad():
            attn = block.attn
            mha.in_proj_weight.copy_(
                torch.cat([attn.query.weight, attn.key.weight, attn.value.weight])
            )
            mha.in_proj_bias.copy_(torch.cat([attn.query.bias, attn.key.bias, attn.value.bias]))
            mha.out_proj.weight.copy_(attn.output.weight)
            mha.out_proj.bias.copy_(attn.output.bias)
        q = block.attn_norm(x)
        x = mha(q, x, x, attn_mask=causal, need_weights=False)[0] + x
        x = block.ffn_norm(x)
        x = block.ffn.outer(torch.relu(block.ffn.inner(x))) + x
        x = x.masked_fill(padding, 0.0)
    return sasrec.final_norm(x)


def test_pytorch_block_equals_one_built_on_nn_multihead_attention():
    sasrec = pytorch_block_model()
    with torch.no_grad():  # non-zero biases: padded keys then carry the key and value biases
        for block in sasrec.blocks:
            for layer in (block.attn.query, block.attn.key, block.attn.value, block.attn.output):
                layer.bias.normal_()
    seq = torch.tensor([[0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6]])
    ours = sasrec.query_vectors(seq)
    torch.testing.assert_close(ours, reference_query_vectors(sasrec, seq)[:, -6:])


def test_pytorch_block_scores_do_not_depend_on_the_batch_padding():
    sasrec = pytorch_block_model()
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[0, 0, 0, 0, 3, 4, 5]])
    torch.testing.assert_close(sasrec.score(short), sasrec.score(padded))
    seq = torch.tensor([[0, 1, 2, 3, 4, 5, 6]])
    changed = seq.clone()
    changed[0, 5:] = torch.tensor([9, 12])
    before, after = sasrec.query_vectors(seq), sasrec.query_vectors(changed)
    torch.testing.assert_close(before[:, :5], after[:, :5])  # still causal


def test_pytorch_block_initialization_is_pytorchs():
    sasrec = pytorch_block_model()
    block = sasrec.blocks[0]
    bound = (6 / (16 + 48)) ** 0.5  # Xavier-uniform over the stacked (3d, d) projection
    for layer in (block.attn.query, block.attn.key, block.attn.value):
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.8 * bound
        assert torch.equal(layer.bias, torch.zeros(16))
    assert torch.equal(block.attn.output.bias, torch.zeros(16))
    # the feed-forward layers keep PyTorch's Kaiming-uniform weights and uniform biases
    assert block.ffn.inner.weight.abs().max() <= 1 / 16**0.5
    assert block.ffn.inner.bias.abs().max() > 0
    # the reference block keeps the model's Xavier-normal matrices, zero biases, no projection
    reference = model()
    assert reference.blocks[0].attn.output is None
    assert torch.equal(reference.blocks[0].ffn.inner.bias, torch.zeros(16))


def test_a_run_of_one_block_style_does_not_start_another():
    sasrec, other = model(), pytorch_block_model()
    with pytest.raises(ConfigError, match="--block pytorch, this one --block sasrec"):
        sasrec.prepare(other, seed=0)
    cl4srec = build_model(
        ModelConfig(name="cl4srec", hidden_size=16, num_heads=2, max_len=10), NUM_ITEMS
    )
    with pytest.raises(ConfigError, match="--block pytorch, this one --block sasrec"):
        cl4srec.prepare(other, seed=0)
    fame = build_model(ModelConfig(name="fame", hidden_size=16, num_heads=2, max_len=10), NUM_ITEMS)
    with pytest.raises(ConfigError, match="--block pytorch"):
        init_fame_from_sasrec(fame, other)
    # the initialization alone computes nothing else: its weights start the reference block
    drawn = pytorch_block_model("torch-init")
    assert sasrec.prepare(drawn, seed=0) and cl4srec.prepare(drawn, seed=0)
    assert torch.equal(cl4srec.blocks[1].ffn.outer.weight, drawn.blocks[1].ffn.outer.weight)


def test_fame_starts_from_a_torch_init_sasrec_and_refuses_other_parts():
    """torch-init changes how the weights were drawn, not what they compute: FAME copies them."""
    fame = build_model(ModelConfig(name="fame", hidden_size=16, num_heads=2, max_len=10), NUM_ITEMS)
    source = pytorch_block_model("torch-init")
    copied = init_fame_from_sasrec(fame, source)
    assert "blocks.0.attn.query.weight" in copied
    copied_weight = fame.state_dict()["blocks.0.ffn.inner.weight"]
    assert torch.equal(copied_weight, source.blocks[0].ffn.inner.weight)
    for part in ("projection", "input-residual", "padded-keys"):
        with pytest.raises(ConfigError, match=f"--block {part}"):
            init_fame_from_sasrec(fame, pytorch_block_model(part))


@pytest.mark.parametrize("name", ["sasrec", "cl4srec", "duorec", "iclrec"])
def test_models_built_on_sasrec_train_and_load_with_the_pytorch_block(name, seq_file, tmp_path):
    out = tmp_path / "run"
    records = train_tiny(name, seq_file, out, **{f"{name}.block": "pytorch"})
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    served = famerec.load(out).model
    assert served.options.block == "pytorch"
    assert all(block.attn.output is not None for block in served.blocks)


def test_block_parts_parse_and_pytorch_is_all_four():
    assert block_parts("sasrec") == frozenset()
    assert block_parts("pytorch") == frozenset(BLOCK_PARTS)
    assert block_parts("input-residual, projection") == {"input-residual", "projection"}
    with pytest.raises(ValueError, match="comma-separated list"):
        block_parts("projection,residual")
    with pytest.raises(ConfigError, match="--block 'pre-norm'"):
        SASRecOptions(block="pre-norm").validate(ModelConfig(hidden_size=16, num_heads=2), None)
    every_part = pytorch_block_model()
    listed = pytorch_block_model(block=",".join(BLOCK_PARTS))
    seq = torch.tensor([[0, 0, 3, 4, 5]])
    torch.testing.assert_close(every_part.score(seq), listed.score(seq))


@pytest.mark.parametrize("part", BLOCK_PARTS)
def test_each_block_part_alone_changes_the_model(part):
    seq = torch.tensor([[0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        reference = model()
        alone = pytorch_block_model(block=part)
        if part != "torch-init":  # the same weights: only the computation differs
            alone.load_state_dict(reference.state_dict(), strict=part != "projection")
        else:
            torch.testing.assert_close(alone.item_embedding.weight, reference.item_embedding.weight)
        assert alone.block_parts == {part}
        assert not torch.allclose(alone.query_vectors(seq), reference.query_vectors(seq))
