"""Pruned search (successive halving over a stage's trials): the spec's rungs, decisions read
from logged validation scores alone, across restarts, and a tiny run end to end."""

import io
import json
import shutil

import pytest

from famerec.cli import main
from famerec.config import RunConfig
from famerec.evaluation import METRIC_NAMES
from famerec.experiments import Plan, SpecError, Store, load_spec
from famerec.experiments.plan import PRUNED, READY, WAITING
from famerec.experiments.pruning import decide, rung_score
from famerec.experiments.report import Context, draw_figure, figure_links
from famerec.experiments.runner import Runner
from famerec.experiments.spec import Pruning
from tests.conftest import write_sequences
from tests.experiments.helpers import PRUNING, REPO, TINY_BASE, write_spec
from tests.experiments.test_plan import FAME

HEADER = """
name = "tiny"
[selection]
seeds = [1]
"""
BODY = """
[base]
train.epochs = 6
[datasets.toys]
[models.sasrec]
[[models.sasrec.stages]]
name = "dropout"
grid.model.dropout = [0.1, 0.2, 0.3, 0.4]
"""


# table2_pruned's models whose recipe arrived after their first runs there
PINNED_TO_CLASSIC = ["gru4rec", "bert4rec", "core"]


def test_the_spec_pins_rungs_and_reduction(tmp_path):
    spec = write_spec(tmp_path, BODY, header=HEADER + PRUNING)
    assert spec.pruning == Pruning((2, 4), 2)
    assert spec.pruning.keep(4) == 2 and spec.pruning.keep(3) == 2
    assert write_spec(tmp_path, BODY, header=HEADER).pruning is None  # absent: no pruning
    for bad in ("rungs = [4, 2]\nreduction = 2", "rungs = [2]\nreduction = 1", "rungs = []"):
        with pytest.raises(SpecError, match="selection.pruning"):
            write_spec(tmp_path, BODY, header=HEADER + f"[selection.pruning]\n{bad}\n")

    table2 = load_spec(REPO / "experiments/table2.toml")
    pruned = load_spec(REPO / "experiments/table2_pruned.toml")
    assert table2.pruning is None
    assert pruned.pruning == Pruning((3, 9), 3)
    # table2's grid unchanged, then rows the paper does not have, each labelled so. A model
    # whose recipe became its default after the spec's first runs of it keeps the constant-rate
    # training those runs were made with, stated in full in its entry (and only that).
    classic = {
        "train.lr": 0.001,
        "train.batch_size": 256,
        "train.lr_schedule": "constant",
        "train.warmup_steps": 0,
        "train.epochs": 200,
    }
    # BERT4Rec's recipe later took Xu et al.'s model settings too: its runs keep the official
    # ones, its options' defaults, also stated in full
    official = {
        "model.num_heads": 2,
        "train.weight_decay": 0.0,
        "bert4rec.attn_dropout": 0.2,
        "bert4rec.mask_last": 1 / 11,
    }
    pinned = []
    for mine, theirs in zip(pruned.entries, table2.entries):
        assert (mine.name, mine.stages) == (theirs.name, theirs.stages)
        extra_settings = {k: v for k, v in mine.settings.items() if k not in theirs.settings}
        if extra_settings:
            expected = {**classic, **(official if mine.name == "bert4rec" else {})}
            assert extra_settings == expected, mine.name
            pinned.append(mine.name)
        assert {k: mine.settings[k] for k in theirs.settings} == theirs.settings
    assert pinned == PINNED_TO_CLASSIC
    extra = pruned.entries[len(table2.entries) :]
    assert [e.name for e in extra] == ["fame-famerec", "sasrec-itemattr-continued"]
    assert all(e.control and "not in the paper" in e.label for e in extra)
    assert pruned.base == table2.base and pruned.seeds == table2.seeds


def curve(*valid):
    return [{"epoch": i, "valid": {"NDCG@10": v}} for i, v in enumerate(valid, 1)]


