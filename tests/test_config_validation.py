"""A run directory's files, edited by hand or crafted, are checked before anything is built from
them: a bad config.json, weights that do not fit it, a checkpoint.pt that is no famerec
checkpoint, a data file that is not the run's. Each ends `recommend`, `serve`, `famerec.load`
and `train --resume` with one line (exit 2, FamerecError) that names the file and the setting,
and writes nothing."""

import io
import json
import os
import pickle
import re
import shutil
import zipfile

import pytest
import torch

import famerec
import famerec.runs.load
import famerec.training.pipeline
from famerec.cli import main
from famerec.config import RunConfig
from famerec.errors import ConfigError, FamerecError
from famerec.training import train_run
from tests.conftest import write_sequences
from tests.test_cli import TINY, assert_one_line_error, run_cli
from tests.test_cli_runs import interrupted_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished run (trained by the CLI) and an interrupted one (a checkpoint, no metrics)."""
    root = tmp_path_factory.mktemp("validation")
    data = write_sequences(root / "d.txt")
    finished = root / "finished"
    assert main(["-q", "train", "--data", str(data), "--out", str(finished), *TINY]) == 0
    return {"finished": finished, "interrupted": interrupted_run(root, data)}


@pytest.fixture
def finished(runs, tmp_path):
    return shutil.copytree(runs["finished"], tmp_path / "finished")


@pytest.fixture
def interrupted(runs, tmp_path):
    return shutil.copytree(runs["interrupted"], tmp_path / "interrupted")


def snapshot(folder):
    """Every file under `folder` with its bytes: what a failed command must leave as it was."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def edit_config(run, edit):
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))


def setting(section, key, value):
    return lambda config: config[section].__setitem__(key, value)


def deep_max_len(run):
    text = (run / "config.json").read_text()
    deep = "[" * 100_000 + "]" * 100_000
    text, found = re.subn(r'"max_len": \d+', f'"max_len": {deep}', text)
    assert found == 1
    (run / "config.json").write_text(text)


def deep_everything(run):
    (run / "config.json").write_text("[" * 100_000 + "]" * 100_000)


def edited(edit):
    return lambda run: edit_config(run, edit)


# (case id, edit of the run, words of the one line besides the config file's path)
BAD_CONFIGS = [
    (
        "hidden-size-a-string",
        edited(setting("model", "hidden_size", "64")),
        ["model.hidden_size must be an integer", "got the string '64'"],
    ),
    (
        "hidden-size-a-fraction",
        edited(setting("model", "hidden_size", 64.5)),
        ["model.hidden_size must be an integer", "got 64.5"],
    ),
    (
        "model-section-a-list",
        edited(lambda config: config.__setitem__("model", [1, 2])),
        ["config section 'model' must be an object of settings, got a list"],
    ),
    ("deep-nesting", deep_max_len, ["model.max_len is nested too deeply for a config"]),
    ("deep-nesting-at-the-top", deep_everything, ["nested too deeply for a config"]),
    (
        "hidden-size-1e12",
        edited(setting("model", "hidden_size", 10**12)),
        ["model.hidden_size must be from 1 to 16384", "got 1000000000000"],
    ),
    (
        "max-len-1e15",
        edited(setting("model", "max_len", 10**15)),
        ["model.max_len must be from 1 to 16384", "got 1000000000000000"],
    ),
    (
        "lr-a-word",
        edited(setting("train", "lr", "fast")),
        ["train.lr must be a number", "got the string 'fast'"],
    ),
    (
        "num-heads-a-bool",
        edited(setting("model", "num_heads", True)),
        ["model.num_heads must be an integer", "got true"],
    ),
    (
        "num-heads-over-hidden-size",
        edited(setting("model", "num_heads", 32)),
        ["model.num_heads must be from 1 to 16", "got 32"],
    ),
    (
        "seed-beyond-64-bits",
        edited(setting("train", "seed", 2**70)),
        ["train.seed must fit in 64 bits"],
    ),
    (
        "dropout-null",
        edited(setting("model", "dropout", None)),
        ["model.dropout must be a number, got null"],
    ),
    (
        "negative-dropout",
        edited(setting("model", "dropout", -0.5)),
        ["model.dropout must be in [0, 1)", "got -0.5"],
    ),
    (
        "unknown-setting",
        edited(setting("model", "hidden", 64)),
        ["unknown model options in config: ['hidden']"],
    ),
    (
        "unknown-model",
        edited(setting("model", "name", "nope")),
        ["unknown model.name 'nope'"],
    ),
    (
        "settings-a-list",
        lambda run: (run / "config.json").write_text("[1, 2]"),
        ["a config is an object of sections, got a list"],
    ),
    ("not-json", lambda run: (run / "config.json").write_text("{"), ["cannot read config"]),
]


