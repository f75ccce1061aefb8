"""The model contract: a model is a class plus a registration, and the trainer, the config, the
CLI and run loading work with it through the registry and the hooks alone."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from famerec.cli import main
from famerec.config import ModelConfig, ModelOptions, RunConfig, TrainConfig, option
from famerec.errors import ConfigError, FamerecError
from famerec.models import MODELS, EpochContext, SequentialRecommender, register
from famerec.models.layers import MultiHeadAttention, causal_mask
from famerec.models.losses import info_nce
from famerec.recommender import load
from famerec.training import train_run
from tests.conftest import tiny_overrides


@dataclass
class ToyOptions(ModelOptions):
    extra_weight: float = option(0.5, "weight of the auxiliary loss")

    def validate(self, model: ModelConfig, train: TrainConfig) -> None:
        if self.extra_weight < 0:
            raise ConfigError("--extra-weight must be 0 or more")


class Toy(SequentialRecommender):
    """Mean of item embeddings, scored by a non-dot-product (negative distance)."""

    dot_product_scores = False

    def __init__(self, num_items, config, options=None):
        super().__init__(num_items, config, options or ToyOptions())
        self.epochs_seen: list[int] = []
        self.transformed = 0
        self.reset_parameters()

    def query_vectors(self, item_seq):
        x, real = self.embed(item_seq)
        return x.cumsum(1) / real.cumsum(1).clamp(min=1).unsqueeze(-1)

    def transform_batch(self, batch):
        self.transformed += 1
        return batch

    def on_epoch_start(self, context: EpochContext):
        self.epochs_seen.append(context.epoch)
        return {"toy_epoch": context.epoch, "toy_sequences": int(context.train.inputs.shape[0])}

    def loss(self, batch):
        main_loss = self.next_item_loss(batch)
        inputs, _ = batch.parts[0]
        queries = self.query_vectors(inputs)[:, -1]
        return {"next_item": main_loss, "extra": self.options.extra_weight * queries.pow(2).mean()}

    def score(self, item_seq):
        last = self.last_query_vectors(item_seq).float()
        scores = -torch.cdist(last, self.item_embedding.weight.float())
        scores[:, 0] = float("-inf")
        return scores


@pytest.fixture
def toy():
    register("toy", summary="a test model", options=ToyOptions)(Toy)
    yield Toy
    MODELS.pop("toy")


def test_named_losses_and_hooks_reach_the_log(toy, seq_file, tmp_path):
    config = RunConfig().with_overrides(
        tiny_overrides(seq_file, **{"model.name": "toy", "toy.extra_weight": 0.25})
    )
    metrics = train_run(config, tmp_path / "toy", progress=False)
    assert metrics["config"]["toy"] == {"extra_weight": 0.25}
    records = [json.loads(r) for r in (tmp_path / "toy/log.jsonl").read_text().splitlines()]
    assert [r["toy_epoch"] for r in records] == [1, 2]
    for record in records:
        losses = record["train_losses"]
        assert set(losses) == {"loss", "next_item", "extra"}
        assert losses["loss"] == pytest.approx(losses["next_item"] + losses["extra"], rel=1e-4)
        assert record["train_loss"] == losses["loss"]


def test_a_registered_model_gets_its_own_flags_and_validation(toy, seq_file, tmp_path, capsys):
    args = ["train", "--model", "toy", "--help"]
    assert main(args) == 0
    assert "--extra-weight" in capsys.readouterr().out
    assert main(["train", "--model", "sasrec", "--help"]) == 0
    assert "--extra-weight" not in capsys.readouterr().out
    out = tmp_path / "bad"
    code = main(["train", "--model", "toy", "--extra-weight", "-1", "--out", str(out)])
    assert code == 2 and "--extra-weight must be 0 or more" in capsys.readouterr().err
    assert not out.exists()


def test_a_model_without_dot_products_is_served_through_score(toy, seq_file, tmp_path, capsys):
    config = RunConfig().with_overrides(tiny_overrides(seq_file, **{"model.name": "toy"}))
    train_run(config, tmp_path / "toy", progress=False)
    rec = load(tmp_path / "toy")
    assert not rec.dot_product_scores
    result = rec.recommend([1, 2, 3], k=5)
    batch = torch.tensor([[1, 2, 3]])
    scores = rec.model.score(batch)[0]
    scores[[1, 2, 3]] = float("-inf")
    expected = [rec.item_ids[i - 1] for i in scores.topk(5).indices.tolist()]
    assert result.items == expected
    with pytest.raises(FamerecError, match="vector indexes \\(ANN\\) do not apply"):
        rec.item_vectors()
    code = main(["explain", "--run", str(tmp_path / "toy"), "--user", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "explain explains FAME runs" in err and "Traceback" not in err


def test_sasrec_continues_from_a_sasrec_run(seq_file, tmp_path):
    """The control for FAME's fine-tuning: SASRec trained on from its own best weights."""
    base = tiny_overrides(seq_file)
    train_run(RunConfig().with_overrides(base), tmp_path / "first", progress=False)
    more = RunConfig().with_overrides(
        {**base, "train.init_from": str(tmp_path / "first"), "train.lr": 1e-4}
    )
    metrics = train_run(more, tmp_path / "more", progress=False)
    assert metrics["init_from"]["run"] == str(tmp_path / "first")
    bigger = RunConfig().with_overrides(
        {**base, "train.init_from": str(tmp_path / "first"), "model.hidden_size": 32}
    )
    with pytest.raises(ConfigError, match="other sizes"):
        train_run(bigger, tmp_path / "bigger", progress=False)