def test_decisions_are_a_pure_function_of_the_logged_validation_scores():
    logs = {
        "a": (curve(0.1, 0.2, 0.3, 0.4), False),
        "b": (curve(0.3, 0.1, 0.5, 0.6), False),
        "c": (curve(0.2, 0.2), True),  # finished before rung 4: competes with its best
        "d": (curve(0.3, 0.05, 0.9), False),  # tied with b at rung 2: b wins on its run id
    }

    def score(run_id, rung):
        log, finished = logs[run_id]
        return rung_score(log, rung, "NDCG@10", finished)

    verdict = decide(list(logs), Pruning((2, 4), 2), score)
    assert verdict.pruned == {"a": (2, 0.2), "c": (2, 0.2)}
    assert verdict.alive == ["b", "d"] and verdict.rung == 4  # d has not reached epoch 4
    assert verdict.scores == {"b": 0.6, "d": None}
    assert decide(list(logs), Pruning((2, 4), 2), score) == verdict  # the same every time
    logs["d"] = (curve(0.3, 0.05, 0.9, 0.2), False)
    verdict = decide(list(reversed(logs)), Pruning((2, 4), 2), score)
    assert verdict.pruned == {"a": (2, 0.2), "c": (2, 0.2), "b": (4, 0.6)}
    assert verdict.alive == ["d"] and verdict.rung is None  # d trains to its early stop

    # decisions on record stand: b's pruning at rung 4 holds while d's log is lost and d
    # trains to rung 2 again; the rung still keeps half of all four trials
    logs["d"] = ([], False)
    verdict = decide(list(logs), Pruning((2, 4), 2), score, recorded={"b": 4, "a": 2})
    assert verdict.pruned == {"a": (2, 0.2), "b": (4, 0.6)}
    assert verdict.alive == ["c", "d"] and verdict.rung == 2 and verdict.scores["d"] is None
    logs["d"] = (curve(0.01, 0.01), False)  # now below c at rung 2: c survives, b stays out
    verdict = decide(list(logs), Pruning((2, 4), 2), score, recorded={"b": 4, "a": 2})
    assert verdict.pruned == {"a": (2, 0.2), "d": (2, 0.01), "b": (4, 0.6)}
    assert verdict.alive == ["c"] and verdict.rung is None


def finished(valid, test, epochs):
    """metrics.json of a run that trained `epochs` epochs, best at the last."""
    return {
        "valid": dict.fromkeys(METRIC_NAMES, valid),
        "test": dict.fromkeys(METRIC_NAMES, test),
        "best_epoch": epochs,
        "epochs_run": epochs,
    }


def write_run(folder, run, log, metrics=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(RunConfig().with_overrides(run.settings).to_json())
    (folder / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))


