"""tools/grid_cost.py: how a run without its own record is priced."""

import sys
from pathlib import Path

from tools import grid_cost
from tools.grid_cost import price

REPO = Path(__file__).resolve().parents[2]

WALLS = {
    (("beauty", "sasrec", False), 1): [10.0, 12.0],
    (("toys", "sasrec", False), 1): [22.0],
    (("beauty", "core", False), 1): [8.0],
    (("beauty", "gru4rec", False), 2): [6.0],
}
SCALE = {"beauty": 1.0, "toys": 2.0}  # a Toys epoch costs twice a Beauty one


def test_a_run_is_priced_from_its_own_records_first():
    assert price(("beauty", "sasrec", False), WALLS, {}, SCALE) == (11.0, "records")
    assert price(("beauty", "gru4rec", False), WALLS, {}, SCALE) == (6.0, "records, 2 threads")


def test_another_dataset_scales_beauty_by_its_cost_per_epoch():
    minutes, source = price(("toys", "core", False), WALLS, {}, SCALE)
    assert minutes == 8.0 * 2 and source == "Beauty x 2.00"
    assert price(("sports", "core", False), WALLS, {}, SCALE) is None  # no scale for Sports


def test_the_dataset_scale_compares_minutes_per_epoch_of_like_records(tmp_path):
    """Toys' long run at another width, Sports' run on another machine and Toys' SASRec run
    beside only CORE's Beauty run have no Beauty run like them: they do not enter the scale.
    Whole runs of different lengths are not compared, minutes per epoch are."""
    import json

    from famerec.runs.dir import METRICS
    from tools.grid_cost import dataset_scale

    def record(dataset, run, minutes, epochs, cpu, d=64, model="sasrec"):
        folder = tmp_path / "spec" / dataset / model / run
        folder.mkdir(parents=True)
        train = {"threads": 1, "batch_size": 512}
        metrics = {
            "model": model,
            "dataset": {"name": dataset},
            "device": "cpu",
            "precision": "fp32",
            "wall_seconds": minutes * 60,
            "epochs_run": epochs,
            "config": {
                "model": {"name": model, "hidden_size": d, "dropout": 0.5},
                "train": train,
            },
        }
        (folder / METRICS).write_text(json.dumps(metrics))
        (folder / "record.json").write_text(json.dumps({"machine": {"cpu": cpu}}))

    record("beauty", "seed=1", 10.0, 10, "Xeon")  # 1 minute an epoch
    record("beauty", "seed=2", 40.0, 40, "Xeon")  # a longer run, the same cost per epoch
    record("toys", "seed=1", 30.0, 20, "Xeon")  # 1.5 minutes an epoch
    record("beauty", "seed=3", 5.0, 10, "EPYC", model="core")  # another model and machine
    record("toys", "seed=3", 5.0, 10, "EPYC", model="core")
    record("toys", "seed=4", 90.0, 10, "EPYC")  # SASRec on EPYC: no Beauty SASRec there
    record("toys", "d=128", 500.0, 200, "Xeon", d=128)  # no Beauty run like it
    record("sports", "seed=1", 20.0, 10, "Ryzen")  # no Beauty run on that machine
    scale, pairs = dataset_scale(tmp_path)
    assert set(scale) == {"beauty", "toys"} and scale["beauty"] == 1.0
    assert abs(scale["toys"] - 1.5**0.5) < 1e-12  # 1.5 (one pair) and 1.0 (one pair)
    assert pairs == {"beauty": 3, "toys": 2}


def test_an_unfinished_run_gives_a_lower_bound_and_nothing_gives_none():
    spent = {("beauty", "miasrec", False): 120.0}
    assert price(("beauty", "miasrec", False), WALLS, spent, SCALE) == (
        120.0,
        "at least (unfinished run)",
    )
    minutes, source = price(("toys", "miasrec", False), WALLS, spent, SCALE)
    assert minutes == 240.0 and source.startswith("at least (unfinished Beauty")
    assert price(("beauty", "msgifsr", False), WALLS, spent, SCALE) is None
    assert (
        price(("beauty", "sasrec", True), WALLS, spent, SCALE) is None
    )  # started from a run: not priced as a scratch run


def test_a_model_with_a_recipe_is_priced_from_the_records_that_follow_it():
    from famerec.models import model_spec
    from tools.grid_cost import follows_recipe

    recipe = dict(model_spec("sasrec").recipe)
    config = {"model": {"name": "sasrec"}, "train": {"lr": 0.001}}
    assert not follows_recipe(config, "sasrec")  # an old record: constant 1e-3
    for key, value in recipe.items():
        section, name = key.split(".")
        config.setdefault(section, {})[name] = value
    assert follows_recipe(config, "sasrec")
    assert follows_recipe({"train": {}}, "gru4rec") == (not model_spec("gru4rec").recipe)