def assert_names(err_or_message, run, words):
    for word in [str(run / "config.json"), *words]:
        assert word in err_or_message, (word, err_or_message)


@pytest.mark.parametrize(
    "edit, words", [case[1:] for case in BAD_CONFIGS], ids=[case[0] for case in BAD_CONFIGS]
)
def test_a_bad_config_json_is_one_line_that_names_the_file_and_the_key(
    finished, interrupted, capsys, edit, words
):
    edit(finished)
    before = snapshot(finished)
    for command in (["recommend", "--user", "1"], ["serve", "--port", "0"]):
        code, _, err = run_cli([command[0], "--run", str(finished), *command[1:]], capsys)
        assert_one_line_error(code, err, *words)
        assert_names(err, finished, words)
    with pytest.raises(FamerecError) as raised:
        famerec.load(finished)
    assert isinstance(raised.value, ConfigError)
    assert len(str(raised.value).splitlines()) == 1
    assert_names(str(raised.value), finished, words)
    assert snapshot(finished) == before

    edit(interrupted)
    before = snapshot(interrupted)
    code, _, err = run_cli(["train", "--resume", "--out", str(interrupted)], capsys)
    assert_one_line_error(code, err, *words)
    assert_names(err, interrupted, words)
    assert snapshot(interrupted) == before


def test_the_model_is_not_allocated_before_the_config_is_checked(finished, monkeypatch):
    # a size that passes no check must never reach the model's constructor
    built = []
    monkeypatch.setattr(famerec.runs.load, "build_model", lambda *args: built.append(args))
    edit_config(finished, setting("model", "max_len", 10**15))
    with pytest.raises(ConfigError, match="model.max_len must be from 1 to 16384"):
        famerec.load(finished)
    assert not built


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("hidden_size", 32, ["item_embedding.weight is [41, 16] there, [41, 32] in the model"]),
        ("num_layers", 3, ["it has no blocks.2."]),
        ("num_layers", 1, ["it holds blocks.1.", "which that model has not"]),
    ],
)
def test_weights_that_do_not_fit_the_config_are_one_line_before_the_model_is_built(
    finished, interrupted, capsys, monkeypatch, key, value, words
):
    built_on = []  # the device of each model built: only the meta device allocates nothing
    real = famerec.runs.load.build_model

    def recording(*args):
        built_on.append(torch.empty(0).device.type)
        return real(*args)

    monkeypatch.setattr(famerec.runs.load, "build_model", recording)
    monkeypatch.setattr(famerec.training.pipeline, "build_model", recording)
    words = ["model.safetensors do not fit the model that", "config.json describes", *words]
    for run in (finished, interrupted):
        edit_config(run, setting("model", key, value))
    before = snapshot(finished)
    code, _, err = run_cli(["recommend", "--run", str(finished), "--user", "1"], capsys)
    assert_one_line_error(code, err, *words)
    with pytest.raises(FamerecError) as raised:
        famerec.load(finished)
    assert_names(str(raised.value), finished, words)
    assert snapshot(finished) == before

    before = snapshot(interrupted)
    code, _, err = run_cli(["train", "--resume", "--out", str(interrupted)], capsys)
    assert_one_line_error(code, err, *words)
    assert snapshot(interrupted) == before
    assert built_on == ["meta"] * 3


