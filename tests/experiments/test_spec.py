"""Experiment specs: what they expand to, and one clear error for every bad spec."""

import pytest

from famerec.cli import main
from famerec.experiments import Plan, Store, load_spec
from famerec.experiments.plan import READY, WAITING, run_slug
from famerec.experiments.spec import Ref, SpecError
from tests.experiments.helpers import HEADER, PRUNING, REPO, TINY_BASE, write_spec


def test_table2_spec_has_the_papers_grids_with_equal_budgets(tmp_path):
    spec = load_spec(REPO / "experiments/table2.toml")
    assert [d.name for d in spec.datasets] == ["beauty", "sports", "toys"]
    assert spec.seeds == [42, 1, 2] and spec.metric == "NDCG@10" and spec.baseline == "sasrec"
    fame = spec.entry("fame")
    heads, experts = fame.stages
    assert {p["model.num_heads"] for p in heads.points} == {1, 2, 4, 8, 16}
    assert {p["model.hidden_size"] for p in heads.points} == {64, 128}
    assert heads.settings == {"fame.num_experts": 1}
    assert experts.from_best == ("model.num_heads", "model.hidden_size")
    assert [p["fame.num_experts"] for p in experts.points] == [2, 4, 8, 16, 32]
    assert fame.settings["train.init_from"] == Ref("sasrec", ("model.hidden_size",))
    assert spec.entry("sasrec").trials == fame.trials == 15
    baselines = ["gru4rec", "bert4rec", "core", "cl4srec", "duorec", "iclrec"]
    baselines += ["attenmixer", "miasrec", "msgifsr"]
    for name in baselines:  # equal budget: the same 15 trials over each model's own settings
        entry = spec.entry(name)
        assert not entry.pending and entry.trials == 15, name
        assert {p["model.hidden_size"] for p in entry.stages[0].points} == {64, 128}, name
    continued = spec.entry("sasrec-continued")
    assert continued.control and continued.settings["train.init_from"].selected == "fame"

    plan = Plan(spec, Store(tmp_path / "records", tmp_path / "runs"))
    for dataset in ("beauty", "sports", "toys"):
        sasrec, fame_plan = plan.entries[dataset, "sasrec"], plan.entries[dataset, "fame"]
        assert len(sasrec.trials) == len(fame_plan.trials) == 15
        assert len(sasrec.reruns) == len(fame_plan.reruns) == 2
        # only SASRec's first stage can start: everything else waits for a selection
        assert [r.state for r in sasrec.trials].count(READY) == 10
        assert all(r.state == WAITING for r in fame_plan.runs)
        for name in baselines:
            assert len(plan.entries[dataset, name].trials) == 15
    # 11 models x (15 trials + 2 seed reruns) and the control (1 setting x 3 seeds) per dataset
    assert len(plan.runs) == 3 * (11 * 17 + 3)
    ids = [r.id for r in plan.runs if r.id]
    assert len(ids) == len(set(ids)) == 3 * (11 * 10 + 3)  # first stages and the control
    assert "beauty/sasrec/hidden_size=128,num_heads=16,seed=42" in ids


def test_run_ids_are_readable_and_stable():
    assert (
        run_slug({"model.num_heads": 2, "train.lr": 0.0005}, 42) == "lr=0.0005,num_heads=2,seed=42"
    )
    assert run_slug({}, 1) == "seed=1"
    clash = run_slug({"model.dropout": 0.1, "train.dropout": 0.2}, 1)
    assert clash == "model.dropout=0.1,train.dropout=0.2,seed=1"
    odd = run_slug({"data.path": "a b/c.csv"}, 1)
    assert odd.startswith("settings-") and odd == run_slug({"data.path": "a b/c.csv"}, 1)


def test_relative_data_paths_are_relative_to_the_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(
        tmp_path,
        '[datasets.ml]\ndata.path = "../data/ratings.csv"\ndata.format = "table"\n'
        '[models.sasrec]\n[[models.sasrec.stages]]\nname = "a"\ngrid.model.num_heads = [1]\n',
    )
    ml = [d for d in spec.datasets if d.name == "ml"][0]
    assert ml.settings["data.path"] == "data/ratings.csv"
    toys = [d for d in spec.datasets if d.name == "toys"][0]
    assert toys.settings == {"data.dataset": "toys"}  # an empty table: a bundled dataset


STAGE = '[[models.sasrec.stages]]\nname = "a"\ngrid.model.num_heads = [1, 2]\n'


