"""Reports from records alone: the committed smoke report is what its records give."""

import json
import statistics
from types import SimpleNamespace

import numpy as np
import pytest

from famerec.cli import main
from famerec.evaluation.significance import per_user
from famerec.experiments import Plan, SpecError, Store, load_spec
from famerec.experiments.plan import READY
from famerec.experiments.report import pruned_value, write_report
from famerec.experiments.status import status
from famerec.runs.dir import write_ranks
from tests.experiments.helpers import REPO, fake_record, fake_weights, write_spec

FIXTURES = REPO / "tests/fixtures/smoke"
SMOKE = FIXTURES / "experiments/smoke.toml"
FIXTURE = [
    FIXTURES / "results/records/smoke",
    FIXTURES / "results/smoke",
    FIXTURES / "results/smoke.md",
]


def test_committed_smoke_report_is_what_the_committed_records_give(tmp_path):
    spec = load_spec(SMOKE)
    text = write_report(spec, out=tmp_path, plots=False)
    assert text == (FIXTURES / "results/smoke.md").read_text()
    assert (tmp_path / "smoke.md").read_text() == text
    for name in ("tiny-ml-heads.png", "tiny-ml-experts.png", "tiny-ml-curves.png"):
        assert f"(smoke/{name})" in text
        assert (FIXTURES / "results/smoke" / name).read_bytes()[:4] == b"\x89PNG"
    # what the report says, checked against the records it was made from
    plan = Plan(spec, Store(spec.records_dir))
    for model in ("sasrec", "fame"):
        runs = plan.entries["tiny-ml", model].selected_runs
        values = [plan.store.metrics(run.id)["test"]["NDCG@10"] for run in runs]
        assert len(values) == 2
        cell = f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
        assert cell in text
    assert "| SASRec " in text and "| FAME " in text and "| GRU4Rec " in text
    assert "| SASRec (as reported) " in text and "0.0593" in text  # the paper's Beauty FAME


COMMITTED = sorted(
    path.stem
    for path in (REPO / "experiments").glob("*.toml")
    if (REPO / "results" / f"{path.stem}.md").exists()
)


@pytest.mark.parametrize("name", COMMITTED)
def test_every_committed_report_is_what_its_committed_records_give(name, tmp_path):
    spec = load_spec(REPO / f"experiments/{name}.toml")
    assert (
        write_report(spec, out=tmp_path, plots=False) == (REPO / f"results/{name}.md").read_text()
    )


def test_smoke_fixture_stays_small():
    files = [p for root in FIXTURE for p in ([root] if root.is_file() else root.rglob("*"))]
    assert sum(p.stat().st_size for p in files if p.is_file()) < 200_000
    assert not [p for p in files if p.name in ("model.safetensors", "checkpoint.pt", "dataset.npz")]


