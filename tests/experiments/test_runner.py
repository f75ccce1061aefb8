"""The runner end to end: real `famerec train` subprocesses on a tiny dataset."""

import io
import json
import shutil
import subprocess

import pytest

from famerec.cli import main
from famerec.experiments import Plan, Store
from famerec.experiments.records import commit
from famerec.experiments.runner import Runner
from famerec.runconfig import pretrain_config
from famerec.training import resolve_config, train_run
from tests.conftest import write_sequences
from tests.experiments.helpers import TINY_BASE, write_spec

DROPOUT = '[models.sasrec]\n[[models.sasrec.stages]]\nname = "dropout"\n'
DROPOUT += "grid.model.dropout = [0.1, 0.2]\n"
# a SASRec search, then FAME started from the selected SASRec
SASREC_THEN_FAME = (
    '[models.sasrec]\n[[models.sasrec.stages]]\nname = "size"\n'
    "grid.model.hidden_size = [64]\n"
    '[models.fame]\nmodel.name = "fame"\nmodel.hidden_size = 64\n'
    'train.init_from = { selected = "sasrec" }\n'
    '[[models.fame.stages]]\nname = "heads"\ngrid.model.num_heads = [2]\n'
)


def tiny_spec(tmp_path, body: str = DROPOUT, broken: bool = True):
    """A spec of `body` on a tiny dataset "ok" (and "broken", whose data file is missing)."""
    data = write_sequences(tmp_path / "seqs.txt", num_users=40, num_items=20)
    header = f"""
name = "tiny"
[selection]
seeds = [1]
{TINY_BASE}[datasets.ok]
data.path = "{data}"
"""
    if broken:
        header += f'[datasets.broken]\ndata.path = "{tmp_path / "missing.txt"}"\n'
    return write_spec(tmp_path, body, header=header)


def time_epochs(record, seconds: float) -> None:
    """Make every epoch in a recorded run's log.jsonl take `seconds` (training, no validation)."""
    log = record / "log.jsonl"
    epochs = [json.loads(line) for line in log.read_text().splitlines()]
    for epoch in epochs:
        epoch["train_seconds"], epoch["eval_seconds"] = seconds, 0.0
    log.write_text("".join(json.dumps(e) + "\n" for e in epochs))


def test_runs_records_resumes_and_reports_failures(tmp_path, capsys):
    spec = tiny_spec(tmp_path)
    spec_file = str(spec.path)
    first, second = Plan(spec, Store(spec.records_dir)).entries["ok", "sasrec"].trials
    # an interrupted run: one of its two epochs done
    out = spec.runs_dir / first.id
    config = resolve_config(out, first.settings)  # as `famerec train` resolves it
    assert train_run(config, out, progress=False, stop_after=1) is None

    assert main(["experiment", "run", spec_file, "--dry-run"]) == 0
    dry = capsys.readouterr().err
    assert "grid: 4 runs; 0 done, 4 ready, 0 waiting" in dry
    lines = dry.splitlines()
    commands = {run: lines[lines.index(f"ready    {run.id}") + 1] for run in (first, second)}
    assert commands[first].endswith(" --resume")  # the interrupted run continues
    assert "--resume" not in commands[second] and "--threads" in commands[second]
    assert not (spec.records_dir).exists()

    # the broken dataset's runs fail; two at a time, each run counted once in the progress
    assert main(["experiment", "run", spec_file, "--jobs", "2"]) == 1
    err = capsys.readouterr().err
    progress = [line.split()[0] for line in err.splitlines() if " elapsed " in line]
    assert progress == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"], err
    assert "FAILED broken/sasrec/dropout=0.1,seed=1" in err and "file not found" in err
    logs = sorted(p.name for p in (spec.runs_dir / "broken/sasrec").glob("*.log"))
    assert logs == ["dropout=0.1,seed=1.log", "dropout=0.2,seed=1.log"]
    assert "2 runs finished" in err and "2 failed" in err, err
    for run in (first, second):
        record = spec.records_dir / run.id
        files = sorted(p.name for p in record.iterdir())
        assert files == ["config.json", "log.jsonl", "metrics.json", "ranks.npz", "record.json"]
        info = json.loads((record / "record.json").read_text())
        assert info["id"] == run.id and info["stage"] == "dropout" and info["seed"] == 1
        assert info["device"] == "cpu" and info["precision"] == "fp32"
        assert info["wall_seconds"] > 0 and info["machine"]["cores"] >= 1
        assert {"torch", "commit", "command", "threads", "jobs"} <= set(info)
        assert "--threads" in info["command"] and "--quiet" not in info["command"]
    resumed = json.loads((spec.records_dir / first.id / "record.json").read_text())
    assert resumed["resumed"]  # its wall time counts both sittings, the runner saw the second
    metrics = json.loads((spec.records_dir / first.id / "metrics.json").read_text())
    assert resumed["wall_seconds"] == metrics["wall_seconds"] > 0 and resumed["sitting_seconds"]
    log = (spec.records_dir / first.id / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]

    # finished runs are skipped; --only leaves the failing ones out
    assert main(["experiment", "run", spec_file, "--only", "ok/*"]) == 0
    err = capsys.readouterr().err
    assert "0 runs finished" in err and "start" not in err
    # several patterns: a run is wanted if it matches any; the dry plan shows only those
    assert (
        main(["experiment", "run", spec_file, "--dry-run", "--only", "nomatch/*", "--only", "ok/*"])
        == 0
    )
    assert "done     ok/sasrec" in capsys.readouterr().err
    assert main(["experiment", "status", spec_file]) == 0
    out = capsys.readouterr().out
    assert (
        "| ok      | sasrec | dropout |  2/2 |" in out
        and "| broken  | sasrec | dropout |  0/2 |" in out
    )


