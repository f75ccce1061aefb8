"""Runs that go wrong: each ends with one line and exit code 2, and leaves either nothing or a
run that --resume can continue."""

import json
import math
import os
import resource
import signal
import stat

import pytest

from famerec.config import RunConfig
from famerec.training import Trainer, train_run
from tests.conftest import tiny_overrides, write_sequences
from tests.test_cli import TINY, assert_one_line_error, run_cli


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which are not JSON."""

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def log_epochs(run) -> list[int]:
    return [strict_json(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()]


def interrupted_run(tmp_path, data, epochs=3, stop_after=1):
    """A run cut short after `stop_after` epochs, as an interruption leaves it."""
    config = RunConfig().with_overrides(tiny_overrides(data, **{"train.epochs": epochs}))
    assert train_run(config, tmp_path / "run", progress=False, stop_after=stop_after) is None
    return tmp_path / "run"


@pytest.fixture
def data(tmp_path):
    return write_sequences(tmp_path / "d.txt")


def test_run_files_are_standard_json_and_log_the_stopping_rule(tmp_path, capsys, data):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", str(data), "--out", str(out), *TINY], capsys)
    assert code == 0, err
    strict_json((out / "metrics.json").read_text())
    stopping = strict_json((out / "log.jsonl").read_text())["stopping"]
    assert stopping["best_epoch"] == 1 and stopping["patience"] == 10
    assert stopping["steps"] == 4 and stopping["stop"] is False  # 120 users, batch 32
    # the best epoch is the last of --epochs 1: it may still be improving
    assert "famerec: warning: the best epoch (1) is within the last 10 epochs" in err


def test_divergence_in_the_first_epoch_leaves_nothing(tmp_path, capsys, data):
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), *TINY, "--lr", "1e30"]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "training diverged in epoch 1", "lower --lr")
    assert not out.exists()


def test_divergence_after_finite_epochs_keeps_them_resumable(tmp_path, capsys, data, monkeypatch):
    train_epoch = Trainer.train_epoch

    def diverge_in_epoch_2(self, epoch):
        losses, seconds = train_epoch(self, epoch)
        return ({**losses, "loss": math.nan} if epoch == 2 else losses), seconds

    monkeypatch.setattr(Trainer, "train_epoch", diverge_in_epoch_2)
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), *TINY, "--epochs", "3"]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "diverged in epoch 2: the train loss is nan", "--resume")
    assert log_epochs(out) == [1] and not (out / "metrics.json").exists()
    assert (out / "checkpoint.pt").is_file()


@pytest.mark.parametrize(
    "target, words",
    [
        (lambda tmp: tmp / "a-file" / "run", ["cannot write to --out", "Not a directory"]),
        (lambda tmp: tmp / "new" / "deeper" / "a-file" / "run", ["cannot write to --out"]),
    ],
)
def test_unwritable_out_fails_before_reading_data(tmp_path, capsys, target, words):
    (tmp_path / "a-file").write_text("")
    out = target(tmp_path)
    if "new" in out.parts:  # a parent that did not exist yet, then a file in the way
        (tmp_path / "new" / "deeper").mkdir(parents=True)
        (tmp_path / "new" / "deeper" / "a-file").write_text("")
    # the data file is missing too: --out is checked first
    args = ["train", "--data", str(tmp_path / "missing.txt"), "--out", str(out), *TINY]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, *words)
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only directory")
def test_read_only_out_parent(tmp_path, capsys, data):
    parent = tmp_path / "locked"
    parent.mkdir(mode=0o500)
    code, _, err = run_cli(
        ["train", "--data", str(data), "--out", str(parent / "r"), *TINY], capsys
    )
    assert_one_line_error(code, err, "cannot write to --out", "Permission denied")


@pytest.fixture
def file_size_limit():
    """Limit the size of files this process writes (a full disk, as the writer sees it: the
    write fails with an OSError); restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit(size):
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, handler)


@pytest.mark.parametrize(
    "limit, words",
    [
        (16 * 1024, ["cannot write to --out", "File too large"]),  # the probe file fails
        (128 * 1024, ["cannot write", "model.safetensors: File too large"]),  # the first weights
    ],
)
def test_full_out_leaves_nothing_behind(tmp_path, capsys, data, file_size_limit, limit, words):
    out = tmp_path / "new" / "run"
    args = ["train", "--data", str(data), "--out", str(out), *TINY, "--hidden", "64"]
    file_size_limit(limit)
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / "new").exists()