def test_info_nce_prefers_the_partner_view():
    torch.manual_seed(0)
    first = torch.randn(8, 16)
    assert info_nce(first, first, similarity="cosine", temperature=0.1) < 0.1
    shuffled = first[torch.randperm(8)]
    assert info_nce(first, shuffled, similarity="cosine", temperature=0.1) > 1.0
    # excluding every other sequence leaves only the partner: the loss is exactly 0
    everyone = torch.ones(8, 8, dtype=torch.bool)
    assert info_nce(first, shuffled, exclude=everyone) == pytest.approx(0.0, abs=1e-6)


def test_shared_attention_is_causal():
    torch.manual_seed(0)
    attention = MultiHeadAttention(16, 2, 0.0).eval()
    x = torch.randn(1, 5, 16)
    mask = causal_mask(torch.ones(1, 5, dtype=torch.bool))
    changed = x.clone()
    changed[0, 3:] += 1.0
    torch.testing.assert_close(
        attention(x, x, mask)[:, :3], attention(changed, changed, mask)[:, :3]
    )


def test_a_model_sets_its_own_defaults_of_shared_settings(tmp_path):
    from famerec.training import resolve_config

    gru = resolve_config(tmp_path / "a", {"model.name": "gru4rec"})
    assert (gru.model.num_layers, gru.model.dropout) == (1, 0.3)  # RecBole's GRU4Rec
    asked = resolve_config(tmp_path / "b", {"model.name": "gru4rec", "model.dropout": 0.1})
    assert asked.model.dropout == 0.1  # explicit options still win
    assert resolve_config(tmp_path / "c", {}).model.num_layers == 2  # SASRec's default


def test_help_shows_a_models_own_defaults(capsys):
    from famerec.cli import main

    assert main(["train", "--model", "gru4rec", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "number of layers (default: 1)" in text and "(default: 0.3)" in text


def test_help_says_what_the_registry_says(capsys):
    from famerec.cli import main

    assert main(["--help"]) == 0
    baselines = len(set(MODELS) - {"fame", "sasrec"})
    assert f"FAME, SASRec and {baselines} baselines" in " ".join(capsys.readouterr().out.split())
    assert main(["train", "--model", "fame", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name, spec in MODELS.items():
        if spec.starts_from:
            assert f"{name}: a {' or '.join(spec.starts_from)} run" in text
        if spec.pretrain:
            assert f"{name}: {spec.pretrain}" in text


def test_explanation_is_a_capability_of_the_model():
    explaining = {name for name, spec in MODELS.items() if spec.model.explains}
    assert explaining == {"fame"}
    sasrec = MODELS["sasrec"].model.__new__(MODELS["sasrec"].model)  # explain reads no state
    with pytest.raises(NotImplementedError):
        sasrec.explain(None)
