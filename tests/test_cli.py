"""The command line: the train contract and one clear line (exit 2) for every bad input."""

import contextlib
import io
import json
import subprocess
import sys

import pytest

from famerec.cli import main
from tests.conftest import write_sequences

TINY = [
    "--hidden",
    "16",
    "--max-len",
    "10",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--threads",
    "1",
]


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *words):
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("famerec")]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in errors[0], (word, errors[0])


def test_train_prints_the_table_and_writes_metrics(tmp_path, capsys):
    data = write_sequences(tmp_path / "d.txt")
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", "--data", str(data), "--out", str(out), *TINY], capsys)
    assert code == 0
    assert "%|" not in err and "user/s" not in err  # no progress bars: stderr is no terminal
    assert "| valid |" in stdout and "| test  |" in stdout and "NDCG@10" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["model"]["hidden_size"] == 16
    assert metrics["dataset"]["name"] == "d"


def test_data_list_matches_the_source_statistics(capsys):
    code, stdout, _ = run_cli(["data", "list"], capsys)
    assert code == 0
    assert "| beauty | 22,363 | 12,101 | 198,502 |      8.876 |" in stdout
    assert "sports | 35,598 | 18,357 | 296,337" in stdout
    assert "toys   | 19,412 | 11,924 | 167,597" in stdout


def bad_seq(tmp_path, text):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    return ["--data", str(path)]