def test_failed_run_in_an_existing_empty_directory_empties_it_again(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    bad = write_sequences(tmp_path / "d.txt")
    args = ["train", "--data", str(bad), "--out", str(out), *TINY, "--lr", "1e30"]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "training diverged")
    assert out.is_dir() and not list(out.iterdir())


def test_truncated_checkpoint_on_resume(tmp_path, capsys, data):
    out = interrupted_run(tmp_path, data)
    checkpoint = out / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    before = sorted(p.name for p in out.iterdir())
    code, _, err = run_cli(["train", "--resume", "--out", str(out)], capsys)
    assert_one_line_error(code, err, "checkpoint.pt: the file is damaged", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == before
    assert log_epochs(out) == [1]


def test_resume_refuses_data_that_changed(tmp_path, capsys, data):
    out = interrupted_run(tmp_path, data)
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:-1]) + "\n")  # one user fewer
    code, _, err = run_cli(["train", "--resume", "--out", str(out)], capsys)
    assert_one_line_error(code, err, "is not the data this run started with", "dataset.npz")
    assert log_epochs(out) == [1] and not (out / "metrics.json").exists()


def test_resume_refuses_changed_ids_with_the_same_sequences(tmp_path, capsys, data):
    out = interrupted_run(tmp_path, data)
    lines = [line.split(" ", 1) for line in data.read_text().splitlines()]
    data.write_text("".join(f"{int(user) + 1000} {rest}\n" for user, rest in lines))
    code, _, err = run_cli(["train", "--resume", "--out", str(out)], capsys)
    assert_one_line_error(code, err, "is not the data this run started with")


def test_resume_works_from_another_directory(tmp_path, capsys, monkeypatch):
    write_sequences(tmp_path / "d.txt")
    monkeypatch.chdir(tmp_path)
    config = RunConfig().with_overrides(tiny_overrides("d.txt", **{"train.epochs": 2}))
    train_run(config, "run", progress=False, stop_after=1)
    saved = json.loads((tmp_path / "run/config.json").read_text())
    assert saved["data"]["path"] == str(tmp_path / "d.txt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_cli(["train", "--resume", "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert log_epochs(tmp_path / "run") == [1, 2]


def test_resume_without_checkpoint_drops_the_stale_log(tmp_path, capsys, data):
    out = interrupted_run(tmp_path, data, epochs=3, stop_after=2)
    (out / "checkpoint.pt").unlink()  # e.g. deleted after it was damaged
    with open(out / "log.jsonl", "a") as handle:
        handle.write('{"epoch": 3, "train_lo')  # and a line cut short by a crash
    code, _, err = run_cli(["train", "--resume", "--out", str(out)], capsys)
    assert code == 0, err
    assert log_epochs(out) == [1, 2, 3]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_respect_the_umask(tmp_path, capsys, data, umask):
    previous = os.umask(umask)
    try:
        out = tmp_path / "run"
        code, _, err = run_cli(["train", "--data", str(data), "--out", str(out), *TINY], capsys)
    finally:
        os.umask(previous)
    assert code == 0, err
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask) and len(modes) == 7


def test_time_limit_pauses_between_epochs_and_resume_finishes_the_same_run(tmp_path, capsys, data):
    """No epoch starts that the last one's time says would end past --time-limit: a first
    epoch (nothing timed yet) runs, then the run pauses, exit 75, and --resume continues it
    into the same run as one uninterrupted sitting."""
    args = ["train", "--data", str(data), *TINY, "--epochs", "3"]
    code, _, _ = run_cli([*args, "--out", str(tmp_path / "whole")], capsys)
    assert code == 0
    out = tmp_path / "run"
    code, stdout, err = run_cli([*args, "--out", str(out), "--time-limit", "0"], capsys)
    assert code == 75 and stdout == ""
    assert f"paused at --time-limit after epoch 1; continue with: famerec train --out {out}" in err
    assert log_epochs(out) == [1] and not (out / "metrics.json").exists()
    # resumed with no time left: the log's epoch says the next one would not fit, so none starts
    code, _, err = run_cli([*args, "--out", str(out), "--resume", "--time-limit", "0s"], capsys)
    assert code == 75 and "after epoch 1;" in err and log_epochs(out) == [1]
    code, _, _ = run_cli([*args, "--out", str(out), "--resume", "--time-limit", "2h30m"], capsys)
    assert code == 0 and log_epochs(out) == [1, 2, 3]
    whole = json.loads((tmp_path / "whole/metrics.json").read_text())
    paused = json.loads((out / "metrics.json").read_text())
    for key in ("valid", "test", "best_epoch", "epochs_run"):
        assert paused[key] == whole[key], key