def test_decisions_wait_for_the_rung_survive_a_restart_and_never_read_test(tmp_path):
    spec = write_spec(tmp_path, BODY, header=HEADER + PRUNING)
    store = Store(spec.records_dir, spec.runs_dir)
    trials = Plan(spec, store).entries["toys", "sasrec"].trials
    a, b, c, d = trials
    write_run(spec.runs_dir / a.id, a, curve(0.1, 0.2))
    write_run(spec.runs_dir / b.id, b, curve(0.3, 0.25))
    # finished early, with the best test score by far: if test were read, c would survive
    metrics = finished(0.15, 0.99, epochs=1)
    write_run(spec.runs_dir / c.id, c, curve(0.15), metrics)
    write_run(spec.runs_dir / d.id, d, curve(0.4))  # paused before its rung (--time-limit)

    trials = Plan(spec, store).entries["toys", "sasrec"].trials
    assert [t.state for t in trials] == [WAITING, WAITING, "done", READY]
    assert trials[3].stop_at == 2 and trials[0].stop_at is None  # d resumes to the rung only
    assert "at rung 2" in trials[0].reason

    write_run(spec.runs_dir / d.id, d, curve(0.4, 0.1))
    plan = Plan(spec, store)
    trials = plan.entries["toys", "sasrec"].trials
    assert [t.state for t in trials] == [PRUNED, READY, PRUNED, READY]
    assert trials[2].reason == "pruned at rung 2: valid NDCG@10 0.15000"
    assert trials[1].stop_at == 4 and plan.entries["toys", "sasrec"].selected is None
    assert plan.counts()[PRUNED] == 2

    # the runner records the pruned trials; a runner restarted later, even where the pruned
    # trials' run directories are gone (their records hold their logs), decides the same
    Runner(spec, stream=io.StringIO()).record_pruned(plan)
    record = json.loads((spec.records_dir / a.id / "record.json").read_text())
    assert record["pruned"] == "pruned at rung 2: valid NDCG@10 0.20000"
    assert record["epochs_run"] == 2 and record["stage"] == "dropout"
    shutil.rmtree(spec.runs_dir / a.id)
    shutil.rmtree(spec.runs_dir / c.id)
    again = Plan(spec, Store(spec.records_dir, spec.runs_dir)).entries["toys", "sasrec"].trials
    assert [t.state for t in again] == [PRUNED, READY, PRUNED, READY]
    assert [t.stop_at for t in again] == [None, 4, None, 4]
    assert [t.reason for t in again if t.state == PRUNED] == [
        t.reason for t in trials if t.state == PRUNED
    ]
    # a survivor's run is lost (a sitting's run that did not come back): it trains to the rung
    # again, and the decisions on record stand meanwhile (never "done" at 2 epochs)
    shutil.rmtree(spec.runs_dir / b.id)
    again = Plan(spec, Store(spec.records_dir, spec.runs_dir)).entries["toys", "sasrec"]
    assert [t.state for t in again.trials] == [PRUNED, READY, PRUNED, WAITING]
    assert again.trials[1].stop_at == 2 and again.selected is None
    # its new curve would rank it below a pruned trial: the recorded decision still stands
    write_run(spec.runs_dir / b.id, b, curve(0.01, 0.02))
    again = Plan(spec, Store(spec.records_dir, spec.runs_dir)).entries["toys", "sasrec"]
    assert [t.state for t in again.trials] == [PRUNED, READY, PRUNED, READY]
    assert [t.stop_at for t in again.trials] == [None, 4, None, 4]


def tiny_pruned_search(tmp_path):
    """Three SASRec trials on tiny data, one rung at epoch 1 that keeps one of them."""
    data = write_sequences(tmp_path / "seqs.txt", num_users=40, num_items=20)
    header = f"""
name = "tiny"
[selection]
seeds = [1]
[selection.pruning]
rungs = [1]
reduction = 3
{TINY_BASE}[datasets.ok]
data.path = "{data}"
"""
    body = (
        '[models.sasrec]\n[[models.sasrec.stages]]\nname = "dropout"\n'
        "grid.model.dropout = [0.1, 0.2, 0.3]\n"
    )
    return write_spec(tmp_path, body, header=header)


def test_a_tiny_pruned_search_end_to_end(tmp_path, capsys):
    spec = tiny_pruned_search(tmp_path)
    assert main(["experiment", "run", str(spec.path), "--dry-run"]) == 0
    dry = capsys.readouterr().err
    assert "pruned search: each stage's trials ranked on validation NDCG@10 at epochs 1" in dry
    assert dry.count("(to rung 1)") == 3 and dry.count("--stop-after-epoch 1") == 3

    assert main(["experiment", "run", str(spec.path)]) == 0
    err = capsys.readouterr().err
    assert err.count("rung  ok/sasrec/") == 3 and err.count("pruned ok/sasrec/") == 2, err
    plan = Plan(spec, Store(spec.records_dir))
    trials = plan.entries["ok", "sasrec"].trials
    assert sum(t.state == PRUNED for t in trials) == 2
    survivor = plan.entries["ok", "sasrec"].selected
    assert survivor is not None and survivor.state == "done"
    assert (
        json.loads((spec.records_dir / survivor.id / "metrics.json").read_text())["epochs_run"] == 2
    )
    for run in trials:
        if run.state == PRUNED:
            files = sorted(p.name for p in (spec.records_dir / run.id).iterdir())
            assert files == ["config.json", "log.jsonl", "record.json"]
            assert (spec.runs_dir / run.id / "config.json").is_file()  # left as it is
    assert main(["experiment", "run", str(spec.path), "--dry-run"]) == 0
    assert capsys.readouterr().err.count("pruned   ok/sasrec/") == 2
    assert main(["experiment", "status", str(spec.path)]) == 0
    out = capsys.readouterr().out
    assert "ok/sasrec/dropout: rungs decided, 1 trained on to the end" in out, out
    assert out.count(": pruned at rung 1: valid NDCG@10 ") == 2
    report = tmp_path / "report"
    assert main(["experiment", "report", str(spec.path), "--out", str(report), "--no-plots"]) == 0
    text = (report / "tiny.md").read_text()
    assert "### Pruned trials (validation)" in text and text.count("| pruned |") == 2, text