def test_a_pruned_stage_costs_the_epochs_successive_halving_trains():
    from tools.grid_cost import pruned_share

    # 10 trials of 25 epochs, rungs 3 and 9, a third kept: 10 x 3 + 4 x 6 + 2 x 16 epochs
    assert pruned_share(10, (3, 9), 3, 25) == (30 + 24 + 32) / 250
    # runs that stop before a rung cost only what they ran
    assert pruned_share(5, (3, 9), 3, 2) == 1.0
    assert pruned_share(1, (3, 9), 3, 25) == 1.0


def test_recipe_trials_outside_a_spec_price_a_recipe_no_spec_record_follows(tmp_path):
    import json

    from famerec.models import model_spec
    from famerec.runs.dir import METRICS
    from tools.grid_cost import add_recipe_trials, follows_recipe

    def trial(folder: str, model: str, recipe: bool, seconds: float) -> None:
        train = {"threads": 1}
        config = {"model": {"name": model}, "train": train}
        for key, value in model_spec(model).recipe if recipe else ():
            section, name = key.split(".")
            config.setdefault(section, {})[name] = value
        metrics = {
            "model": model,
            "dataset": {"name": "beauty"},
            "device": "cpu",
            "precision": "fp32",
            "wall_seconds": seconds,
            "epochs_run": 30,
            "config": config,
        }
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / METRICS).write_text(json.dumps(metrics))

    trial("miasrec-C", "miasrec", True, 5400.0)  # one level deep, not <spec>/<dataset>/...
    trial("miasrec-A", "miasrec", False, 3000.0)  # another schedule: not the recipe
    trial("sasrec-C", "sasrec", True, 600.0)  # SASRec's recipe is priced by the spec records
    trial("core-A", "core", False, 900.0)  # no recipe: a trial never prices it
    trial("deep/miasrec-C-s2", "miasrec", True, 4800.0)  # deeper: found too, minutes added
    undropped = {"model": {"name": "miasrec"}, "train": {"threads": 1}}
    for key, value in model_spec("miasrec").recipe:  # the recipe's training, not its dropout
        section, name = key.split(".")
        if key != "model.dropout":
            undropped[section][name] = value
    assert not follows_recipe(undropped, "miasrec")
    walls = {(("beauty", "sasrec", False), 1): [9.0]}
    epochs = {("beauty", "sasrec", False): [25]}
    assert add_recipe_trials(walls, epochs, [tmp_path]) == {("beauty", "miasrec", False)}
    assert sorted(walls[("beauty", "miasrec", False), 1]) == [80.0, 90.0]
    assert walls[("beauty", "sasrec", False), 1] == [9.0]
    assert epochs[("beauty", "miasrec", False)] == [30, 30]
    assert not any(key[1] == "core" for key, _ in walls)


def test_a_run_that_sets_its_own_epochs_is_priced_per_epoch():
    from tools.grid_cost import epoch_weight

    assert epoch_weight({"train.epochs": 100}, [20, 30]) == 4.0  # 100 epochs, records ran 25
    assert epoch_weight({"train.epochs": 300, "model.dropout": 0.6}, [25]) == 12.0
    assert epoch_weight({"model.dropout": 0.6}, [25]) == 1.0  # the recipe's or records' epochs
    assert epoch_weight({"train.epochs": 100}, None) == 1.0  # no record gives epochs
    reference = object()  # a control's epochs come from another run: not known in advance
    assert epoch_weight({"train.epochs": reference}, [25]) == 1.0
    # a constant-rate run stops on patience: the epochs it sets are a cap, as in the records
    assert epoch_weight({"train.epochs": 200, "train.lr_schedule": "constant"}, [50]) == 1.0


def test_a_spec_that_keeps_a_models_old_schedule_is_priced_from_its_old_records(
    capsys, monkeypatch
):
    """table2_pruned keeps BERT4Rec and CORE at the constant rate their first runs used: their
    rows are priced from records without the recipe, as full runs (no per-epoch weight)."""
    spec, records = REPO / "experiments/table2_pruned.toml", REPO / "results/records"
    argv = ["grid_cost.py", str(spec), "--records", str(records), "--runs", "no-such-runs"]
    monkeypatch.setattr(sys, "argv", argv)
    grid_cost.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if "| core " in line]
    assert rows and all("old recipe (the spec's)" in row for row in rows)
    assert all(float(row.split("|")[3]) < 10 for row in rows)  # about 6 trial-equivalents


