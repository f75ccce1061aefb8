"""Staged selection on validation, references between models, commands: from fake records."""

import json
import shutil
from pathlib import Path

import pytest

from famerec.config import RunConfig
from famerec.experiments import Plan, SpecError, Store
from famerec.experiments.plan import DONE, NOT_FROZEN, READY, WAITING
from famerec.experiments.runner import train_command
from famerec.runs.dir import RunDir
from tests.experiments.helpers import fake_record, fake_weights, write_spec

SASREC = """
[models.sasrec]
model.name = "sasrec"
[[models.sasrec.stages]]
name = "heads"
grid.model.num_heads = [1, 2, 4]
[[models.sasrec.stages]]
name = "dropout"
from_best = ["model.num_heads"]
points = [{ model.dropout = 0.2 }, { model.dropout = 0.7 }, { train.lr = 0.002 }]
"""


def plan_of(spec):
    return Plan(spec, Store(spec.records_dir, spec.runs_dir))


def by_stage(entry_plan, stage):
    return [run for run in entry_plan.trials if run.stage == stage]


def test_stage_two_takes_the_best_validation_trial_never_the_test(tmp_path):
    spec = write_spec(tmp_path, SASREC)
    sasrec = plan_of(spec).entries["toys", "sasrec"]
    assert [r.state for r in by_stage(sasrec, "dropout")] == [WAITING] * 3
    # validation favours 2 heads, test favours 4 heads: the test split must not matter
    for run, valid, test in zip(by_stage(sasrec, "heads"), [0.1, 0.3, 0.2], [0.1, 0.1, 0.9]):
        fake_record(spec, run, valid, test)
    sasrec = plan_of(spec).entries["toys", "sasrec"]
    second = by_stage(sasrec, "dropout")
    assert [r.state for r in second] == [READY] * 3
    assert [r.names for r in second] == [
        {"model.num_heads": 2, "model.dropout": 0.2},
        {"model.num_heads": 2, "model.dropout": 0.7},
        {"model.num_heads": 2, "train.lr": 0.002},
    ]
    assert second[2].id == "toys/sasrec/lr=0.002,num_heads=2,seed=1"
    assert second[0].settings["model.num_heads"] == 2 and second[0].settings["train.seed"] == 1
    assert sasrec.selected is None and [r.state for r in sasrec.reruns] == [WAITING]

    for run, valid in zip(second, [0.31, 0.25, 0.2]):
        fake_record(spec, run, valid, test=0.0)
    sasrec = plan_of(spec).entries["toys", "sasrec"]
    assert sasrec.selected.id == "toys/sasrec/dropout=0.2,num_heads=2,seed=1"
    (rerun,) = sasrec.reruns
    assert rerun.id == "toys/sasrec/dropout=0.2,num_heads=2,seed=2" and rerun.state == READY
    assert rerun.settings["train.seed"] == 2


def test_ties_go_to_the_earlier_trial(tmp_path):
    spec = write_spec(tmp_path, SASREC)
    for run in by_stage(plan_of(spec).entries["toys", "sasrec"], "heads"):
        fake_record(spec, run, 0.2)
    second = by_stage(plan_of(spec).entries["toys", "sasrec"], "dropout")
    assert all(r.names["model.num_heads"] == 1 for r in second)


FAME = """
[models.sasrec]
model.name = "sasrec"
[[models.sasrec.stages]]
name = "size"
grid.model.hidden_size = [64, 128]
[models.fame]
model.name = "fame"
train.init_from = { selected = "sasrec", match = ["model.hidden_size"] }
[[models.fame.stages]]
name = "size"
grid.model.hidden_size = [64, 128]
[models.later]
control = true
model.name = "sasrec"
train.lr = { selected = "fame", get = "train.lr" }
train.epochs = { selected = "fame", get = "epochs_run" }
"""


