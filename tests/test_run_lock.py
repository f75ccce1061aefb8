"""One writer per run directory: the lock, the temporary files killed writes leave, and the
errors a second writer gets. Races are made deterministic by holding the lock from the test
process (with the same lock the CLI takes) where possible; two tests race real processes: two
`train --out R` started together, and a plain start, --overwrite and --resume while R trains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import famerec
from famerec.cli import main
from famerec.errors import InUseError
from famerec.experiments.spec import relative
from famerec.runs.dir import LOCK, TEMP_PREFIX, DirectoryLock, RunDir
from tests.conftest import write_sequences
from tests.experiments.test_runner import tiny_spec
from tests.test_cli import TINY, assert_one_line_error, run_cli

IN_USE = "is in use by another famerec process (pid {})"


@pytest.fixture
def data(tmp_path):
    return write_sequences(tmp_path / "d.txt", num_users=60, num_items=20)


def train_args(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), *TINY, *extra]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def log_epochs(out: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]


def test_a_second_writer_fails_at_once_and_the_first_keeps_the_directory(tmp_path, capsys, data):
    out = tmp_path / "run"
    holder = RunDir(out)
    holder.lock()  # another famerec process training `out`, as far as the CLI can tell
    try:
        started = time.monotonic()
        code, _, err = run_cli(train_args(data, out), capsys)
        assert_one_line_error(code, err, f"{out} " + IN_USE.format(os.getpid()))
        assert time.monotonic() - started < 10  # at once: no waiting for the holder
        assert sorted(p.name for p in out.iterdir()) == [LOCK]
        assert (out / LOCK).read_text().strip() == str(os.getpid())
    finally:
        holder.unlock()
    assert not out.exists() or not list(out.iterdir())  # the holder created it empty
    code, _, err = run_cli(train_args(data, out), capsys)
    assert code == 0, err
    assert log_epochs(out) == [1] and not (out / LOCK).exists()  # released when done


def test_overwrite_and_resume_while_another_trains_are_refused_and_delete_nothing(
    tmp_path, capsys, data
):
    out = tmp_path / "run"
    assert run_cli(train_args(data, out, "--epochs", "2"), capsys)[0] == 0
    before = snapshot(out)
    with DirectoryLock(out):
        for flags in (["--overwrite", "--seed", "7"], ["--resume"], []):
            code, _, err = run_cli(train_args(data, out, "--epochs", "2", *flags), capsys)
            assert_one_line_error(code, err, IN_USE.format(os.getpid()))
            assert snapshot(out) == {**before, LOCK: f"{os.getpid()}\n".encode()}
    assert snapshot(out) == before


def test_overwrite_with_bad_input_keeps_the_old_run(tmp_path, capsys, data):
    """--overwrite replaces a run only once the new one has started: data that cannot be read
    (a bad line, a missing file) leaves the old run as it was, and nothing beside it."""
    out = tmp_path / "run"
    assert run_cli(train_args(data, out), capsys)[0] == 0
    before = snapshot(out)
    bad = tmp_path / "bad.txt"
    bad.write_text(data.read_text() + "u9 1 x\n")
    for wrong in (bad, tmp_path / "missing.txt"):
        code, _, err = run_cli(train_args(wrong, out, "--overwrite", "--seed", "7"), capsys)
        assert code == 2, err
        assert snapshot(out) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "d.txt", "run"]
    code, _, err = run_cli(train_args(data, out, "--overwrite", "--seed", "7"), capsys)
    assert code == 0, err
    assert snapshot(out) != before and log_epochs(out) == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "d.txt", "run"]


def test_the_python_api_overwrite_with_new_data_is_refused_too(tmp_path, capsys, data):
    out = tmp_path / "run"
    assert run_cli(train_args(data, out), capsys)[0] == 0
    before = snapshot(out)
    with DirectoryLock(out), pytest.raises(InUseError, match="in use by another famerec"):
        famerec.train(data={"u1": [1, 2, 3]}, out=out, overwrite=True, quiet=True)
    assert snapshot(out) == before


def test_two_processes_racing_on_one_out_leave_one_uncorrupted_run(tmp_path, data):
    """A true race: two `famerec train --out R` started together. One trains, the other exits
    2 at once; the run's log has each epoch once."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "famerec", "-q", *train_args(data, out, "--epochs", "8")]
    args += ["--patience", "8"]
    racers = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    racers.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [(racer.wait(timeout=120), *racer.communicate()) for racer in racers]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    err = next(err for code, _, err in results if code == 2)
    winner = next(racer.pid for (code, _, _), racer in zip(results, racers) if code == 0)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert errors == [f"famerec: error: {out} " + IN_USE.format(winner)], err
    assert log_epochs(out) == list(range(1, 9))
    assert (out / "metrics.json").is_file() and not (out / LOCK).exists()