def test_without_beauty_another_dataset_with_records_is_scaled():
    walls = {**WALLS, (("toys", "bert4rec-xu", False), 1): [24.0]}
    # a Toys epoch costs twice a Beauty one: a Beauty run costs half the Toys one
    assert price(("beauty", "bert4rec-xu", False), walls, {}, SCALE) == (12.0, "Toys x 0.50")
    assert price(("beauty", "bert4rec-xu", True), walls, {}, SCALE) is None


def test_an_entry_with_settings_of_its_own_is_priced_from_its_own_records(tmp_path):
    """A control entry (bert4rec-xu trains BERT4Rec at another recipe) is not priced from its
    model's other runs once it has records of its own."""
    import json

    from famerec.runs.dir import METRICS
    from tools.grid_cost import record_walls

    def record(entry: str, run: str, seconds: float, device: str = "cpu") -> None:
        folder = tmp_path / "spec" / "toys" / entry / run
        folder.mkdir(parents=True)
        metrics = {
            "model": "bert4rec",
            "dataset": {"name": "toys"},
            "device": device,
            "wall_seconds": seconds,
            "config": {"model": {"name": "bert4rec"}, "train": {"threads": 1}},
        }
        (folder / METRICS).write_text(json.dumps(metrics))

    record("bert4rec-xu", "seed=42", 1440.0)
    record("bert4rec-xu", "seed=1", 1560.0)
    record("bert4rec-xu", "seed=2", 60.0, device="cuda")  # not a CPU run: not priced
    record("bert4rec", "dropout=0.1,seed=42", 600.0)  # the model's own entry
    walls = record_walls(tmp_path, entries={"bert4rec-xu"})
    assert {key: sorted(minutes) for key, minutes in walls.items()} == {
        (("toys", "bert4rec-xu", False), 1): [24.0, 26.0]
    }


def test_what_is_left_credits_each_run_with_what_it_has_trained(tmp_path):
    """--left: a finished run counts whole, a pruned or paused one by its logged epochs over the
    records' mean epochs (at most its share), a run not started (or waiting) not at all."""
    import json

    from famerec.experiments.plan import DONE, PRUNED, READY, WAITING, Run, Store
    from tools.grid_cost import trained_share

    store = Store(tmp_path / "records", tmp_path / "runs")

    def run(name: str, state: str, epochs: int = 0) -> Run:
        run_id = f"beauty/iclrec/{name}"
        if epochs:
            folder = tmp_path / "runs" / run_id
            folder.mkdir(parents=True)
            lines = [json.dumps({"epoch": e, "train_seconds": 1.0}) for e in range(1, epochs + 1)]
            (folder / "log.jsonl").write_text("\n".join(lines) + "\n")
        return Run("beauty", "iclrec", "s", 42, {}, id=run_id, state=state)

    known = [40, 60]  # the records ran 50 epochs on average
    assert trained_share(run("done", DONE, 80), store, 1.0, known) == 1.0
    assert trained_share(run("pruned", PRUNED, 3), store, 1.0, known) == 3 / 50
    assert trained_share(run("paused", READY, 20), store, 1.0, known) == 20 / 50
    assert trained_share(run("long", READY, 70), store, 1.0, known) == 1.0  # at most its share
    assert trained_share(run("fresh", READY), store, 1.0, known) == 0.0
    waiting = Run("beauty", "iclrec", "seeds", 1, None)  # no id while it waits
    assert trained_share(waiting, store, 1.0, known) == 0.0 and waiting.state == WAITING
    assert trained_share(run("no-epochs-known", READY, 5), store, 1.0, None) == 0.0


def test_left_prices_what_a_grid_under_way_still_trains(capsys, monkeypatch):
    """table2_init's records: its finished SASRec searches have nothing left, and no row has
    more left than it costs in all."""
    spec, records = REPO / "experiments/table2_init.toml", REPO / "results/records"
    argv = ["grid_cost.py", str(spec), "--records", str(records), "--runs", "no-such-runs"]
    monkeypatch.setattr(sys, "argv", [*argv, "--left"])
    grid_cost.main()
    out = capsys.readouterr().out
    header, _, *rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("|")]
    assert [h.strip() for h in header][5:7] == ["runs left", "core-hours left"]
    for row in rows:
        runs, hours, left, hours_left = (float(row[i] or 0) for i in (2, 4, 5, 6))
        assert 0 <= left <= runs and 0 <= hours_left <= hours + 0.05, row
    sasrec = [row for row in rows if row[1].strip() == "sasrec-init"]
    assert len(sasrec) == 3 and all(float(row[5]) == 0 for row in sasrec)
    assert "left to train: " in out
