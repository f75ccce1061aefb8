import torch

from famerec.config import ModelConfig
from famerec.models import SASRec, build_model

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
