"""The command line: the train contract and one clear line (exit 2) for every bad input."""

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
    code, stdout, _ = run_cli(["train", "--data", str(data), "--out", str(out), *TINY], capsys)
    assert code == 0
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
        (lambda p: ["--dataset", "netflix"], ["unknown dataset 'netflix'", "beauty"]),
        (lambda p: ["--model", "nosuchmodel"], ["unknown --model 'nosuchmodel'", "sasrec"]),
        (lambda p: ["--hidden", "30", "--heads", "4"], ["hidden size 30", "4 heads"]),
        (lambda p: ["--epochs", "0"], ["--epochs must be a positive integer"]),
        (lambda p: ["--epochs", "-2"], ["--epochs must be a positive integer"]),
        (lambda p: ["--epochs", "many"], ["--epochs", "invalid int value"]),
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
    attributes = tmp_path / "attributes.json"
    attributes.write_text(json.dumps({f"i{n}": [n % 3, 10 + n % 2] for n in range(1, 31)}))
    code, stdout, err = run_cli(
        ["explain", "--run", run, "--facets", "--attributes", str(attributes), "-k", "5"], capsys
    )
    assert code == 0, err
    for name in ("head 1", "head 2", "integrated", "sasrec", "random"):
        assert f"| {name}" in stdout
    assert "mean Jaccard overlap between heads' lists" in stdout