def test_a_reference_to_a_pruned_kind_of_trial_trains_it_on(tmp_path):
    # SASRec and FAME over d in {64, 128}, FAME starting from the SASRec of its size
    body = "[datasets.toys]" + FAME.split("[models.later]")[0]
    header = HEADER + "[selection.pruning]\nrungs = [1]\nreduction = 2\n"
    spec = write_spec(tmp_path, body, header=header)
    store = Store(spec.records_dir, spec.runs_dir)
    small, large = Plan(spec, store).entries["toys", "sasrec"].trials
    metrics = finished(0.3, 0.3, epochs=2)
    write_run(spec.runs_dir / small.id, small, curve(0.2, 0.3), metrics)
    write_run(spec.runs_dir / large.id, large, curve(0.1))
    (spec.runs_dir / small.id / "model.safetensors").write_bytes(b"")
    plan = Plan(spec, store)
    sasrec = plan.entries["toys", "sasrec"]
    assert [t.state for t in sasrec.trials] == ["done", READY]  # pruned, then revived (below)
    assert [t.id for t in sasrec.pool] == [small.id] == [sasrec.selected.id]
    fame = plan.entries["toys", "fame"].trials
    assert [t.state for t in fame] == [READY, WAITING]
    assert fame[0].stop_at == 1
    # no SASRec trial at d = 128 survived: the pruned one trains on to its own end as the
    # start of FAME's d = 128 trial, and stays out of SASRec's selection
    assert fame[1].reason == f"waits for {large.id} (pruned, trains on as its start)"
    revived = plan.by_id[large.id]
    assert revived.state == READY and revived.stop_at is None
    assert revived.reason.endswith("trains on as the start of runs with hidden_size=128")
    assert revived.settings["model.hidden_size"] == 128
    # the same once its pruning is on record (as when it was pruned before SASRec's selection)
    plan = Plan(spec, store)
    plan.by_id[large.id].state = PRUNED
    Runner(spec, stream=io.StringIO()).record_pruned(plan)
    assert (spec.records_dir / large.id / "record.json").is_file()
    store = Store(spec.records_dir, spec.runs_dir)
    plan = Plan(spec, store)
    assert plan.by_id[large.id].state == READY and plan.by_id[large.id].settings is not None
    # it trains on here to its end; the runner records it (reading its new metrics), and the
    # record keeps its pruning
    write_run(spec.runs_dir / large.id, large, curve(0.1, 0.25), metrics)
    (spec.runs_dir / large.id / "model.safetensors").write_bytes(b"")
    assert store.finished(large.id)
    Runner(spec, stream=io.StringIO()).save_record(plan.by_id[large.id], 1.0, False, [])
    record = json.loads((spec.records_dir / large.id / "record.json").read_text())
    assert record["pruned"].startswith("pruned at rung 1")
    assert (spec.records_dir / large.id / "metrics.json").is_file()
    plan = Plan(spec, Store(spec.records_dir, spec.runs_dir))
    sasrec = plan.entries["toys", "sasrec"]
    assert [t.state for t in sasrec.trials] == ["done", PRUNED]  # the decision stands
    assert "pruned at rung 1" in sasrec.trials[1].reason
    assert sasrec.selected.id == small.id
    fame = plan.entries["toys", "fame"].trials
    assert [t.state for t in fame] == [READY, READY], fame[1].reason
    assert fame[1].settings["train.init_from"].endswith(large.id.split("/")[-1])


