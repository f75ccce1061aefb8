"""benchmarks/time_to_quality.py: reading a run's log against a target, and the frozen targets."""

import json
from pathlib import Path

import pytest

from benchmarks.time_to_quality import (
    MODELS,
    REPO,
    TARGETS,
    Failure,
    best_valid,
    load_targets,
    read_run,
    render,
    target_of,
    time_to_target,
    write_targets,
)
from famerec.runs.dir import RunDir


def epoch(n: int, ndcg: float, train: float, evaluation: float = 1.0) -> dict:
    return {
        "epoch": n,
        "train_loss": 5.0,
        "train_seconds": train,
        "eval_seconds": evaluation,
        "lr": 0.001,  # a field the benchmark does not know
        "valid": {"HR@10": 2 * ndcg, "NDCG@10": ndcg},
        "best": True,
    }


def write_run(folder: Path, model: str, scores: list[float], test: float | None = 0.05, **train):
    folder.mkdir(parents=True)
    config = {
        "data": {"dataset": "beauty", "path": None},
        "model": {"name": model},
        "train": {"threads": 2, "init_from": None, **train},
    }
    (folder / "config.json").write_text(json.dumps(config))
    log = [epoch(i + 1, s, train=10.0 * (i + 1)) for i, s in enumerate(scores)]
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    if test is not None:
        best = max(range(len(scores)), key=lambda i: scores[i]) + 1
        metrics = {
            "valid": {"NDCG@10": max(scores)},
            "test": {"NDCG@10": test},
            "best_epoch": best,
            "epochs_run": len(scores),
        }
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_the_target_is_reached_at_the_first_epoch_at_or_above_it():
    log = [epoch(1, 0.01, 10.0), epoch(2, 0.05, 20.0), epoch(3, 0.04, 30.0), epoch(4, 0.06, 40.0)]
    assert time_to_target(log, 0.05) == (2, 10.0 + 1 + 20.0 + 1)
    assert time_to_target(log, 0.055) == (4, 100.0 + 4)
    assert time_to_target(log, 0.07) is None
    assert best_valid(log) == (0.06, 4)


def test_a_finished_run_gives_its_row(tmp_path):
    run = write_run(tmp_path / "sasrec", "sasrec", [0.02, 0.06, 0.07, 0.065], test=0.055)
    row = read_run(run, {"sasrec": 0.0693})
    assert (row["epochs"], row["seconds"]) == (3, 10 + 20 + 30 + 3.0)
    assert (row["best"], row["best_epoch"], row["epochs_run"], row["test"]) == (0.07, 3, 4, 0.055)
    assert row["run_seconds"] == 100 + 4.0 and row["finished"] and row["start"] is None


def test_a_plain_run_names_the_machine_its_metrics_give(tmp_path):
    run = write_run(tmp_path / "sasrec", "sasrec", [0.02, 0.07], test=0.055)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["machine"] = {"cpu": "Some CPU", "cores": 2}
    (run / "metrics.json").write_text(json.dumps(metrics))
    row = read_run(run, {"sasrec": 0.0693})
    assert row["machine"] == {"cpu": "Some CPU", "cores": 2}
    assert "(machine: Some CPU 2 cores)" in render([row], "header")


def test_a_partial_run_that_never_reaches_its_target(tmp_path):
    run = write_run(tmp_path / "gru4rec", "gru4rec", [0.01, 0.03], test=None)
    row = read_run(run, {"gru4rec": 0.05})
    assert row["epochs"] is None and row["seconds"] is None and not row["finished"]
    assert (row["best"], row["best_epoch"], row["test"]) == (0.03, 2, None)
    text = render([row], "header")
    assert "not reached" in text and "2 / 2 (unfinished)" in text


def test_fame_counts_its_pretraining_stage(tmp_path):
    run = write_run(tmp_path / "fame", "fame", [0.05, 0.066], pretrain=True)
    write_run(run / "pretrain", "sasrec", [0.03, 0.06, 0.05])  # 10 + 20 + 30 + 3 s
    row = read_run(run, {"fame": 0.065})
    assert row["start"].epochs == 3 and row["start"].seconds == 63.0
    assert (row["epochs"], row["seconds"]) == (2, 63.0 + 10 + 20 + 2)
    sasrec = read_run(run / "pretrain", {"sasrec": 0.059})
    text = render([row, sasrec], "header")
    assert "2 (+3)" in text and f"{95 / 32:.2f}x" in text


def test_fame_still_in_its_pretraining_stage(tmp_path):
    write_run(tmp_path / "fame" / "pretrain", "sasrec", [0.03, 0.06], test=None)
    row = read_run(tmp_path / "fame", {"fame": 0.065})
    assert row["model"] == "fame" and row["epochs_run"] == 0 and row["run_seconds"] == 32.0
    assert "- / 0 (+2) (unfinished)" in render([row], "header")


def test_fame_started_from_another_run_adds_its_log(tmp_path):
    source = write_run(tmp_path / "sasrec", "sasrec", [0.06, 0.07])
    run = write_run(tmp_path / "fame", "fame", [0.066], init_from=str(source))
    row = read_run(run, {"fame": 0.065})
    assert row["start"].seconds == 32.0 and row["seconds"] == 32.0 + 11


def test_runs_on_other_data_or_without_a_target_are_refused(tmp_path):
    run = write_run(tmp_path / "core", "core", [0.05])
    with pytest.raises(Failure, match="no target"):
        read_run(run, {"sasrec": 0.05})
    config = json.loads((run / "config.json").read_text())
    config["data"]["dataset"] = "toys"
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(Failure, match="Beauty"):
        read_run(run, {"core": 0.05})


def test_the_targets_file_is_never_rewritten(tmp_path):
    path = tmp_path / "targets.json"
    path.write_text("{}")
    with pytest.raises(Failure, match="frozen"):
        write_targets(path)
    assert path.read_text() == "{}"
    with pytest.raises(Failure, match="--write-targets"):
        load_targets(tmp_path / "missing.json")


def test_the_committed_targets_are_99_percent_of_the_committed_records():
    """A target may only be raised: this fails if one is lowered or its record changes."""
    entries = json.loads(TARGETS.read_text())["models"]
    assert sorted(entries) == sorted(MODELS)
    for model, entry in entries.items():
        assert entry["record"].startswith(f"results/records/defaults_beauty/beauty/{model}/")
        best, best_epoch = best_valid(RunDir(REPO / entry["record"]).read_log())
        assert (entry["best_valid_ndcg10"], entry["best_epoch"]) == (best, best_epoch), model
        assert entry["target"] == target_of(best) == round(0.99 * best, 8), model
        metrics = json.loads((REPO / entry["record"] / "metrics.json").read_text())
        assert metrics["valid"]["NDCG@10"] == pytest.approx(best, abs=1e-6), model
    assert load_targets() == {model: entry["target"] for model, entry in entries.items()}