def test_fame_starts_from_the_best_sasrec_of_its_size_and_seed(tmp_path):
    spec = write_spec(tmp_path, FAME)
    plan = plan_of(spec)
    assert all(
        r.reason == "waits for the selection of sasrec" for r in plan.entries["toys", "fame"].trials
    )
    small, large = plan.entries["toys", "sasrec"].trials
    fake_record(spec, small, 0.3)  # SASRec's selected setting: d = 64
    fake_record(spec, large, 0.2)
    fame = plan_of(spec).entries["toys", "fame"].trials
    why = "only its record is here; `experiment run` retrains it first"
    assert [r.reason for r in fame] == [
        f"needs the run directory of {small.id} ({why})",
        f"needs the run directory of {large.id} ({why})",
    ]
    # the runner retrains each at its recorded settings; a best epoch's weights are no start
    restores = plan_of(spec).restores
    assert list(restores) == [small.id, large.id]
    assert restores[small.id].settings == small.settings
    assert all(r.state == READY for r in restores.values())
    (spec.runs_dir / small.id).mkdir(parents=True)
    (spec.runs_dir / small.id / "model.safetensors").write_bytes(b"")
    assert small.id in plan_of(spec).restores
    fake_weights(spec, small)
    fake_weights(spec, large)
    plan = plan_of(spec)
    fame = plan.entries["toys", "fame"].trials
    assert [r.state for r in fame] == [READY, READY]
    assert (
        fame[1].settings["train.init_from"].endswith("runs/tiny/toys/sasrec/hidden_size=128,seed=1")
    )
    assert plan.entries["toys", "sasrec"].support == []  # both are trials at the first seed

    fake_record(spec, fame[0], 0.1)
    fake_record(spec, fame[1], 0.4)  # FAME selects d = 128, SASRec d = 64
    plan = plan_of(spec)
    (rerun,) = plan.entries["toys", "fame"].reruns
    (support,) = plan.entries["toys", "sasrec"].support
    # FAME's seed-2 rerun needs SASRec's best d = 128 setting at seed 2: a support run
    assert support.id == "toys/sasrec/hidden_size=128,seed=2" and support.state == READY
    assert rerun.state == WAITING and rerun.reason == f"waits for {support.id}"
    assert [r.id for r in plan.entries["toys", "sasrec"].reruns] == [
        "toys/sasrec/hidden_size=64,seed=2"
    ]


def test_a_control_takes_values_of_the_selected_run_with_its_seed(tmp_path):
    spec = write_spec(tmp_path, FAME)
    plan = plan_of(spec)
    for run in plan.entries["toys", "sasrec"].trials:
        fake_record(spec, run, 0.2)
        fake_weights(spec, run)
    for run, epochs in zip(plan_of(spec).entries["toys", "fame"].trials, (7, 5)):
        fake_record(spec, run, 0.3, epochs=epochs)
    plan = plan_of(spec)
    first, second = plan.entries["toys", "later"].runs
    assert first.state == READY and first.id == "toys/later/seed=1"
    assert first.settings["train.epochs"] == 7 and first.settings["train.lr"] == 0.001
    assert second.state == WAITING and "toys/fame/hidden_size=64,seed=2" in second.reason


def test_finished_runs_count_as_done_without_records(tmp_path):
    spec = write_spec(tmp_path, SASREC)
    run = plan_of(spec).entries["toys", "sasrec"].trials[0]
    folder = spec.runs_dir / run.id
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text('{"valid": {"NDCG@10": 0.1}}')
    (folder / "config.json").write_text(RunConfig().with_overrides(run.settings).to_json())
    assert plan_of(spec).by_id[run.id].state == DONE
    assert Plan(spec, Store(spec.records_dir)).by_id[run.id].state == READY  # records only


def test_wall_time_of_a_run_is_at_least_its_logged_time(tmp_path):
    """Records of runs resumed before wall time was carried between sittings hold the last
    sitting's only; their logs have every epoch's time."""
    spec = write_spec(tmp_path, SASREC)
    run = plan_of(spec).entries["toys", "sasrec"].trials[0]
    fake_record(spec, run, valid=0.1)  # wall_seconds 10.0
    store = Store(spec.records_dir)
    assert store.wall_seconds(run.id) == 10.0  # no log
    epochs = [{"epoch": e, "train_seconds": 6.0, "eval_seconds": 1.5} for e in (1, 2)]
    log = "".join(json.dumps(e) + "\n" for e in epochs)
    (spec.records_dir / run.id / "log.jsonl").write_text(log)
    assert Store(spec.records_dir).wall_seconds(run.id) == 15.0


def test_train_command_maps_settings_to_flags(tmp_path):
    settings = {
        "model.name": "fame",
        "model.num_heads": 4,
        "fame.attn_residual": False,
        "train.lr": 0.0005,
        "fame.warm_start": True,
        "train.threads": 8,
        "train.device": "cpu",
    }
    args = train_command(settings, tmp_path / "run", threads=3, device="cuda", resume=True)
    assert args[:4] == ["-q", "train", "--out", str(tmp_path / "run")]
    assert args[4:] == [
        "--model",
        "fame",
        "--heads",
        "4",
        "--no-attn-residual",
        "--lr",
        "0.0005",
        "--warm-start",
        "--threads",
        "3",
        "--device",
        "cuda",
        "--resume",
    ]
    kept = train_command(settings, tmp_path / "run", threads=1, device=None, resume=False)
    assert "--device" in kept and kept[kept.index("--device") + 1] == "cpu"
    assert "--resume" not in kept
    # a run started on a GPU machine (config.json: cuda) resumes here on what is here
    plain = {"model.name": "sasrec"}
    assert "--device" not in train_command(plain, tmp_path / "run", 1, None, resume=False)
    resumed = train_command(plain, tmp_path / "run", 1, None, resume=True)
    assert resumed[resumed.index("--device") + 1] == "auto"