@pytest.mark.parametrize(
    "make_args, words",
    [
        (lambda p: ["--data", str(p / "missing.txt")], ["missing.txt", "file not found"]),
        (lambda p: bad_seq(p, "1 2 3 4\n2 5 six 7\n"), ["bad.txt:2:", "'six' is not an integer"]),
        (lambda p: bad_seq(p, "1 2 3 4\n\n2 5 6 7\n"), ["bad.txt:2:", "empty line"]),
        (lambda p: bad_seq(p, "1 2 3\n2 5 6\n"), ["no user with at least 3 items"]),
        (
            lambda p: bad_seq(p, "1 2 3 4\n2 5 +4 7\n"),
            ["bad.txt:2:", "'+4' is not a plain integer id (write 4"],
        ),
        (
            lambda p: bad_seq(p, "1 2 3 4\n2 5 \uff14 7\n"),
            ["bad.txt:2:", "'\uff14' is not a plain integer id (write 4"],
        ),
        (lambda p: bad_seq(p, "1 2 3 4\n2 5 1_000 7\n"), ["bad.txt:2:", "'1_000' is not a plain"]),
        (
            lambda p: bad_seq(p, f"1 2 3 4 {10**20}\n"),
            ["bad.txt:1:", f"integer id {10**20} does not fit in 64 bits"],
        ),
        (
            lambda p: bad_seq(p, "1 1 2 3\n2 2 3 4\n3 3 4 5\n"),
            ["dataset 'bad' has no user with more than 3 items", "at least 4"],
        ),
        (
            lambda p: [
                *bad_seq(p, "user,item,timestamp\nu,a,2014-03-05\nu,b,yesterday\nu,c,2014-03-07\n"),
                *["--format", "table", "--kcore", "0"],
            ],
            ["bad.txt:3:", "cannot read timestamp 'yesterday'", "ISO 8601"],
        ),
        (lambda p: ["--dataset", "netflix"], ["unknown dataset 'netflix'", "beauty"]),
        (lambda p: ["--model", "nosuchmodel"], ["unknown --model 'nosuchmodel'", "(available: "]),
        (lambda p: ["--hidden", "30", "--heads", "4"], ["hidden size 30", "4 heads"]),
        (lambda p: ["--epochs", "0"], ["--epochs must be a positive integer"]),
        (lambda p: ["--epochs", "-2"], ["--epochs must be a positive integer"]),
        (lambda p: ["--epochs", "many"], ["--epochs", "invalid int value"]),
        (lambda p: ["--threads", "100000"], ["--threads 100000 is more than the", "cores"]),
        (lambda p: ["--lr", "nan"], ["--lr must be a finite number, got nan"]),
        (lambda p: ["--lr", "inf"], ["--lr must be a finite number, got inf"]),
        (lambda p: ["--weight-decay", "nan"], ["--weight-decay must be a finite number"]),
        (lambda p: ["--dropout", "nan"], ["--dropout must be a finite number"]),
        (lambda p: ["--seed", "1e23"], ["--seed", "invalid int value: '1e23'"]),
        (lambda p: ["--seed", "-1"], ["--seed must be from 0 to 2**63 - 1, got -1"]),
        (lambda p: ["--seed", str(2**63)], ["--seed must be from 0 to 2**63 - 1"]),
        (lambda p: ["--device", "tpu"], ["unknown --device value 'tpu'"]),
        (lambda p: ["--model", "fame", "--hidden", "64", "--heads", "3"], ["--heads in"]),
        (
            lambda p: ["--model", "fame", "--hidden", "64", "--experts", "40"],
            ["--experts from 1 to 32"],
        ),
        (lambda p: ["--pretrain"], ["--pretrain: sasrec has no pretraining stage"]),
        (lambda p: ["--experts", "4"], ["unrecognized arguments: --experts 4"]),
        (
            lambda p: ["--model", "fame", "--hidden", "64", "--init-from", str(p / "nowhere")],
            ["does not exist"],
        ),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, make_args, words):
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", "--out", str(out), *TINY, *make_args(tmp_path)], capsys)
    assert_one_line_error(code, err, *words)
    assert not out.exists(), "a failed run must not leave a run directory"


def table_file(tmp_path, text, name="r.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_table_without_named_columns(tmp_path, capsys):
    path = table_file(tmp_path, "uid,iid,ts\n1,2,3\n")
    code, _, err = run_cli(
        ["train", "--out", str(tmp_path / "run"), "--data", str(path), "--format", "table"],
        capsys,
    )
    assert_one_line_error(code, err, "r.csv", "no column 'user'", "columns are: uid, iid, ts")


def test_table_with_nothing_left_after_kcore(tmp_path, capsys):
    path = table_file(tmp_path, "user,item,timestamp\n1,1,1\n1,2,2\n2,1,3\n2,2,4\n")
    code, _, err = run_cli(
        ["train", "--out", str(tmp_path / "run"), "--data", str(path), "--format", "table"],
        capsys,
    )
    assert_one_line_error(code, err, "nothing left after 5-core")
    assert not (tmp_path / "run").exists()


def test_table_training_end_to_end_with_options(tmp_path, capsys):
    rows = []
    for user in range(30):
        for step in range(6):
            rows.append(f"u{user};i{(user + step) % 12};{1000 + step}")
    path = table_file(tmp_path, "\n".join(rows) + "\n", name="events.txt")
    args = [
        "train",
        "--out",
        str(tmp_path / "run"),
        "--data",
        str(path),
        "--format",
        "table",
        "--sep",
        ";",
        "--no-header",
        "--columns",
        "user,item,timestamp",
        "--kcore",
        "2",
        *TINY,
    ]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["dataset"]["users"] == 30 and metrics["dataset"]["items"] == 12


@pytest.fixture(scope="module")
def own_ids_run(tmp_path_factory):
    """A tiny run on a table whose ids "007" and "7" differ and whose newest rows lack a time."""
    root = tmp_path_factory.mktemp("own_ids")
    rows = ["user,item,timestamp"]
    for user in range(30):
        for step in range(6):
            item = (user + step) % 12
            rows.append(f"u{user},{item:03d},{1000 + step}")  # "007"
            rows.append(f"u{user},{item},{1000 + step}.5")  # "7", half a second later
        rows.append(f"u{user},{item},NaN")  # would be the test item if NaN sorted last
    path = root / "events.csv"
    path.write_text("\n".join(rows) + "\n")
    args = ["train", "--out", str(root / "run"), "--data", str(path), "--format", "table"]
    with contextlib.redirect_stderr(io.StringIO()) as err:
        code = main([*args, "--kcore", "2", *TINY])
    return code, err.getvalue(), root / "run"


def test_table_run_answers_in_the_ids_of_the_data(own_ids_run, capsys):
    from famerec.recommender import load

    code, err, run = own_ids_run
    assert code == 0, err
    assert "famerec: warning: skipped 30 rows without a timestamp (empty, NaN or null)" in err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"]["items"] == 24 and metrics["dataset"]["actions"] == 30 * 12
    history = load(run).user_history("u7")
    assert history[:4] == ["007", "7", "008", "8"]
    assert history[-2:] == ["000", "0"]  # the NaN row is gone, not sorted last
    code, stdout, _ = run_cli(["recommend", "--run", str(run), "--user", "u7", "--json"], capsys)
    assert code == 0
    assert all(isinstance(entry["item"], str) for entry in json.loads(stdout)["items"])


def test_damaged_dataset_file_of_a_run_is_one_clear_line(own_ids_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(own_ids_run[2], copy)
    whole = (copy / "dataset.npz").read_bytes()
    (copy / "dataset.npz").write_bytes(whole[: len(whole) // 2])
    code, _, err = run_cli(["recommend", "--run", str(copy), "--items", "007"], capsys)
    assert_one_line_error(code, err, "dataset.npz: not a usable famerec dataset file")


def test_console_entry_point_exit_code_and_no_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "famerec",
            "train",
            "--out",
            str(tmp_path / "r"),
            "--data",
            str(tmp_path / "nope.txt"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("famerec: error:")


def test_recommend_command_table_and_json(trained_runs, capsys):
    run = str(trained_runs["fame"])
    code, stdout, err = run_cli(
        ["recommend", "--run", run, "--items", "i1 i2 zzz", "-k", "3"], capsys
    )
    assert code == 0
    assert stdout.splitlines()[0].startswith("| rank | item")
    assert len(stdout.strip().splitlines()) == 2 + 3
    assert "skipped 1 unknown item ids: zzz" in err
    code, stdout, _ = run_cli(
        ["recommend", "--run", run, "--user", "u5", "-k", "4", "--json"], capsys
    )
    payload = json.loads(stdout)
    assert code == 0 and len(payload["items"]) == 4


def test_recommend_command_errors(trained_runs, tmp_path, capsys):
    run = str(trained_runs["fame"])
    code, _, err = run_cli(["recommend", "--run", run, "--items", "zzz"], capsys)
    assert_one_line_error(code, err, "no item the model knows")
    code, _, err = run_cli(["recommend", "--run", run, "--user", "nobody"], capsys)
    assert_one_line_error(code, err, "unknown user 'nobody'")
    code, _, err = run_cli(["recommend", "--run", str(tmp_path), "--items", "i1"], capsys)
    assert_one_line_error(code, err, "not a finished famerec run")


@pytest.mark.parametrize("command", ["recommend", "explain"])
@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cpu:0"])
def test_query_commands_name_a_bad_device_in_one_line(tmp_path, capsys, command, device):
    args = [command, "--run", str(tmp_path), "--user", "1", "--device", device]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, f"unknown device '{device}'", "cpu, cuda")


def test_explain_user(trained_runs, capsys):
    from famerec.recommender import load

    run = trained_runs["fame"]
    history = load(run).user_history("u7")
    code, stdout, _ = run_cli(["explain", "--run", str(run), "--user", "u7", "-k", "5"], capsys)
    assert code == 0
    assert f"held-out test item: {history[-1]}" in stdout
    assert " ".join(history[:-1]) in stdout
    assert "head 1 (gate" in stdout and "head 2 (gate" in stdout and "integrated" in stdout
    code, stdout, _ = run_cli(
        ["explain", "--run", str(run), "--user", "u7", "-k", "30", "--json"], capsys
    )
    payload = json.loads(stdout)
    assert payload["test_item"] == history[-1] and payload["history"] == history[:-1]
    assert len(payload["heads"]) == 2
    # with k as large as the catalogue, the held-out item appears and is marked in the table
    code, stdout, _ = run_cli(["explain", "--run", str(run), "--user", "u7", "-k", "30"], capsys)
    assert f"| {history[-1]} *" in stdout or f" {history[-1]} * " in stdout


def test_explain_facets_needs_attributes_for_user_data(trained_runs, tmp_path, capsys):
    run = str(trained_runs["fame"])
    code, _, err = run_cli(["explain", "--run", run, "--facets"], capsys)
    assert_one_line_error(code, err, "--attributes")
    code, _, err = run_cli(["explain", "--run", run, "--facets", "--keep-seen"], capsys)
    assert_one_line_error(code, err, "--keep-seen applies to --user")
    attributes = tmp_path / "attributes.json"
    attributes.write_text(json.dumps({f"i{n}": [n % 3, 10 + n % 2] for n in range(1, 31)}))
    code, stdout, err = run_cli(
        ["explain", "--run", run, "--facets", "--attributes", str(attributes), "-k", "5"], capsys
    )
    assert code == 0, err
    for name in ("head 1", "head 2", "integrated", "sasrec", "random"):
        assert f"| {name}" in stdout
    assert "mean Jaccard overlap between heads' lists" in stdout


def test_output_cut_short_by_a_closed_pipe_is_not_a_traceback():
    # stdout is a pipe whose reader is gone (as after `| head`): the first write fails
    script = (
        "import os, sys; r, w = os.pipe(); os.close(r); os.dup2(w, 1); "
        "from famerec.cli import main; raise SystemExit(main(['data', 'list']))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_a_pretrain_run_paused_in_its_sasrec_stage_resumes_only_with_its_flags(tmp_path, capsys):
    """Its own config.json comes after the SASRec stage, so a bare --resume has nothing to
    read: it stops (exit 2) instead of training a default model beside the stage."""
    from famerec.runconfig import pretrain_config, resolve_config
    from famerec.training import train_run

    data = write_sequences(tmp_path / "d.txt")
    out = tmp_path / "fame"
    flags = [
        "--data",
        str(data),
        "--model",
        "fame",
        "--pretrain",
        *TINY,
        "--hidden",
        "64",
        "--epochs",
        "2",
    ]
    config = resolve_config(
        out,
        {
            "data.path": str(data),
            "model.name": "fame",
            "model.hidden_size": 64,
            "model.max_len": 10,
            "train.epochs": 2,
            "train.batch_size": 32,
            "train.threads": 1,
            "train.pretrain": True,
        },
    )
    assert (
        train_run(pretrain_config(config), out / "pretrain", progress=False, stop_after=1) is None
    )

    # (--epochs 1 --stop-after-epoch 1: were it not refused, the default run would be short)
    bare = ["train", "--out", str(out), "--resume", "--epochs", "1", "--stop-after-epoch", "1"]
    code, _, err = run_cli(bare, capsys)
    assert_one_line_error(code, err, "paused in its SASRec stage", "--pretrain included")
    assert sorted(p.name for p in out.iterdir()) == ["pretrain"]  # nothing written beside it

    code, _, err = run_cli(["train", *flags, "--out", str(out), "--resume"], capsys)
    assert code == 0, err
    log = (out / "pretrain" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]  # resumed, not restarted
    assert (out / "metrics.json").is_file()