def hold_in_another_process(folder: Path) -> subprocess.Popen:
    """A process that takes `folder`'s run lock and sleeps, once it holds the lock."""
    script = (
        "import sys, time\n"
        "from famerec.runs.dir import RunDir\n"
        "RunDir(sys.argv[1]).lock()\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_kill_9_of_the_holder_lets_the_next_writer_in_at_once(tmp_path, capsys, data):
    out = tmp_path / "run"
    holder = hold_in_another_process(out)
    try:
        code, _, err = run_cli(train_args(data, out), capsys)
        assert_one_line_error(code, err, IN_USE.format(holder.pid))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK).read_text().strip() == str(holder.pid)  # left behind, held by no one
    code, _, err = run_cli(train_args(data, out), capsys)
    assert code == 0, err
    assert log_epochs(out) == [1] and not (out / LOCK).exists()


def leftovers(folder: Path) -> None:
    """What killed writes leave: temporary files (this version's and earlier ones') and a lock
    file that no process holds."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TEMP_PREFIX}0123456789ab.dataset.npz").write_bytes(b"half")
    (folder / ".tmp-0123456789ab.config.json").write_text("{")
    (folder / LOCK).write_text("999999999\n")


@pytest.mark.parametrize("flags", [[], ["--resume"], ["--overwrite"]])
def test_a_directory_of_leftovers_counts_as_empty(tmp_path, capsys, data, flags):
    out = tmp_path / "run"
    leftovers(out)
    code, _, err = run_cli(train_args(data, out, *flags), capsys)
    assert code == 0, err
    assert log_epochs(out) == [1]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_failed_run_in_a_directory_of_leftovers_empties_it(tmp_path, capsys, data):
    out = tmp_path / "run"
    leftovers(out)
    code, _, err = run_cli(train_args(data, out, "--lr", "1e30"), capsys)
    assert_one_line_error(code, err, "training diverged")
    assert out.is_dir() and not list(out.iterdir())


def test_a_start_killed_before_its_config_is_cleared_by_overwrite(tmp_path, capsys, data):
    out = tmp_path / "run"
    assert run_cli(train_args(data, out), capsys)[0] == 0
    for path in out.iterdir():  # as a start killed after its first file leaves it
        if path.name != "dataset.npz":
            path.unlink()
    code, _, err = run_cli(train_args(data, out), capsys)
    assert_one_line_error(code, err, "ended before it wrote its config.json", "--overwrite")
    code, _, err = run_cli(train_args(data, out, "--overwrite"), capsys)
    assert code == 0, err


def test_resume_removes_the_temporary_files_of_killed_writes(tmp_path, capsys, data):
    out = interrupted(tmp_path / "run", data)
    leftovers(out)
    (out / "inputs").mkdir()
    (out / "inputs" / f"{TEMP_PREFIX}0123456789ab.x-1.json").write_text("")
    code, _, err = run_cli(["train", "--out", str(out), "--resume"], capsys)
    assert code == 0, err
    assert log_epochs(out) == [1, 2]
    names = [p.name for p in out.rglob("*")]
    assert not [n for n in names if n.startswith(".")], names


def interrupted(out: Path, data: Path) -> Path:
    """A run of two epochs stopped after the first, as a kill between epochs leaves it."""
    from famerec.config import RunConfig
    from famerec.training import train_run
    from tests.conftest import tiny_overrides

    config = RunConfig().with_overrides(tiny_overrides(data, **{"train.epochs": 2}))
    assert train_run(config, out, progress=False, stop_after=1) is None
    return out


def test_lock_file_is_removed_only_by_its_own_holder(tmp_path):
    lock = DirectoryLock(tmp_path / "a" / "b")
    lock.acquire()
    assert (tmp_path / "a" / "b" / LOCK).read_text() == f"{os.getpid()}\n"
    with pytest.raises(InUseError) as error:
        DirectoryLock(tmp_path / "a" / "b", label="x").acquire()
    assert str(error.value) == "x " + IN_USE.format(os.getpid())
    (tmp_path / "a" / "b" / LOCK).unlink()  # someone removed it: a new one is not ours to delete
    with DirectoryLock(tmp_path / "a" / "b"):
        lock.release()
        assert (tmp_path / "a" / "b" / LOCK).is_file()
    assert not (tmp_path / "a" / "b" / LOCK).exists()


def test_a_second_runner_on_one_spec_is_refused(tmp_path, capsys):
    spec = tiny_spec(tmp_path)
    with DirectoryLock(spec.runs_dir):
        assert main(["experiment", "run", str(spec.path)]) == 2
        err = capsys.readouterr().err
        assert err == f"famerec: error: {relative(spec.runs_dir)} {IN_USE.format(os.getpid())}\n"
        assert main(["experiment", "run", str(spec.path), "--dry-run"]) == 0  # reads only
    assert not (spec.records_dir).exists()


def famerec_process(*args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "famerec", "-q", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epoch(out: Path, first: subprocess.Popen, epoch: int = 1) -> None:
    """Until `first` has logged `epoch` (it is training, and holds the lock)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        log = out / "log.jsonl"
        if log.is_file() and len(log.read_text().splitlines()) >= epoch:
            return
        time.sleep(0.05)
    raise AssertionError(f"the first run did not log epoch {epoch}: {first.communicate()}")