def prune_two(spec, first_log):
    """BODY's four trials run to rung 2 (the first with `first_log`), the first and third
    pruned there and recorded so; the trials."""
    a, b, c, d = Plan(spec, Store(spec.records_dir, spec.runs_dir)).entries["toys", "sasrec"].trials
    for run, log in ((a, first_log), (b, curve(0.3, 0.25)), (c, curve(0.15, 0.1))):
        write_run(spec.runs_dir / run.id, run, log)
    write_run(spec.runs_dir / d.id, d, curve(0.4, 0.1))
    plan = Plan(spec, Store(spec.records_dir, spec.runs_dir))
    states = [t.state for t in plan.entries["toys", "sasrec"].trials]
    assert states == [PRUNED, READY, PRUNED, READY]
    Runner(spec, stream=io.StringIO()).record_pruned(plan)
    return a, b, c, d


def test_figures_draw_pruned_trials_where_pruning_compared_them(tmp_path):
    figure = '[[figures]]\nname = "d"\ntitle = "dropout"\nx = "model.dropout"\n'
    figure += 'series = ["sasrec:dropout"]\nmetrics = ["NDCG@10"]\n'
    spec = write_spec(tmp_path, BODY + figure, header=HEADER + PRUNING)
    a, b, c, d = prune_two(spec, curve(0.1, 0.2, 0.9))  # as the runner leaves them
    store = Store(spec.records_dir, spec.runs_dir)
    plan = Plan(spec, store)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    context = Context(spec, store, plan, tmp_path, {})
    fig = draw_figure(plt, context, spec.datasets[0], spec.figures[0])
    (ax,) = fig.axes
    pruned = [line for line in ax.lines if line.get_label().endswith(": pruned")]
    assert len(pruned) == 1  # a and c: one setting group, hollow circles
    assert list(pruned[0].get_xdata()) == [0.1, 0.3]
    assert list(pruned[0].get_ydata()) == [0.2, 0.15]  # best up to rung 2, not a's later 0.9
    assert pruned[0].get_markerfacecolor() == "none"
    plt.close(fig)