def test_bad_runner_input_is_one_line(tmp_path, capsys):
    assert main(["experiment", "run", str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.toml not found" in err
    spec = tiny_spec(tmp_path)
    assert main(["experiment", "run", str(spec.path), "--jobs", "0"]) == 2
    assert "--jobs must be 1 or more" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_commit_is_dirty_for_code_changes_not_for_records(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "records").mkdir()
    (tmp_path / "records/a.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    (tmp_path / "records/a.json").unlink()  # the runner rewrites records: still clean
    assert commit(tmp_path, (tmp_path / "records",)) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert commit(tmp_path, (tmp_path / "records",)) == head + "-dirty"
    assert commit(tmp_path / "records") == head + "-dirty"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_record_names_the_commit_its_sitting_started_from(tmp_path):
    """A checkout that moves on while a run trains does not relabel the code the run ran."""
    from famerec.experiments.runner import Runner

    def git(*args):
        command = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
        return subprocess.run([*command, *args], check=True, capture_output=True, text=True)

    spec = tiny_spec(tmp_path)
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    started = git("rev-parse", "--short", "HEAD").stdout.strip()
    run = Plan(spec, Store(spec.records_dir)).entries["ok", "sasrec"].trials[0]
    runner = Runner(spec)
    job = runner.start(run)
    (tmp_path / "code.py").write_text("x = 2\n")
    git("commit", "-qam", "second")
    assert job.process.wait(timeout=300) == 0
    assert runner.finish(job, {}) == 1
    info = json.loads((spec.records_dir / run.id / "record.json").read_text())
    assert info["commit"] == started != git("rev-parse", "--short", "HEAD").stdout.strip()


def test_sigterm_stops_the_runner_cleanly_even_with_sigint_ignored(tmp_path):
    """Scripts start background jobs with SIGINT ignored, and sessions end with SIGTERM: both
    must stop the runner the way Ctrl-C does (jobs ended, 'interrupted', exit 130)."""
    import signal
    import sys

    spec = tiny_spec(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "famerec", "experiment", "run", str(spec.path)],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    for line in process.stderr:
        if line.startswith("start "):
            break
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 130
    assert "interrupted: run the same command again to resume" in rest


def test_time_limit_pauses_runs_between_epochs_and_the_next_sitting_resumes(tmp_path, capsys):
    """A run whose next epoch would end past --time-limit pauses (not a failure), the others
    go on while there is time, and the same command without the limit finishes the grid."""
    spec = tiny_spec(tmp_path)
    spec_file = str(spec.path)
    first, second = Plan(spec, Store(spec.records_dir)).entries["ok", "sasrec"].trials
    out = spec.runs_dir / first.id
    assert train_run(resolve_config(out, first.settings), out, progress=False, stop_after=1) is None
    log = out / "log.jsonl"
    record = json.loads(log.read_text())
    record["train_seconds"] = 1e6  # its next epoch cannot fit in an hour
    log.write_text(json.dumps(record) + "\n")

    assert main(["experiment", "run", spec_file, "--only", "ok/*", "--time-limit", "1h"]) == 75
    err = capsys.readouterr().err
    assert f"paused {first.id} at --time-limit after epoch 1" in err
    assert f"done  {second.id}" in err and "FAILED" not in err
    assert "1 run(s) paused at --time-limit: run the same command again to resume" in err
    progress = [line.split()[0] for line in err.splitlines() if " elapsed " in line]
    assert progress == ["[1/2]", "[2/2]"] and "about 0s left" not in err, err
    assert "--time-limit 3" in (spec.runs_dir / f"{first.id}.log").read_text()  # what was left
    assert not (spec.records_dir / first.id).exists()
    info = json.loads((spec.records_dir / second.id / "record.json").read_text())
    assert "--time-limit" not in info["command"]  # a sitting's limit is not the run's

    assert main(["experiment", "run", spec_file, "--only", "ok/*"]) == 0
    assert f"done  {first.id}" in capsys.readouterr().err
    log = (spec.records_dir / first.id / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]


def test_a_run_whose_first_epoch_would_overrun_the_time_limit_is_not_started(tmp_path, capsys):
    """A fresh run has no epoch of its own to time: the runner goes by the recorded epochs of
    its model on its dataset and leaves it for the next sitting when one would not fit."""
    spec = tiny_spec(tmp_path, broken=False)
    spec_file = str(spec.path)
    first, second = Plan(spec, Store(spec.records_dir)).entries["ok", "sasrec"].trials
    assert main(["experiment", "run", spec_file, "--only", first.id]) == 0
    time_epochs(spec.records_dir / first.id, 7200.0)  # two hours an epoch
    capsys.readouterr()

    assert main(["experiment", "run", spec_file, "--time-limit", "1h"]) == 75
    err = capsys.readouterr().err
    assert f"left  {second.id}: an epoch takes about 2h" in err, err
    assert f"start {second.id}" not in err and not (spec.runs_dir / second.id).exists()
    assert "1 run(s) not started: an epoch would have ended past --time-limit" in err
    # an epoch and a few seconds to spare are not enough: loading data and model takes time
    assert main(["experiment", "run", spec_file, "--time-limit", "7210"]) == 75
    assert f"left  {second.id}" in capsys.readouterr().err

    # epochs timed on a GPU say nothing of this CPU sitting: with no other guide, it starts
    record = spec.records_dir / first.id / "record.json"
    info = json.loads(record.read_text())
    info["machine"]["gpu"] = "a GPU"
    record.write_text(json.dumps(info))
    assert main(["experiment", "run", spec_file, "--time-limit", "1h"]) == 0
    assert f"done  {second.id}" in capsys.readouterr().err


def test_records_from_this_machine_time_a_first_epoch_before_another_cpus(
    tmp_path, capsys, monkeypatch
):
    """Two CPUs of one name may differ 2-3x in speed: the entry's run recorded on this machine
    (1 s an epoch) times a fresh run, not the mean with a run of another CPU family (two
    hours an epoch), so it starts; with only the other CPU's records to go by, it waits."""
    monkeypatch.setattr("famerec.runs.machine.cpu_id", lambda *_: "family 7, model 7")
    spec = tiny_spec(tmp_path, DROPOUT.replace("[0.1, 0.2]", "[0.1, 0.2, 0.3]"), broken=False)
    spec_file = str(spec.path)
    here, there, fresh = Plan(spec, Store(spec.records_dir)).entries["ok", "sasrec"].trials
    assert main(["experiment", "run", spec_file, "--only", here.id, "--only", there.id]) == 0
    time_epochs(spec.records_dir / here.id, 1.0)
    time_epochs(spec.records_dir / there.id, 7200.0)

    def recorded_on(run_id: str, cpu: str) -> None:
        record = spec.records_dir / run_id / "record.json"
        info = json.loads(record.read_text())
        info["machine"]["cpu_id"] = cpu
        record.write_text(json.dumps(info))

    recorded_on(here.id, "family 0, model 0")
    recorded_on(there.id, "family 0, model 0")
    capsys.readouterr()
    assert main(["experiment", "run", spec_file, "--time-limit", "1h"]) == 75
    assert f"left  {fresh.id}: an epoch takes about 1h" in capsys.readouterr().err

    recorded_on(here.id, "family 7, model 7")
    assert main(["experiment", "run", spec_file, "--time-limit", "1h"]) == 0
    err = capsys.readouterr().err
    assert f"done  {fresh.id}" in err and "left  " not in err, err


def test_a_run_recorded_in_a_sitting_times_the_runs_after_it(tmp_path):
    """A run looked up before it had a record (it had not finished) is read again once it
    has one: its epochs time the seeds of its setting that start later in the sitting."""
    spec = tiny_spec(tmp_path, broken=False)
    low, _ = Plan(spec, Store(spec.records_dir)).entries["ok", "sasrec"].trials
    runner = Runner(spec, stream=io.StringIO())
    assert runner.recorded_epochs(low.id) == (False, [])
    assert main(["experiment", "run", str(spec.path), "--only", low.id]) == 0
    _, log = runner.recorded_epochs(low.id)
    assert [e["epoch"] for e in log] == list(range(1, len(log) + 1)) and log


@pytest.mark.parametrize(
    ("device", "cuda", "gpu"),
    [(None, True, True), ("auto", True, True), ("cpu", True, False), (None, False, False)],
)
def test_a_sitting_left_to_choose_its_device_on_a_gpu_machine_is_a_gpu_sitting(
    tmp_path, monkeypatch, device, cuda, gpu
):
    """Without --device (or with auto) the runs train on the GPU where there is one, so the
    sitting goes by GPU records for its time estimates there, not by CPU ones."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: cuda)
    monkeypatch.setattr("famerec.runs.machine.gpu_name", lambda: "a GPU")
    spec = tiny_spec(tmp_path, broken=False)
    runner = Runner(spec, device=device, stream=io.StringIO())
    assert ("gpu" in runner.this_machine) == gpu


def test_records_at_the_sittings_threads_time_a_first_epoch_before_other_threads(tmp_path, capsys):
    """A run recorded with this sitting's threads (1 s an epoch) times a fresh run, not the
    mean with a run recorded with other threads (two hours an epoch), so it starts."""
    spec = tiny_spec(tmp_path, DROPOUT.replace("[0.1, 0.2]", "[0.1, 0.2, 0.3]"), broken=False)
    spec_file = str(spec.path)
    same, other, fresh = Plan(spec, Store(spec.records_dir)).entries["ok", "sasrec"].trials
    assert main(["experiment", "run", spec_file, "--only", same.id, "--only", other.id]) == 0
    for run, seconds, threads in ((same, 1.0, Runner(spec).threads), (other, 7200.0, 99)):
        folder = spec.records_dir / run.id
        time_epochs(folder, seconds)
        info = json.loads((folder / "record.json").read_text())
        info["threads"] = threads
        (folder / "record.json").write_text(json.dumps(info))
    capsys.readouterr()
    assert main(["experiment", "run", spec_file, "--time-limit", "1h"]) == 0
    err = capsys.readouterr().err
    assert f"done  {fresh.id}" in err and "left  " not in err, err


def test_a_seed_goes_by_its_settings_other_seeds_before_its_entrys_other_runs(tmp_path, capsys):
    """The selected setting's second seed is timed by the first (1 s an epoch here), not by
    every run of its entry (the other trial: two hours an epoch), so it starts."""
    data = write_sequences(tmp_path / "seqs.txt", num_users=40, num_items=20)
    header = f'name = "tiny"\n[selection]\nseeds = [1, 2]\n{TINY_BASE}'
    header += f'[datasets.ok]\ndata.path = "{data}"\n'
    spec = write_spec(tmp_path, DROPOUT, header=header)
    spec_file = str(spec.path)
    low, high = Plan(spec, Store(spec.records_dir)).entries["ok", "sasrec"].trials
    assert main(["experiment", "run", spec_file, "--only", low.id, "--only", high.id]) == 0

    def rewrite(run_id: str, seconds: float, score: float) -> None:
        folder = spec.records_dir / run_id
        time_epochs(folder, seconds)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["valid"]["NDCG@10"] = score  # decides the selection
        (folder / "metrics.json").write_text(json.dumps(metrics))

    rewrite(low.id, 1.0, 0.9)  # selected
    rewrite(high.id, 7200.0, 0.1)
    capsys.readouterr()
    assert main(["experiment", "run", spec_file, "--time-limit", "1h"]) == 0
    err = capsys.readouterr().err
    assert "done  ok/sasrec/dropout=0.1,seed=2" in err and "left  " not in err, err


def test_a_start_to_retrain_goes_by_its_records_epochs_under_a_time_limit(tmp_path, capsys):
    body = SASREC_THEN_FAME
    spec = tiny_spec(tmp_path, body, broken=False)
    spec_file = str(spec.path)
    assert main(["experiment", "run", spec_file, "--only", "ok/sasrec/*"]) == 0
    (sasrec,) = Plan(spec, Store(spec.records_dir)).entries["ok", "sasrec"].trials
    time_epochs(spec.records_dir / sasrec.id, 7200.0)
    shutil.rmtree(spec.runs_dir)  # the run directories stayed on another machine
    capsys.readouterr()

    assert main(["experiment", "run", spec_file, "--time-limit", "1h"]) == 75
    err = capsys.readouterr().err
    assert f"left  {sasrec.id}: an epoch takes about 2h" in err, err
    assert "(a sitting needs at least 2h" in err, err  # longer than the whole --time-limit
    assert "start ok/" not in err


def test_a_start_known_only_by_its_record_is_retrained_and_its_record_kept(tmp_path, capsys):
    body = SASREC_THEN_FAME
    spec = tiny_spec(tmp_path, body, broken=False)
    spec_file = str(spec.path)
    assert main(["experiment", "run", spec_file, "--only", "ok/sasrec/*"]) == 0
    (sasrec,) = Plan(spec, Store(spec.records_dir)).entries["ok", "sasrec"].trials
    record = spec.records_dir / sasrec.id
    before = {p.name: p.read_bytes() for p in record.iterdir()}
    shutil.rmtree(spec.runs_dir)  # the run directories stayed on another machine
    capsys.readouterr()

    assert main(["experiment", "run", spec_file, "--dry-run"]) == 0
    dry = capsys.readouterr().err
    assert f"restore  {sasrec.id} (only its record is here)" in dry
    assert "needs the run directory" in dry
    assert main(["experiment", "status", spec_file]) == 0
    assert "retrains it first" in capsys.readouterr().out

    assert main(["experiment", "run", spec_file]) == 0
    err = capsys.readouterr().err
    assert f"restored {sasrec.id}: valid NDCG@10" in err and "done  ok/fame/" in err, err
    assert (spec.runs_dir / sasrec.id / "model.safetensors").is_file()
    after = {p.name: p.read_bytes() for p in record.iterdir() if p.name != "restored.json"}
    assert after == before  # selection read the record: it stays the original run's
    restored = json.loads((record / "restored.json").read_text())
    assert restored["id"] == sasrec.id and restored["valid"]["NDCG@10"] >= 0
    assert "--hidden 64" in restored["command"] and restored["machine"]["cores"] >= 1
    (fame,) = Plan(spec, Store(spec.records_dir)).entries["ok", "fame"].trials
    config = json.loads((spec.records_dir / fame.id / "config.json").read_text())
    assert config["train"]["init_from"].endswith(sasrec.id)
    # nothing is retrained twice
    assert main(["experiment", "run", spec_file]) == 0
    assert "start ok/" not in capsys.readouterr().err
    # the report says which starts were retrained, with both runs' figures
    assert main(["experiment", "report", spec_file]) == 0
    report = (tmp_path / "results" / "tiny.md").read_text()
    assert "### Retrained starts" in report
    section = report.split("### Retrained starts", 1)[1].splitlines()
    row = next(line for line in section if line.startswith("| sasrec "))
    recorded = json.loads((record / "metrics.json").read_text())["valid"]["NDCG@10"]
    assert f"{recorded:.4f}" in row and f"{restored['valid']['NDCG@10']:.4f}" in row


def test_runs_start_in_the_order_of_the_only_patterns(tmp_path, capsys):
    spec = tiny_spec(tmp_path, broken=False)
    data = write_sequences(tmp_path / "seqs2.txt", num_users=40, num_items=20)
    spec.path.write_text(
        spec.path.read_text().replace(
            "[datasets.ok]", f'[datasets.ok2]\ndata.path = "{data}"\n[datasets.ok]', 1
        )
    )
    args = ["experiment", "run", str(spec.path), "--jobs", "1"]
    assert main([*args, "--only", "ok/*dropout=0.2*", "--only", "ok2/*", "--only", "ok/*"]) == 0
    started = [
        line.split()[1]
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("start ")
    ]
    assert started == [
        "ok/sasrec/dropout=0.2,seed=1",
        "ok2/sasrec/dropout=0.1,seed=1",
        "ok2/sasrec/dropout=0.2,seed=1",
        "ok/sasrec/dropout=0.1,seed=1",
    ]


def test_a_control_whose_start_is_known_only_by_its_record_waits_for_its_retraining(
    tmp_path, capsys
):
    # the control reads its start from FAME's recorded init_from, a path on whichever machine
    # trained FAME: the runner must see that it names a run of the spec and retrain it first
    body = SASREC_THEN_FAME + (
        '[models.continued]\ncontrol = true\nmodel.name = "sasrec"\n'
        'model.hidden_size = { selected = "fame", get = "model.hidden_size" }\n'
        'train.init_from = { selected = "fame", get = "train.init_from" }\n'
    )
    spec = tiny_spec(tmp_path, body, broken=False)
    spec_file = str(spec.path)
    assert (
        main(["experiment", "run", spec_file, "--only", "ok/sasrec/*", "--only", "ok/fame/*"]) == 0
    )
    (sasrec,) = Plan(spec, Store(spec.records_dir)).entries["ok", "sasrec"].trials
    shutil.rmtree(spec.runs_dir)  # the run directories stayed on another machine
    capsys.readouterr()

    assert main(["experiment", "run", spec_file, "--dry-run"]) == 0
    dry = capsys.readouterr().err
    assert f"restore  {sasrec.id} (only its record is here)" in dry
    assert f"waiting  ok/continued/seed=1: needs the run directory of {sasrec.id}" in dry, dry

    # --only names the control alone: the start it waits for is retrained with it
    assert main(["experiment", "run", spec_file, "--dry-run", "--only", "ok/continued/*"]) == 0
    assert f"restore  {sasrec.id}" in capsys.readouterr().err
    assert main(["experiment", "run", spec_file, "--only", "ok/continued/*"]) == 0
    err = capsys.readouterr().err
    assert "FAILED" not in err and f"restored {sasrec.id}" in err and "done  ok/continued/" in err
    config = json.loads((spec.records_dir / "ok/continued/seed=1/config.json").read_text())
    assert config["train"]["init_from"].endswith(sasrec.id)


def test_a_pretrain_run_paused_in_its_first_stage_resumes(tmp_path, capsys):
    """A `--pretrain` run that paused while training its SASRec stage has no config.json of its
    own yet, only its stage's: the next sitting resumes it (it is not a new run)."""
    body = (
        '[models.fame]\nmodel.name = "fame"\nmodel.hidden_size = 64\ntrain.pretrain = true\n'
        '[[models.fame.stages]]\nname = "heads"\ngrid.model.num_heads = [2]\n'
    )
    spec = tiny_spec(tmp_path, body, broken=False)
    spec_file = str(spec.path)
    (run,) = Plan(spec, Store(spec.records_dir)).entries["ok", "fame"].trials
    out = spec.runs_dir / run.id
    stage = pretrain_config(resolve_config(out, run.settings))
    assert train_run(stage, out / "pretrain", progress=False, stop_after=1) is None
    assert not (out / "config.json").exists()

    assert main(["experiment", "run", spec_file, "--dry-run"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[lines.index(f"ready    {run.id}") + 1].endswith(" --resume")
    assert main(["experiment", "run", spec_file]) == 0
    assert f"start {run.id} (resuming)" in capsys.readouterr().err
    stage_log = (out / "pretrain" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in stage_log] == [1, 2]  # continued, not redone
    assert (spec.records_dir / run.id / "metrics.json").is_file()