def test_second_real_processes_on_a_training_run_change_nothing(tmp_path, data):
    """Real processes: one trains R; while it trains, `train --out R` plain, with --overwrite
    and with --resume start at once. Each exits 2 with the in-use line; the first ends exactly
    as an undisturbed run: each epoch once, the same metrics."""
    epochs = ["--epochs", "120", "--patience", "120"]  # long enough to start three others
    undisturbed = tmp_path / "alone"
    alone = famerec_process(*train_args(data, undisturbed, *epochs))
    assert alone.wait(timeout=300) == 0, alone.communicate()
    out = tmp_path / "run"
    first = famerec_process(*train_args(data, out, *epochs))
    wait_for_epoch(out, first)
    seconds = [[], ["--overwrite", "--seed", "7"], ["--resume"]]
    intruders = [famerec_process(*train_args(data, out, *epochs, *extra)) for extra in seconds]
    answers = [(p.wait(timeout=120), *p.communicate()) for p in intruders]
    assert first.poll() is None, "the first run ended before the others were refused"
    line = f"famerec: error: {out} " + IN_USE.format(first.pid)
    assert all(code == 2 and err.strip() == line for code, _, err in answers), answers
    assert first.wait(timeout=300) == 0, first.communicate()
    assert log_epochs(out) == list(range(1, 121))
    metrics = json.loads((out / "metrics.json").read_text())
    reference = json.loads((undisturbed / "metrics.json").read_text())
    assert metrics["test"] == reference["test"] and metrics["valid"] == reference["valid"]
    assert metrics["config"]["train"]["seed"] == reference["config"]["train"]["seed"]