def test_time_limit_pauses_a_pretrain_run_in_its_first_stage(tmp_path, capsys, data):
    """A --pretrain run paused in its SASRec stage says which stage; --resume goes on there."""
    out = tmp_path / "fame"
    args = ["train", "--model", "fame", "--pretrain", "--data", str(data), "--out", str(out)]
    args += [*TINY, "--hidden", "64", "--heads", "2", "--epochs", "2"]
    code, stdout, err = run_cli([*args, "--time-limit", "0"], capsys)
    assert code == 75 and stdout == ""
    assert "paused at --time-limit after pretraining epoch 1; continue with:" in err
    assert log_epochs(out / "pretrain") == [1] and not (out / "log.jsonl").exists()
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code == 0, err
    assert log_epochs(out / "pretrain") == [1, 2] and log_epochs(out) == [1, 2]


def test_time_limit_guards_the_first_epoch_of_a_pretrain_runs_second_stage(tmp_path, capsys, data):
    """With no time left once the SASRec stage ends, FAME's first epoch does not start: its
    trainer goes by the first stage's last epoch; --resume trains it."""
    out = tmp_path / "fame"
    args = ["train", "--model", "fame", "--pretrain", "--data", str(data), "--out", str(out)]
    args += [*TINY, "--hidden", "64", "--heads", "2", "--epochs", "1"]
    code, stdout, err = run_cli([*args, "--time-limit", "0"], capsys)
    assert code == 75 and stdout == "", err
    assert log_epochs(out / "pretrain") == [1] and not (out / "log.jsonl").exists()
    assert "paused at --time-limit after its pretraining stage; continue with:" in err
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code == 0, err
    assert log_epochs(out) == [1]


@pytest.mark.parametrize(
    "text, seconds", [("5400", 5400), ("90m", 5400), ("2h30m", 9000), ("1h", 3600), ("7.5s", 7.5)]
)
def test_time_limit_reads_durations(text, seconds):
    from famerec.cli import duration

    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "-1", "two"])
def test_stop_after_epoch_below_one_is_a_usage_error(tmp_path, capsys, data, text):
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--stop-after-epoch", text]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "give an epoch of 1 or more" in err and not out.exists()


@pytest.mark.parametrize("text", ["", "ten", "5x", "1m2h", "-3"])
def test_bad_time_limit_is_a_usage_error(tmp_path, capsys, data, text):
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--time-limit", text]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "give a duration such as 90m, 2h30m or 5400 (seconds)" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_init_from_without_data_trains_on_the_starting_runs_data(tmp_path, capsys, data):
    flags = ["--hidden", "64", *TINY[2:]]
    sasrec = ["train", "--data", str(data), "--out", str(tmp_path / "sasrec"), *flags]
    assert run_cli(sasrec, capsys)[0] == 0
    fame = ["train", "--model", "fame", "--init-from", str(tmp_path / "sasrec"), *flags]
    assert run_cli([*fame, "--out", str(tmp_path / "fame")], capsys)[0] == 0
    ours, theirs = (
        strict_json((tmp_path / r / "metrics.json").read_text()) for r in ("fame", "sasrec")
    )
    assert ours["dataset"] == theirs["dataset"]  # the same sequences and ids: fingerprint too
    assert ours["config"]["data"] == theirs["config"]["data"]
    # an explicit --dataset still wins, and is checked as before
    code, _, err = run_cli([*fame, "--dataset", "toys", "--out", str(tmp_path / "toys")], capsys)
    assert_one_line_error(code, err, "it was trained on dataset 'd'", "this run uses 'toys'")
    # the starting run's data file changed since: its fingerprint tells
    write_sequences(data, seed=3)
    code, _, err = run_cli([*fame, "--out", str(tmp_path / "changed")], capsys)
    assert_one_line_error(code, err, str(data), "no longer holds the data it was trained on")
    data.unlink()
    code, _, err = run_cli([*fame, "--out", str(tmp_path / "gone")], capsys)
    assert_one_line_error(code, err, str(data), "which is not found", "--data")
    for failed in ("toys", "changed", "gone"):
        assert not (tmp_path / failed).exists()
