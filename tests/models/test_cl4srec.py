import pytest
import torch

import famerec
from famerec.config import RunConfig
from famerec.data.batching import TrainBatch
from famerec.errors import ConfigError
from famerec.models.cl4srec import CL4SRec
from tests.conftest import tiny_overrides
from tests.models.contrastive_checks import (
    NUM_ITEMS,
    check_causal,
    check_help,
    check_padding,
    check_scores,
    check_trained_run,
    tiny_batch,
    tiny_model,
    train_tiny,
)


def test_views_hold_valid_ids_and_at_least_one_item():
    model = tiny_model("cl4srec").train()
    inputs, targets = tiny_batch(rows=300)
    torch.manual_seed(1)
    views = model.transform_batch(TrainBatch(((inputs, targets),), int((targets != 0).sum())))
    assert views.last_targets.tolist() == targets[:, -1].tolist()
    for view in (views.first, views.second):
        assert view.shape == inputs.shape
        real = view[view != 0]
        assert ((real >= 1) & (real <= NUM_ITEMS)).logical_or(real == model.mask_id).all()
        assert (view[:, -1] != 0).all()  # left-padded, at least one item
        # no holes: every view is one run of items (a mask is a token, not padding)
        assert ((view != 0).int().diff(dim=1) >= 0).all()
    assert (views.first == model.mask_id).any() and (views.first != inputs).any()


def test_the_two_views_use_two_different_augmentations():
    model = tiny_model("cl4srec", mask_ratio=0.5)
    inputs = torch.arange(1, 11).repeat(400, 1)  # 10 items: every augmentation shows itself
    torch.manual_seed(2)
    views = model.transform_batch(TrainBatch(((inputs, inputs.clamp(max=9) + 1),), 4000))

    def kind(view):  # 0 crop (shorter), 1 mask (a mask token), 2 reorder (same items)
        cropped = (view == 0).any(1)
        masked = (view == model.mask_id).any(1)
        return torch.where(cropped, 0, torch.where(masked, 1, 2))

    first, second = kind(views.first), kind(views.second)
    assert (first != second).all()
    assert len(set(zip(first.tolist(), second.tolist()))) == 6  # every ordered pair occurs


def test_mask_token_is_an_input_that_is_never_scored():
    model = tiny_model("cl4srec")
    seq = torch.tensor([[1, 2, 3]])
    masked = torch.tensor([[1, model.mask_id, 3]])
    assert not torch.allclose(model.query_vectors(seq), model.query_vectors(masked))
    assert model.score(masked).shape == (1, NUM_ITEMS + 1)
    assert model.item_embedding.num_embeddings == NUM_ITEMS + 1
    model.train()
    losses = model.loss(tiny_batch())
    sum(losses.values()).backward()
    assert model.mask_token.weight.grad is not None
    assert model.mask_token.weight.grad.abs().sum() > 0


def test_loss_parts_and_their_weight():
    inputs, targets = tiny_batch()
    torch.manual_seed(0)
    plain = tiny_model("cl4srec", cl_weight=0.0).train().loss((inputs, targets))
    assert set(plain) == {"next_item", "cl"} and plain["cl"] == 0
    torch.manual_seed(0)
    weighted = tiny_model("cl4srec", cl_weight=0.5).train().loss((inputs, targets))
    assert weighted["cl"] > 0
    torch.testing.assert_close(weighted["next_item"], plain["next_item"])


def test_causal_padding_and_scores():
    model = tiny_model("cl4srec")
    check_causal(model)
    check_padding(model, model.last_query_vectors)
    check_scores(model)


def test_starts_from_a_sasrec_model():
    sasrec = tiny_model("sasrec")
    model = tiny_model("cl4srec")
    before = model.mask_token.weight.clone()
    copied = model.prepare(sasrec, seed=0)
    assert set(copied) == set(sasrec.state_dict())
    seq = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(model.score(seq), sasrec.score(seq))
    assert torch.equal(model.mask_token.weight, before)


def test_bad_ratios_are_config_errors(seq_file):
    for key, value in (("crop_ratio", 0.0), ("mask_ratio", 1.0), ("cl_weight", -1.0)):
        config = RunConfig().with_overrides(
            tiny_overrides(seq_file, **{"model.name": "cl4srec", f"cl4srec.{key}": value})
        )
        with pytest.raises(ConfigError):
            config.validate()


def test_trains_serves_and_recommends(seq_file, tmp_path):
    records = train_tiny("cl4srec", seq_file, tmp_path / "run")
    check_trained_run(tmp_path / "run", records, {"next_item", "cl"})
    assert isinstance(famerec.load(tmp_path / "run").model, CL4SRec)


def test_help_shows_its_flags(capsys):
    check_help("cl4srec", ["--crop", "--mask", "--reorder", "--cl-weight", "--temperature"], capsys)