def test_report_to_a_file_is_one_error_line(tmp_path, capsys):
    taken = tmp_path / "report"
    taken.write_text("not a folder")
    assert main(["experiment", "report", str(SMOKE), "--out", str(taken), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "it is a file, not a folder" in err and "Traceback" not in err
    assert taken.read_text() == "not a folder"


def test_report_command_writes_markdown_and_plots(tmp_path, capsys):
    assert main(["experiment", "report", str(SMOKE), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out == (tmp_path / "smoke.md").read_text()
    pngs = sorted(p.name for p in (tmp_path / "smoke").iterdir())
    assert pngs == ["tiny-ml-curves.png", "tiny-ml-experts.png", "tiny-ml-heads.png"]


def test_unfinished_models_are_reported_as_such_and_test_metrics_of_trials_stay_hidden(tmp_path):
    body = (
        '[models.sasrec]\n[[models.sasrec.stages]]\nname = "heads"\ngrid.model.num_heads = [1, 2]\n'
    )
    spec = write_spec(tmp_path, body)
    first, second = Plan(spec, Store(spec.records_dir)).entries["toys", "sasrec"].trials
    fake_record(spec, first, valid=0.1234, test=0.9876)
    text = write_report(spec, out=tmp_path / "out", plots=False)
    assert "not finished (1 of 3 runs)" in text
    assert "0.1234" in text and "0.9876" not in text  # validation shown, test kept out


ONE_SASREC = """
[models.sasrec]
model.name = "sasrec"
[[models.sasrec.stages]]
name = "one"
points = [{ model.num_heads = 2 }]
"""
VERSUS = (
    ONE_SASREC
    + """[models.fame]
control = true
versus = "continued"
model.name = "fame"
[models.continued]
control = true
model.name = "sasrec"
train.lr = 0.0003
"""
)


BEST = (
    ONE_SASREC
    + """[models.gru4rec]
model.name = "gru4rec"
[[models.gru4rec.stages]]
name = "one"
points = [{ model.hidden_size = 64 }]
[models.fame]
model.name = "fame"
train.init_from = { selected = "sasrec" }
[[models.fame.stages]]
name = "one"
points = [{ model.num_heads = 2 }]
"""
)


def test_every_other_model_is_tested_against_the_baseline_best_on_validation(tmp_path):
    spec = write_spec(tmp_path, BEST)
    scores = {"sasrec": (0.30, 0.25), "gru4rec": (0.40, 0.20), "fame": (0.35, 0.22)}
    store = Store(spec.records_dir, spec.runs_dir)  # FAME starts from SASRec's run directory

    def finish(prefix: str) -> str:
        runs = Plan(spec, store).runs
        while ready := [r for r in runs if r.state == READY and r.id.startswith(prefix)]:
            for run in ready:
                fake_record(spec, run, *scores[run.id.split("/")[1]])
                fake_weights(spec, run)
            runs = Plan(spec, store).runs
        text = write_report(spec, out=tmp_path / "out", plots=False)
        return text.split("### Against the best baseline")[1].split("###")[0]

    section = finish("toys/sasrec/")  # one baseline finished, FAME not yet
    assert "The best baseline is sasrec" in section and "may still change" in section
    assert "| gru4rec | not finished |" in section and "| fame    | not finished |" in section
    section = finish("toys/")
    assert "The best baseline is gru4rec" in section  # higher on validation, lower on test
    assert "may still change" not in section  # both baselines are finished
    rows = [line for line in section.splitlines() if line.startswith("| ")][2:]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    assert [row[:4] for row in cells] == [  # the other baseline first, then the others
        ["sasrec", "0.2500", "0.2000", "+25.0 %"],
        ["fame", "0.2200", "0.2000", "+10.0 %"],
    ]


def test_the_summary_counts_the_baselines_a_model_is_significantly_above_and_below(tmp_path):
    """Per-user test ranks make the summary's tests real: FAME's users are at rank 0 but two
    (at rank 1), SASRec's all at rank 0 (level with FAME: p about 0.16), GRU4Rec's all at rank 1
    (below FAME); GRU4Rec is the best baseline on validation."""
    spec = write_spec(tmp_path, BEST)
    users = 200
    ranks = {
        "sasrec": np.zeros(users, dtype=np.int64),
        "gru4rec": np.ones(users, dtype=np.int64),
        "fame": (np.arange(users) < 2).astype(np.int64),
    }
    tests = {model: float(per_user(r, "NDCG@10").mean()) for model, r in ranks.items()}
    valid = {"sasrec": 0.30, "gru4rec": 0.40, "fame": 0.35}
    store = Store(spec.records_dir, spec.runs_dir)

    def summary(prefixes: tuple[str, ...]) -> list[list[str]]:
        runs = Plan(spec, store).runs
        while ready := [r for r in runs if r.state == READY and r.id.startswith(prefixes)]:
            for run in ready:
                model = run.id.split("/")[1]
                fake_record(spec, run, valid[model], tests[model])
                rank_file = spec.records_dir / run.id / "ranks.npz"
                write_ranks(rank_file, {"valid": ranks[model], "test": ranks[model]})
                fake_weights(spec, run)
            runs = Plan(spec, store).runs
        text = write_report(spec, out=tmp_path / "out", plots=False)
        section = text.split("## Summary: against every baseline")[1].split("## toys")[0]
        rows = [line for line in section.splitlines() if line.startswith("| ")][2:]
        return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]

    assert summary(()) == [
        ["best baseline (on validation)", "none finished (0 of 2)"],
        ["fame", "not finished"],
    ]
    best, fame = summary(("toys/sasrec/", "toys/fame/"))  # one baseline finished, and FAME
    assert best[1] == "sasrec: test 1.0000 (1 of 2 baselines finished; may change)"
    assert fame[1].startswith(f"{tests['fame']:.4f}: -0.4 % (p = 0.1")
    assert fame[1].endswith("above 0, below 0 of 1")  # level: no significant difference
    best, fame = summary(("toys/",))
    assert best[1] == f"gru4rec: test {tests['gru4rec']:.4f} (2 of 2 baselines finished)"
    change = 100 * (tests["fame"] / tests["gru4rec"] - 1)
    assert fame[1] == f"{tests['fame']:.4f}: {change:+.1f} % (p < 0.001); above 1, below 0 of 2"
    # a baseline without per-user ranks is counted as untested, not as level
    (
        spec.records_dir
        / next(r.id for r in Plan(spec, store).runs if "/sasrec/" in r.id)
        / "ranks.npz"
    ).unlink()
    best, fame = summary(("toys/",))
    assert fame[1].endswith("above 1, below 0 of 2 (1 without a paired test)")


def test_a_model_is_tested_against_the_control_it_names(tmp_path):
    spec = write_spec(tmp_path, VERSUS)
    tests = {"sasrec": 0.20, "fame": 0.22, "continued": 0.25}
    while ready := [r for r in Plan(spec, Store(spec.records_dir)).runs if r.state == READY]:
        for run in ready:
            fake_record(spec, run, 0.3, tests[run.id.split("/")[1]])
    text = write_report(spec, out=tmp_path / "out", plots=False)
    section = text.split("### Against the matching controls")[1].split("###")[0]
    row = next(line for line in section.splitlines() if line.startswith("| fame "))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:5] == ["fame", "continued", "0.2200", "0.2500", "-12.0 %"]
    assert "| sasrec " not in section  # only models that name a control
    # every seed of a control is in the validation table (its speed, its spread), none selected
    trials = text.split("### Trials (validation)")[1].split("###")[0].splitlines()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in trials]
    control = [row for row in rows if row[0] == "continued"]
    assert [(row[1], row[3], row[-1]) for row in control] == [
        ("control", "1", ""),
        ("control", "2", ""),
    ]


def test_versus_must_name_another_model(tmp_path):
    with pytest.raises(SpecError, match="versus = 'nobody' must name another model"):
        write_spec(tmp_path, VERSUS.replace('"continued"\n', '"nobody"\n', 1))
    pending = VERSUS + '[models.later]\npending = "not yet"\n'
    with pytest.raises(SpecError, match="versus = 'later' must name another model"):
        write_spec(tmp_path, pending.replace('"continued"\n', '"later"\n', 1))
    with pytest.raises(SpecError, match=r"versus = \['continued'\] must name"):
        write_spec(tmp_path, VERSUS.replace('"continued"\n', '["continued"]\n', 1))


def test_a_spec_of_controls_only_says_that_nothing_is_selected(tmp_path):
    controls = VERSUS.split("[models.fame]")[1].replace("continued", "sasrec", 1)
    spec = write_spec(
        tmp_path, "[models.fame]" + controls.replace("[models.continued]", "[models.sasrec]")
    )
    text = write_report(spec, out=tmp_path / "out", plots=False)
    assert "Every model runs its one setting with seeds 1, 2; nothing is selected." in text
    assert "validation trials per dataset" not in text
    assert "every model gets  validation" not in text


SCREENED = VERSUS.replace('versus = "continued"\n', 'versus = "continued"\nscreen = true\n', 1)


@pytest.mark.parametrize(("valid", "passes"), [(0.2, False), (0.4, True)])
def test_a_screened_model_runs_its_other_seeds_only_if_its_first_beats_its_control(
    tmp_path, valid, passes
):
    spec = write_spec(tmp_path, SCREENED)

    def fame_plan():
        return Plan(spec, Store(spec.records_dir)).entries["toys", "fame"]

    def finish(name: str, score: float) -> None:
        for run in Plan(spec, Store(spec.records_dir)).runs:
            if run.id and run.id.split("/")[1] == name and run.seed == 1 and run.state == READY:
                fake_record(spec, run, score)

    finish("fame", valid)
    waiting = fame_plan().reruns
    assert [r.state for r in waiting] == ["waiting"] and "screening" in waiting[0].reason
    finish("continued", 0.3)  # the control's first seed: the screening can decide
    screened = fame_plan()
    if passes:
        assert [r.state for r in screened.reruns] == [READY] and not screened.screened_out
    else:
        assert screened.reruns == [] and "screened out (seed 1: valid NDCG@10 0.20000" in (
            screened.screened_out
        )
        while ready := [r for r in Plan(spec, Store(spec.records_dir)).runs if r.state == READY]:
            for run in ready:
                fake_record(spec, run, 0.3)
        text = write_report(spec, out=tmp_path / "out", plots=False)
        assert text.count("screened out (seed 1") == 2  # test table and controls table
        assert "screened out (seed 1" in status(spec)


def test_screen_needs_a_control_with_versus(tmp_path):
    with pytest.raises(SpecError, match="screen = true"):
        write_spec(tmp_path, SCREENED.replace('versus = "continued"\n', "", 1))


@pytest.mark.parametrize("first_stage", [False, True])
def test_status_says_how_far_an_unfinished_run_got(tmp_path, first_stage):
    """A `--pretrain` run paused in its SASRec stage has only `pretrain/log.jsonl`: status
    reads that stage's log and says so."""
    spec = write_spec(tmp_path, VERSUS)
    first = next(r for r in Plan(spec, Store(spec.records_dir)).runs if r.state == READY)
    folder = spec.runs_dir / first.id / ("pretrain" if first_stage else "")
    folder.mkdir(parents=True)
    epochs = [(1, 0.10, 0), (2, 0.15, 0), (3, 0.12, 1)]
    (folder / "log.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "epoch": epoch,
                    "train_seconds": 60.0,
                    "eval_seconds": 0.0,
                    "valid": {"NDCG@10": valid},
                    "stopping": {"epochs_without_best": since, "patience": 10},
                }
            )
            + "\n"
            for epoch, valid, since in epochs
        )
    )
    text = status(spec).split("started, not finished (they resume):")[1]
    label = first.id + (" (SASRec stage)" if first_stage else "")
    row = next(line for line in text.splitlines() if line.startswith(f"| {label} "))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:] == ["3", "0.1500 (2)", "1 / 10", "3m00s"]


def test_a_pruned_trial_is_drawn_at_its_best_epoch_up_to_its_rung():
    """Figures show a pruned trial where pruning compared it: the best epoch (on the spec's
    metric) up to the rung, never a later epoch."""
    log = [
        {"epoch": 1, "valid": {"NDCG@10": 0.02, "HR@20": 0.10}},
        {"epoch": 2, "valid": {"NDCG@10": 0.04, "HR@20": 0.09}},
        {"epoch": 3, "valid": {"NDCG@10": 0.03, "HR@20": 0.12}},
        {"epoch": 4, "valid": {"NDCG@10": 0.09, "HR@20": 0.30}},  # after the rung
    ]
    context = SimpleNamespace(
        spec=SimpleNamespace(metric="NDCG@10"), store=SimpleNamespace(log=lambda run_id: log)
    )
    run = SimpleNamespace(id="toys/sasrec/seed=1")
    assert pruned_value(context, run, 3, "HR@20") == 0.09
    assert pruned_value(context, run, 3, "NDCG@10") == 0.04
    assert pruned_value(context, SimpleNamespace(id="x"), 0, "HR@20") is None