@pytest.mark.parametrize(
    "body, words",
    [
        ("[models.sasrec]\nmodel.heads = 2\n" + STAGE, ["unknown setting 'model.heads'"]),
        ("[models.sasrec]\ntrain.seed = 3\n" + STAGE, ["seeds come from selection.seeds"]),
        ("[models.sasrec]\ncolour = 1\n" + STAGE, ["unknown key 'colour'"]),
        ("[models.sasrec]\n", ["has no [[models.sasrec.stages]]"]),
        (
            "[models.sasrec]\n"
            + STAGE
            + "[models.fame]\n"
            + STAGE.replace("sasrec", "fame")
            + '[[models.fame.stages]]\nname = "b"\ngrid.fame.num_experts = [2]\n',
            ["unequal numbers of validation trials", "sasrec 2", "fame 3"],
        ),
        (
            '[models.sasrec]\n[[models.sasrec.stages]]\nname = "a"\n'
            'from_best = ["model.hidden_size"]\ngrid.model.num_heads = [1]\n',
            ["the first stage cannot take from_best"],
        ),
        (
            '[models.fame]\ntrain.init_from = { selected = "bert" }\n'
            + STAGE.replace("sasrec", "fame"),
            ["no model 'bert'"],
        ),
        (
            '[models.a]\ntrain.lr = { selected = "b", get = "train.lr" }\n'
            + STAGE.replace("sasrec", "a")
            + '[models.b]\ntrain.lr = { selected = "a", get = "train.lr" }\n'
            + STAGE.replace("sasrec", "b"),
            ["cycle"],
        ),
        ("[models.sasrec]\n" + STAGE.replace("[1, 2]", "[]"), ["non-empty list"]),
        ("[models.sasrec]\n" + STAGE.replace("[1, 2]", '[1, "2"]'), ["must be an integer"]),
        ("[models.sasrec]\ntrain.warm_start = 1\n" + STAGE, ["must be true or false, got 1"]),
        ("[models.sasrec]\n" + STAGE.replace("[1, 2]", "[1, 1]"), ["repeats a value"]),
        ("[models.sasrec]\n" + STAGE + "[models.sasrec.x", ["invalid TOML"]),
        (
            "[models.sasrec]\n" + STAGE + '[[figures]]\nname = "f"\nx = "model.num_heads"\n'
            'series = ["sasrec:b"]\n',
            ["not MODEL:STAGE"],
        ),
    ],
)
def test_bad_specs_fail_with_one_line(tmp_path, body, words):
    with pytest.raises(SpecError) as caught:
        write_spec(tmp_path, body)
    message = str(caught.value)
    assert "\n" not in message and "tiny.toml" in message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize(
    "selection, words",
    [
        ('split = "test"', ["validation split only"]),
        ('metric = "MRR"', ["unknown selection metric 'MRR'"]),
        ("seeds = [1, 1]", ["distinct integers"]),
        ("budget = 5", ["budget is 5", "sasrec 2"]),
        ('baseline = "gru"', ["no model 'gru'"]),
    ],
)
def test_bad_selection_rules_fail(tmp_path, selection, words):
    header = f'name = "tiny"\n[selection]\n{selection}\n[datasets.toys]\n'
    with pytest.raises(SpecError) as caught:
        write_spec(tmp_path, "[models.sasrec]\n" + STAGE, header=header)
    for word in words:
        assert word in str(caught.value)


PRUNING_HEADER = HEADER.replace("[datasets.toys]", PRUNING + "[datasets.toys]")


@pytest.mark.parametrize(
    "header, body",
    [
        (HEADER, "[models.sasrec]\nprune = false\n" + STAGE),
        (
            PRUNING_HEADER,
            "[models.sasrec]\n" + STAGE + "[models.c]\ncontrol = true\nprune = false\n"
            'model.name = "sasrec"\n',
        ),
    ],
    ids=["no pruning", "control"],
)
def test_prune_false_where_nothing_prunes_is_refused(tmp_path, header, body):
    """`prune = false` where no trial of the entry could be pruned would do nothing: the
    spec says so in one line instead of accepting it silently."""
    with pytest.raises(SpecError) as caught:
        write_spec(tmp_path, body, header=header)
    message = str(caught.value)
    assert "\n" not in message and "prune = false does nothing" in message, message
    write_spec(tmp_path, body.replace("prune = false\n", ""), header=header)  # fine without


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "path",
    [
        *sorted(str(p.relative_to(REPO)) for p in (REPO / "experiments").glob("*.toml")),
        "tests/fixtures/smoke/experiments/smoke.toml",
    ],
)
def test_committed_specs_load_with_equal_budgets(path):
    spec = load_spec(REPO / path)
    assert spec.name == path.rsplit("/", 1)[1].removesuffix(".toml")
    budgets = {e.trials for e in spec.entries if e.pending is None and not e.control}
    assert len(budgets) <= 1  # one trial count for every searched model (none: nothing searched)


@pytest.mark.parametrize("key", ["runs", "records", "report"])
@pytest.mark.parametrize("where", ["absolute", "dotted"])
def test_output_folders_stay_inside_the_specs_repository(tmp_path, capsys, key, where):
    outside = tmp_path / "outside"
    written = str(outside) if where == "absolute" else "../../outside"
    spec = tmp_path / "repo" / "experiments" / "tiny.toml"
    spec.parent.mkdir(parents=True)
    spec.write_text(f'{key} = "{written}"\n' + HEADER + TINY_BASE + "[models.sasrec]\n" + STAGE)
    for command in (["run"], ["status"], ["report", "--no-plots"]):
        code = main(["experiment", *command, str(spec)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.splitlines()) == 1, err
        assert f"{key} = '{written}' is outside the repository of the spec" in err
        assert "--allow-outside" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # nothing written anywhere
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["experiments"]
    # inside the repository, absolute or not, and outside where allowed
    inside = f"{tmp_path / 'repo' / 'out'}" if where == "absolute" else "../out"
    spec.write_text(f'{key} = "{inside}"\n' + HEADER + TINY_BASE + "[models.sasrec]\n" + STAGE)
    assert main(["experiment", "status", str(spec)]) == 0
    spec.write_text(f'{key} = "{written}"\n' + HEADER + TINY_BASE + "[models.sasrec]\n" + STAGE)
    assert main(["experiment", "status", "--allow-outside", str(spec)]) == 0
    assert load_spec(spec, allow_outside=True).runs_dir.name == (
        "outside" if key == "runs" else "tiny"
    )