def test_the_runner_precision_applies_where_the_spec_sets_none(tmp_path):
    plain = {"model.name": "sasrec"}
    args = train_command(plain, tmp_path / "run", 1, "cuda", False, precision="fp32")
    assert args[args.index("--precision") + 1] == "fp32"
    compared = {"model.name": "sasrec", "train.precision": "bf16"}  # e.g. bf16_beauty.toml
    args = train_command(compared, tmp_path / "run", 1, "cuda", False, precision="fp32")
    assert args.count("--precision") == 1 and args[args.index("--precision") + 1] == "bf16"
    assert "train.precision" not in NOT_FROZEN  # a spec's own precision is frozen


def test_a_spec_is_frozen_once_it_has_runs(tmp_path):
    spec = write_spec(tmp_path, SASREC)
    fake_record(spec, plan_of(spec).entries["toys", "sasrec"].trials[0], 0.2)
    plan_of(spec)  # unchanged: fine
    changed = write_spec(tmp_path, "[base]\ntrain.lr = 0.01\n" + SASREC)
    with pytest.raises(SpecError, match="was run with train.lr = 0.001, the spec now says 0.01"):
        plan_of(changed)


def test_a_record_from_before_a_model_option_existed_ran_as_its_default(tmp_path):
    """A spec may pin a new option at the value its old runs ran with (the option's default),
    e.g. when a model's recipe starts to set it otherwise; another value is still refused."""
    spec = write_spec(tmp_path, SASREC)
    run = plan_of(spec).entries["toys", "sasrec"].trials[0]
    fake_record(spec, run, 0.2)
    folder = spec.records_dir / run.id
    config = json.loads((folder / "config.json").read_text())
    del config["sasrec"]  # saved before SASRec had options of its own
    (folder / "config.json").write_text(json.dumps(config))
    pinned = SASREC.replace(
        'model.name = "sasrec"', 'model.name = "sasrec"\nsasrec.block = "sasrec"'
    )
    plan_of(write_spec(tmp_path, pinned))  # the default: fine
    other = SASREC.replace(
        'model.name = "sasrec"', 'model.name = "sasrec"\nsasrec.block = "torch-init"'
    )
    with pytest.raises(SpecError, match="was run with sasrec.block = 'sasrec', the spec now says"):
        plan_of(write_spec(tmp_path, other))


def test_a_resumed_run_keeps_the_precision_it_started_with(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"precision": "bf16"}}))
    plain = {"model.name": "sasrec"}
    args = train_command(plain, run, 1, "cuda", True, precision="fp32")
    assert args.count("--precision") == 1 and args[args.index("--precision") + 1] == "bf16"
    fresh = train_command(plain, tmp_path / "new", 1, "cuda", False, precision="fp32")
    assert fresh[fresh.index("--precision") + 1] == "fp32"


def test_a_pretrain_run_paused_in_its_first_stage_keeps_that_stage_s_precision(tmp_path):
    run = tmp_path / "run"
    (run / "pretrain").mkdir(parents=True)
    assert RunDir(run).is_resumable  # begun, even before the stage wrote its config.json
    (run / "pretrain" / "config.json").write_text(json.dumps({"train": {"precision": "bf16"}}))
    args = train_command({"model.name": "fame"}, run, 1, "cuda", True, precision="fp32")
    assert args[args.index("--precision") + 1] == "bf16"


def test_a_reference_that_matches_waits_for_the_setting_it_matches_on(tmp_path):
    # the table2 control: its dropout is "of the selected sasrec with the same hidden size" and
    # its hidden size "of the selected fame"; listed first, the dropout still resolves second
    body = FAME.replace(
        'model.name = "sasrec"\ntrain.lr = { selected = "fame"',
        'model.name = "sasrec"\n'
        'model.dropout = { selected = "sasrec", match = ["model.hidden_size"], '
        'get = "model.dropout" }\n'
        'model.hidden_size = { selected = "fame", get = "model.hidden_size" }\n'
        'train.lr = { selected = "fame"',
    )
    assert body != FAME
    spec = write_spec(tmp_path, body)
    for run in plan_of(spec).entries["toys", "sasrec"].trials:
        fake_record(spec, run, 0.2)
        fake_weights(spec, run)
    for run, valid in zip(plan_of(spec).entries["toys", "fame"].trials, (0.1, 0.4)):
        fake_record(spec, run, valid)
    first = plan_of(spec).entries["toys", "later"].runs[0]
    assert first.state == READY, first.reason
    assert first.settings["model.hidden_size"] == 128 and first.settings["model.dropout"] == 0.5