def test_a_test_split_figure_draws_the_finished_trials_test_values_only(tmp_path):
    """`split = "test"` (the paper's figures plot the test split): each finished trial's test
    value; a pruned trial has none and is not drawn; a split other than valid or test is
    refused."""
    figure = '[[figures]]\nname = "d"\ntitle = "dropout"\nx = "model.dropout"\n'
    figure += 'series = ["sasrec:dropout"]\nmetrics = ["NDCG@10"]\nsplit = "test"\n'
    spec = write_spec(tmp_path, BODY + figure, header=HEADER + PRUNING)
    assert spec.figures[0].split == "test"
    a, b, c, d = prune_two(spec, curve(0.1, 0.2))
    write_run(spec.runs_dir / b.id, b, curve(0.3, 0.25, 0.3, 0.35))  # pruned at rung 4
    log = curve(0.4, 0.1, 0.3, 0.4, 0.45, 0.6)
    write_run(spec.runs_dir / d.id, d, log, finished(0.6, 0.1, epochs=6))  # trained to its end
    Runner(spec, stream=io.StringIO()).record_pruned(
        Plan(spec, Store(spec.records_dir, spec.runs_dir))
    )
    store = Store(spec.records_dir, spec.runs_dir)
    plan = Plan(spec, store)
    assert [t.state for t in plan.entries["toys", "sasrec"].trials] == [PRUNED] * 3 + ["done"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    context = Context(spec, store, plan, tmp_path, {})
    fig = draw_figure(plt, context, spec.datasets[0], spec.figures[0])
    (ax,) = fig.axes
    assert not [line for line in ax.lines if line.get_label().endswith(": pruned")]
    (points,) = [line for line in ax.lines if line.get_marker() == "o"]
    assert list(points.get_xdata()) == [0.4] and list(points.get_ydata()) == [0.1]  # not 0.6
    assert ax.get_ylabel() == "test NDCG@10"
    plt.close(fig)
    links = figure_links(context, spec.datasets[0])
    assert "Test NDCG@10 of the trials" in links and "nothing is selected from it" in links
    assert "dropout = 0.4 |" in links and " 0.1000 |" in links  # its values, as a table

    with pytest.raises(SpecError, match="split must be"):
        write_spec(tmp_path, BODY + figure.replace('"test"', '"train"'), header=HEADER + PRUNING)


def test_a_figure_draws_another_specs_trials_from_its_records(tmp_path):
    """`SPEC:MODEL:STAGE` draws the trials of another spec of the folder beside the spec's own
    (one figure from two searches); a spec that is not there is refused."""
    spec = write_spec(tmp_path, BODY, header=HEADER + PRUNING)
    prune_two(spec, curve(0.1, 0.2, 0.9))
    figure = '[[figures]]\nname = "d"\ntitle = "dropout"\nx = "model.dropout"\n'
    figure += 'series = ["sasrec:dropout", "tiny:sasrec:dropout"]\nmetrics = ["NDCG@10"]\n'
    path = tmp_path / "experiments" / "other.toml"
    path.write_text(HEADER.replace('"tiny"', '"other"') + BODY + figure)
    other = load_spec(path)
    assert [str(s) for s in other.figures[0].series] == ["sasrec:dropout", "tiny:sasrec:dropout"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    store = Store(other.records_dir)
    context = Context(other, store, Plan(other, store), tmp_path, {})
    fig = draw_figure(plt, context, other.datasets[0], other.figures[0])
    (ax,) = fig.axes
    pruned = [line for line in ax.lines if line.get_label().endswith("(tiny): pruned")]
    assert len(pruned) == 1 and list(pruned[0].get_xdata()) == [0.1, 0.3]
    assert list(pruned[0].get_ydata()) == [0.2, 0.15]  # as tiny's own figure draws them
    plt.close(fig)
    assert "SPEC:MODEL:STAGE is another spec's" in figure_links(context, other.datasets[0])

    # two specs that draw from each other load
    tiny = tmp_path / "experiments" / "tiny.toml"
    tiny.write_text(tiny.read_text() + figure.replace('"tiny:', '"other:'))
    assert str(load_spec(tiny).figures[0].series[1]) == "other:sasrec:dropout"
    assert str(load_spec(path).figures[0].series[1]) == "tiny:sasrec:dropout"

    path.write_text(path.read_text().replace('"tiny:sasrec', '"nosuch:sasrec'))
    with pytest.raises(SpecError, match="must name another spec"):
        load_spec(path)
    path.write_text(path.read_text().replace('"nosuch:sasrec', '"tiny:gru4rec'))
    with pytest.raises(SpecError, match="no such MODEL:STAGE in tiny"):
        load_spec(path)


def test_an_entry_that_is_not_pruned_trains_on_another_specs_pruned_trials(tmp_path):
    """`prune = false`: a spec that shares a pruned spec's records (figures with every point
    trained to its end) resumes the trials pruned there from their rung; their records keep
    the pruned spec's decisions, so its selection stays as it was."""
    pruned = write_spec(tmp_path, BODY, header=HEADER + PRUNING)
    whole = write_spec(
        tmp_path,
        BODY.replace("[models.sasrec]\n", "[models.sasrec]\nprune = false\n"),
        header=HEADER + PRUNING,
    )
    assert [e.prune for e in pruned.entries] == [True] and not whole.prunes(whole.entries[0])
    assert whole.runs_dir == pruned.runs_dir and whole.records_dir == pruned.records_dir
    a, b, c, d = prune_two(pruned, curve(0.1, 0.2))

    def states(spec):
        trials = Plan(spec, Store(spec.records_dir, spec.runs_dir)).entries["toys", "sasrec"]
        return trials.trials

    trials = states(whole)
    assert [t.state for t in trials] == [READY] * 4  # a and c resume from their rung
    assert all(t.stop_at is None and t.settings is not None for t in trials)
    # a trains on to its end here and is recorded: the record keeps its pruning
    metrics = finished(0.5, 0.5, epochs=4)
    write_run(pruned.runs_dir / a.id, a, curve(0.1, 0.2, 0.4, 0.5), metrics)
    Runner(whole, stream=io.StringIO()).save_record(trials[0], 1.0, False, [])
    record = json.loads((pruned.records_dir / a.id / "record.json").read_text())
    assert record["pruned"] == "pruned at rung 2: valid NDCG@10 0.20000"
    assert [t.state for t in states(whole)] == ["done", READY, READY, READY]
    again = states(pruned)  # the pruned spec decides as before
    assert [t.state for t in again] == [PRUNED, READY, PRUNED, READY]
    assert again[0].reason == "pruned at rung 2: valid NDCG@10 0.20000"
    with pytest.raises(SpecError, match="prune must be true or false"):
        write_spec(
            tmp_path,
            BODY.replace("[models.sasrec]\n", '[models.sasrec]\nprune = "no"\n'),
            header=HEADER,
        )


def test_a_sitting_cut_off_after_a_pruned_trial_trained_on_to_its_end_records_it_later(
    tmp_path,
):
    """A spec without pruning trains another spec's pruned trial on to its end, and its
    runner is cut off before recording it: the next sitting's sync records the run in full
    (its metrics and whole log), keeping the pruned spec's decision."""
    pruned = write_spec(tmp_path, BODY, header=HEADER + PRUNING)
    whole = write_spec(
        tmp_path,
        BODY.replace("[models.sasrec]\n", "[models.sasrec]\nprune = false\n"),
        header=HEADER + PRUNING,
    )
    a, *_ = prune_two(pruned, curve(0.1, 0.2))
    write_run(pruned.runs_dir / a.id, a, curve(0.1, 0.2, 0.4, 0.5), finished(0.5, 0.5, epochs=4))
    plan = Plan(whole, Store(whole.records_dir, whole.runs_dir))
    assert plan.entries["toys", "sasrec"].trials[0].state == "done"
    assert not (pruned.records_dir / a.id / "metrics.json").is_file()

    Runner(whole, stream=io.StringIO()).sync(plan)
    record = pruned.records_dir / a.id
    assert (record / "metrics.json").is_file()
    assert len((record / "log.jsonl").read_text().splitlines()) == 4
    info = json.loads((record / "record.json").read_text())
    assert info["pruned"] == "pruned at rung 2: valid NDCG@10 0.20000"


def test_rungs_only_decides_the_rungs_and_starts_no_run_past_them(tmp_path, capsys):
    spec = tiny_pruned_search(tmp_path)
    assert main(["experiment", "run", str(spec.path), "--rungs-only"]) == 0
    err = capsys.readouterr().err
    assert err.count("rung  ok/sasrec/") == 3 and err.count("pruned ok/sasrec/") == 2, err
    assert "1 run(s) left: trains past its last rung: left by --rungs-only" in err, err
    plan = Plan(spec, Store(spec.records_dir, spec.runs_dir))
    [survivor] = [t for t in plan.entries["ok", "sasrec"].trials if t.state != PRUNED]
    assert survivor.state == READY and survivor.stop_at is None
    log = (spec.runs_dir / survivor.id / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1]  # paused at its rung

    assert main(["experiment", "run", str(spec.path), "--rungs-only", "--dry-run"]) == 0
    dry = capsys.readouterr().err
    assert f"ready    {survivor.id} (left by --rungs-only)" in dry, dry
    assert dry.count("(left by --rungs-only)") == 1, dry

    shutil.rmtree(spec.runs_dir / survivor.id)  # lost with its machine: its rung is on record
    lost = Plan(spec, Store(spec.records_dir, spec.runs_dir)).entries["ok", "sasrec"]
    [again] = [t for t in lost.trials if t.state != PRUNED]
    assert again.state == READY and again.stop_at == 1 and again.settled
    assert main(["experiment", "run", str(spec.path), "--rungs-only"]) == 0
    err = capsys.readouterr().err
    assert "start " not in err and "retrains to rungs decided on record" in err, err
    assert not (spec.runs_dir / survivor.id).exists()
    assert main(["experiment", "run", str(spec.path)]) == 0  # without it, the survivor ends
    assert "done  ok/sasrec/" in capsys.readouterr().err
    assert Plan(spec, Store(spec.records_dir)).entries["ok", "sasrec"].selected.state == "done"
