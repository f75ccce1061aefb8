import json
import math
from pathlib import Path

import pytest
import torch

from famerec.config import RunConfig, TrainConfig
from famerec.errors import ConfigError
from famerec.training import train_run
from famerec.training.schedule import ramp_auxiliary, rate_factor, scheduler
from tests.conftest import tiny_overrides


def rates(config: TrainConfig, steps_per_epoch: int, steps: int) -> list[float]:
    """The rate factor of each of the first `steps` optimizer steps, as LambdaLR applies it."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    schedule = scheduler(optimizer, config, steps_per_epoch)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return seen


def test_constant_rate_with_and_without_warmup():
    assert rates(TrainConfig(), 5, 4) == [1.0] * 4
    assert rates(TrainConfig(warmup_steps=4), 5, 6) == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])


def test_linear_decay_reaches_its_floor_at_the_end_of_decay_epochs_and_stays():
    config = TrainConfig(lr_schedule="linear", decay_epochs=2, lr_floor=0.2, epochs=50)
    seen = rates(config, 5, 14)  # 10 steps of decay, then the floor
    assert seen[0] == 1.0
    assert seen[5] == pytest.approx(0.2 + 0.8 * 0.5)
    assert seen[10:] == pytest.approx([0.2] * 4)


def test_cosine_after_warmup_follows_half_a_cosine_over_epochs():
    config = TrainConfig(lr_schedule="cosine", warmup_steps=2, epochs=3, lr_floor=0.0)
    seen = rates(config, 4, 12)  # 2 warmup steps, then 10 steps of decay
    assert seen[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert seen[2 + 5] == pytest.approx(0.5)  # halfway
    assert seen[2 + 3] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))
    assert seen[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))


def test_step_decay_changes_the_rate_only_between_epochs():
    config = TrainConfig(lr_schedule="step", step_epochs=2, step_factor=0.1)
    seen = rates(config, 3, 15)  # epochs of 3 steps: x0.1 after epochs 2 and 4
    assert seen == pytest.approx([1.0] * 6 + [0.1] * 6 + [0.01] * 3)
    assert rate_factor(3 * 2 * 9, config, 3) == pytest.approx(1e-9)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.lr_schedule": "exp"}, "unknown --lr-schedule value 'exp'"),
        ({"train.warmup_steps": -1}, "--warmup-steps, --aux-warmup-steps and --decay-epochs"),
        ({"train.aux_warmup_steps": -2}, "--warmup-steps, --aux-warmup-steps and --decay-epochs"),
        ({"train.lr_floor": 1.5}, "--lr-floor must be a share of --lr"),
        ({"train.step_epochs": 0}, "--step-epochs must be a positive integer"),
        ({"train.step_factor": 0.0}, "--step-factor must be in"),
    ],
)
def test_bad_schedule_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig().with_overrides(overrides).validate()


SCHEDULED = {
    "train.epochs": 4,
    "train.patience": 10,
    "train.lr": 3e-3,
    "train.lr_schedule": "cosine",
    "train.warmup_steps": 3,
    "train.lr_floor": 0.1,
}


def test_log_records_each_epochs_rate_and_config_the_schedule(seq_file, tmp_path):
    config = RunConfig().with_overrides(tiny_overrides(seq_file, **SCHEDULED))
    train_run(config, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run/config.json").read_text())["train"]
    assert saved["lr_schedule"] == "cosine" and saved["warmup_steps"] == 3
    log = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    steps = log[0]["stopping"]["steps"]  # steps per epoch
    for record in log:
        last_step = record["epoch"] * steps - 1
        expected = 3e-3 * rate_factor(last_step, config.train, steps)
        assert record["lr"] == pytest.approx(expected, rel=1e-5)
    assert log[-1]["lr"] < log[0]["lr"]


def history(run: Path) -> list[tuple]:
    """Each epoch's (epoch, losses, rate, validation) from a run's log."""
    lines = (run / "log.jsonl").read_text().splitlines()
    return [
        (r["epoch"], r["train_loss"], r.get("train_losses"), r["lr"], r["valid"])
        for r in map(json.loads, lines)
    ]


def assert_resumes_exactly(config: RunConfig, tmp_path: Path) -> None:
    """A run cut after epoch 2 and resumed equals the same run trained in one go."""
    whole = train_run(config, tmp_path / "whole", progress=False)
    assert train_run(config, tmp_path / "cut", progress=False, stop_after=2) is None
    resumed = train_run(config, tmp_path / "cut", resume=True, progress=False)
    for key in ("valid", "test", "best_epoch", "epochs_run"):
        assert resumed[key] == whole[key], key
    assert history(tmp_path / "cut") == history(tmp_path / "whole")


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_a_scheduled_run_resumes_exactly(seq_file, tmp_path, schedule):
    settings = {**SCHEDULED, "train.lr_schedule": schedule, "train.step_epochs": 1}
    assert_resumes_exactly(
        RunConfig().with_overrides(tiny_overrides(seq_file, **settings)), tmp_path
    )


def test_a_models_recipe_is_its_default_and_classic_leaves_it_out(tmp_path):
    from famerec.models import MODELS
    from famerec.training import resolve_config

    with_recipe = [name for name, spec in MODELS.items() if spec.recipe]
    assert "sasrec" in with_recipe
    for name in with_recipe:
        recipe = dict(MODELS[name].recipe)
        config = resolve_config(tmp_path / name, {"model.name": name}).to_dict()
        classic = resolve_config(tmp_path / name, {"model.name": name}, preset="classic")
        classic = classic.to_dict()
        for key, value in recipe.items():
            section, field = key.split(".")
            assert config[section][field] == value, (name, key)
            architecture = dict(MODELS[name].defaults)  # e.g. GRU4Rec's own layers stay
            defaults = RunConfig().with_overrides({"model.name": name}).flat()  # own options too
            assert classic[section][field] == architecture.get(key, defaults[key]), (name, key)
        asked = resolve_config(tmp_path / name, {"model.name": name, "train.lr": 0.0123})
        assert asked.train.lr == 0.0123  # an explicit flag wins over the recipe


def test_pretraining_stage_takes_its_models_recipe_where_the_run_keeps_its_defaults(tmp_path):
    from famerec.models import model_spec
    from famerec.training import resolve_config
    from famerec.training.pipeline import pretrain_config

    sasrec = dict(model_spec("sasrec").recipe)
    fame = resolve_config(tmp_path / "a", {"model.name": "fame", "train.pretrain": True})
    stage = pretrain_config(fame).flat()
    assert stage["model.name"] == "sasrec"
    assert {key: stage[key] for key in sasrec} == sasrec
    asked = resolve_config(
        tmp_path / "b", {"model.name": "fame", "train.pretrain": True, "train.lr": 0.0123}
    )
    assert pretrain_config(asked).train.lr == 0.0123  # a rate asked for the run: both stages
    assert stage["sasrec.block"] == "torch-init"  # SASRec's own option in its recipe
    classic = resolve_config(
        tmp_path / "c", {"model.name": "fame", "train.pretrain": True}, preset="classic"
    )
    assert pretrain_config(classic).flat()["sasrec.block"] == "sasrec"  # no recipe: the reference


def test_auxiliary_terms_ramp_linearly_and_the_next_item_loss_never_does():
    losses = {"next_item": torch.tensor(2.0), "cl": torch.tensor(4.0), "intent": torch.tensor(8.0)}
    seen = {step: ramp_auxiliary(losses, step, 4) for step in (1, 2, 4, 9)}
    assert [float(seen[s]["cl"]) for s in (1, 2, 4, 9)] == [1.0, 2.0, 4.0, 4.0]
    assert [float(seen[s]["intent"]) for s in (1, 2, 4, 9)] == [2.0, 4.0, 8.0, 8.0]
    assert all(float(seen[s]["next_item"]) == 2.0 for s in seen)
    other = {"pretrained_frozen": torch.tensor(3.0), "cl": torch.tensor(1.0)}
    assert ramp_auxiliary(other, 1, 4) is other  # no next-item term: nothing to ramp against


def test_an_auxiliary_ramp_acts_and_resumes_exactly(seq_file, tmp_path):
    settings = {"model.name": "cl4srec", "train.epochs": 4, "train.patience": 10}
    plain = RunConfig().with_overrides(tiny_overrides(seq_file, **settings))
    ramp = {**settings, "train.aux_warmup_steps": 5}
    assert_resumes_exactly(RunConfig().with_overrides(tiny_overrides(seq_file, **ramp)), tmp_path)
    first = json.loads((tmp_path / "whole/log.jsonl").read_text().splitlines()[0])
    assert first["stopping"]["steps"] < 5  # steps per epoch: the ramp crosses the cut
    train_run(plain, tmp_path / "plain", progress=False)
    ramped, unramped = history(tmp_path / "whole")[0][2], history(tmp_path / "plain")[0][2]
    assert ramped["next_item"] != unramped["next_item"] and ramped["cl"] < unramped["cl"]