def test_a_control_started_where_fame_started_waits_for_that_start_to_be_retrained(tmp_path):
    # a control trains on from the run FAME started from, read from FAME's record; that start
    # may be a support run (FAME's seed rerun at a size SASRec did not select) that no
    # reference plans any more once FAME's rerun is done, and whose directory is elsewhere
    body = FAME + '[models.cont]\ncontrol = true\nmodel.name = "sasrec"\n'
    body += 'train.init_from = { selected = "fame", get = "train.init_from" }\n'
    spec = write_spec(tmp_path, body)
    small, large = plan_of(spec).entries["toys", "sasrec"].trials
    fake_record(spec, small, 0.3)  # SASRec selects d = 64
    fake_record(spec, large, 0.2)
    fake_weights(spec, small)
    fake_weights(spec, large)
    fame = plan_of(spec).entries["toys", "fame"].trials
    fake_record(spec, fame[0], 0.1)
    fake_record(spec, fame[1], 0.4)  # FAME selects d = 128
    (support,) = plan_of(spec).entries["toys", "sasrec"].support
    fake_record(spec, support, 0.2)
    fake_weights(spec, support)
    (rerun,) = plan_of(spec).entries["toys", "fame"].reruns
    assert rerun.settings["train.init_from"].endswith(support.id)
    # FAME's seed-2 rerun was trained on another machine: its record names a path there
    rerun.settings["train.init_from"] = f"/elsewhere/famerec/runs/tiny/{support.id}"
    fake_record(spec, rerun, 0.4)
    for run in (small, large, support):
        for path in (spec.runs_dir / run.id).iterdir():
            path.unlink()  # only the records are here

    plan = plan_of(spec)
    first, second = plan.entries["toys", "cont"].runs
    why = "only its record is here; `experiment run` retrains it first"
    assert first.reason == f"needs the run directory of {large.id} ({why})"
    assert second.reason == f"needs the run directory of {support.id} ({why})"
    assert second.needs == support.id and set(plan.restores) == {large.id, support.id}
    fake_weights(spec, support)
    second = plan_of(spec).entries["toys", "cont"].runs[1]
    assert second.state == READY
    # the directory here, not the path of the machine that trained FAME
    assert (
        Path(second.settings["train.init_from"]).resolve() == (spec.runs_dir / support.id).resolve()
    )
    assert [r.id for r in plan_of(spec).entries["toys", "sasrec"].support] == [support.id]
    # a start outside the spec's runs is no run of it: passed on as recorded
    rerun.settings["train.init_from"] = "/elsewhere/my-sasrec"
    fake_record(spec, rerun, 0.4)
    second = plan_of(spec).entries["toys", "cont"].runs[1]
    assert second.state == READY and second.settings["train.init_from"] == "/elsewhere/my-sasrec"


def test_a_start_that_starts_from_another_missing_start_names_the_first_to_retrain(tmp_path):
    # a control trained on from FAME's weights, when neither FAME's directory nor that of the
    # SASRec run FAME started from is here: SASRec's retraining comes first
    body = FAME + '[models.cont]\ncontrol = true\nmodel.name = "fame"\n'
    body += 'model.hidden_size = { selected = "fame", get = "model.hidden_size" }\n'
    body += 'train.init_from = { selected = "fame" }\n'
    spec = write_spec(tmp_path, body)
    small, large = plan_of(spec).entries["toys", "sasrec"].trials
    fake_record(spec, small, 0.3)
    fake_record(spec, large, 0.2)
    fake_weights(spec, small)
    fake_weights(spec, large)
    fame = plan_of(spec).entries["toys", "fame"].trials
    fake_record(spec, fame[0], 0.4)  # FAME selects d = 64, from SASRec d = 64
    fake_record(spec, fame[1], 0.1)
    shutil.rmtree(spec.runs_dir)  # only the records are here
    plan = plan_of(spec)
    first = plan.entries["toys", "cont"].runs[0]
    assert first.reason.startswith(f"needs the run directory of {fame[0].id}")
    assert first.needs == small.id and list(plan.restores) == [small.id]