class RunsCode:
    """A pickle that runs code when it is loaded without weights_only."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def code_in_torch_zip(checkpoint, marker):
    """`checkpoint`, a torch zip archive, with its pickle replaced by one that runs code."""
    with zipfile.ZipFile(checkpoint) as original:
        entries = {name: original.read(name) for name in original.namelist()}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in entries.items():
            if name.endswith("data.pkl"):
                content = pickle.dumps(RunsCode(marker), protocol=2)
            archive.writestr(name, content)
    checkpoint.write_bytes(out.getvalue())


def a_list(checkpoint, marker):
    buffer = io.BytesIO()
    torch.save([torch.ones(2)], buffer)
    checkpoint.write_bytes(buffer.getvalue())


@pytest.mark.parametrize(
    "craft, words",
    [
        (code_in_torch_zip, ["is not a famerec checkpoint"]),
        (lambda path, marker: path.write_bytes(pickle.dumps(RunsCode(marker))), ["not a famerec"]),
        (a_list, ["is not a famerec checkpoint (it holds a list)"]),
        (lambda path, marker: path.write_bytes(path.read_bytes()[:-200]), ["the file is damaged"]),
        (lambda path, marker: path.write_bytes(b""), ["the file is damaged (EOFError"]),
        (lambda path, marker: path.write_text("hello\n"), ["cannot resume from"]),
    ],
    ids=["code-in-a-torch-zip", "code-in-a-plain-pickle", "a-list", "cut-short", "empty", "text"],
)
def test_a_checkpoint_is_refused_as_foreign_or_as_damaged(
    interrupted, tmp_path, capsys, craft, words
):
    marker = tmp_path / "code-ran"
    craft(interrupted / "checkpoint.pt", marker)
    before = snapshot(interrupted)
    code, _, err = run_cli(["train", "--resume", "--out", str(interrupted)], capsys)
    assert_one_line_error(code, err, "checkpoint.pt", *words, "--overwrite")
    assert "Warning" not in err
    assert not marker.exists()
    assert snapshot(interrupted) == before


def test_a_checkpoint_of_another_model_is_not_this_runs(interrupted, runs, tmp_path, capsys):
    other = tmp_path / "other"
    config = RunConfig.load(interrupted / "config.json")
    config = config.with_overrides({"model.num_layers": 1, "train.epochs": 2})
    train_run(config, other, progress=False, stop_after=1)
    shutil.copy(other / "checkpoint.pt", interrupted / "checkpoint.pt")
    (interrupted / "model.safetensors").unlink()  # only the checkpoint tells
    code, _, err = run_cli(["train", "--resume", "--out", str(interrupted)], capsys)
    assert_one_line_error(code, err, "is not a famerec checkpoint of this run's model")


SECRET = "admin:x:0:0:SECRET-FIRST-LINE:home:shell"


@pytest.mark.parametrize(
    "settings",
    [
        {"format": "seq"},
        {"format": "table", "kcore": 0},
        {"format": "table", "kcore": 0, "header": False, "columns": "user,item,timestamp"},
    ],
    ids=["sequences", "table", "table-without-header"],
)
def test_resume_names_a_data_file_it_does_not_own_but_quotes_nothing_of_it(
    interrupted, tmp_path, capsys, settings
):
    secret = tmp_path / "passwd"
    secret.write_text(SECRET + "\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    edit_config(interrupted, lambda config: config["data"].update(path=str(secret), **settings))
    before = snapshot(interrupted)
    code, _, err = run_cli(["train", "--resume", "--out", str(interrupted)], capsys)
    assert_one_line_error(code, err, f"cannot resume: {secret}", str(interrupted / "config.json"))
    assert "SECRET" not in err and "daemon" not in err and "nologin" not in err
    assert snapshot(interrupted) == before


@pytest.mark.parametrize("kind, words", [("missing", "does not exist"), ("dir", "regular file")])
def test_resume_names_a_missing_data_file(interrupted, tmp_path, capsys, kind, words):
    target = tmp_path / kind
    if kind == "dir":
        target.mkdir()
    edit_config(interrupted, lambda config: config["data"].update(path=str(target)))
    code, _, err = run_cli(["train", "--resume", "--out", str(interrupted)], capsys)
    assert_one_line_error(code, err, f"cannot resume: {target}", words)


def test_a_fresh_run_still_quotes_its_own_data_file(tmp_path, capsys):
    data = tmp_path / "d.txt"
    data.write_text("1 2 3\nu x y\n")
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "'u' is not an integer id")


def test_a_valid_config_still_loads_and_resumes(finished, interrupted, capsys):
    # a value JSON writes as an integer where the setting is a float reads as that float
    edit_config(finished, setting("model", "dropout", 0))
    assert repr(RunConfig.load(finished / "config.json").model.dropout) == "0.0"
    famerec.load(finished)
    code, _, err = run_cli(["train", "--resume", "--out", str(interrupted)], capsys)
    assert code == 0, err
    assert (interrupted / "metrics.json").is_file()


def test_typed_values_from_python_are_checked_too(tmp_path):
    with pytest.raises(ConfigError, match="model.num_heads must be an integer, got true"):
        famerec.train(dataset="beauty", out=tmp_path / "run", num_heads=True)
    assert not (tmp_path / "run").exists()
