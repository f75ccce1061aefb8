"""tools/carry_runs.py: unfinished runs survive a sitting in an archive kept outside git."""

import json
import shutil
import tarfile
from pathlib import Path

from famerec.experiments import load_spec
from tools.carry_runs import main, starting_points

SPEC = """name = "tiny"
[selection]
seeds = [1]
[datasets.toys]
[models.sasrec]
[[models.sasrec.stages]]
name = "defaults"
points = [{ model.hidden_size = 16 }]
"""
UNFINISHED = Path("runs/tiny/toys/sasrec/seed=1")
FINISHED = Path("runs/tiny/toys/sasrec/seed=2")


def fake_run(run_dir: Path, epochs: int, weights: bytes = b"w") -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text("{}")
    log = "".join(json.dumps({"epoch": e}) + "\n" for e in range(1, epochs + 1))
    (run_dir / "log.jsonl").write_text(log)
    (run_dir / "checkpoint.pt").write_bytes(weights * epochs)
    (run_dir / "model.safetensors").write_bytes(weights)
    (run_dir / "input.parquet").write_bytes(b"in-memory data given to famerec.train")
    (run_dir / "inputs").mkdir(exist_ok=True)
    (run_dir / "inputs" / "attributes.json").write_text("{}")
    (run_dir / "notes.txt").write_text("not needed to resume")


def setup(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "experiments" / "tiny.toml"
    spec.parent.mkdir()
    spec.write_text(SPEC)
    fake_run(UNFINISHED, epochs=3)
    fake_run(FINISHED, epochs=5)
    record = Path("results/records/tiny/toys/sasrec/seed=2/record.json")
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    return spec


def test_save_then_restore_puts_back_what_resuming_needs(tmp_path, monkeypatch, capsys):
    spec = setup(tmp_path, monkeypatch)
    main(["save", str(spec)])
    archive = Path("experiments/checkpoints/tiny.tar.gz")
    with tarfile.open(archive) as tar:
        packed = {Path(name) for name in tar.getnames()}
    assert {p.parent for p in packed} == {UNFINISHED, UNFINISHED / "inputs"}  # not the finished one
    assert "seed=1: after epoch 3" in capsys.readouterr().out

    original = {p: p.read_bytes() for p in UNFINISHED.rglob("*") if p.is_file()}
    for path in original:
        path.unlink()
    monkeypatch.chdir(tmp_path / "experiments")  # paths follow the spec, not the cwd
    main(["restore", str(spec)])
    monkeypatch.chdir(tmp_path)
    restored = {p for p in UNFINISHED.rglob("*") if p.is_file()}
    assert restored == set(original) - {UNFINISHED / "notes.txt"}
    assert all(p.read_bytes() == original[p] for p in restored)
    assert "resumes after epoch 3" in capsys.readouterr().out


def test_restore_keeps_a_run_that_is_as_far_along_and_replaces_one_behind(
    tmp_path, monkeypatch, capsys
):
    spec = setup(tmp_path, monkeypatch)
    main(["save", str(spec)])
    main(["restore", str(spec)])
    assert "here after epoch 3, archive after epoch 3; kept" in capsys.readouterr().out

    fake_run(UNFINISHED, epochs=1, weights=b"x")  # behind the archive
    main(["restore", str(spec)])
    assert (UNFINISHED / "checkpoint.pt").read_bytes() == b"www"
    assert (UNFINISHED / "notes.txt").exists() is False  # the stale directory is replaced whole


def test_the_archive_holds_no_finished_run_and_goes_once_none_is_unfinished(
    tmp_path, monkeypatch, capsys
):
    spec = setup(tmp_path, monkeypatch)
    main(["files", str(spec)])
    listed = capsys.readouterr().out.split()
    assert listed and all(p.startswith(str(UNFINISHED)) for p in listed)

    main(["save", str(spec)])
    record = Path("results/records/tiny/toys/sasrec/seed=1/record.json")
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    main(["restore", str(spec)])
    assert "finished (it has a record); the archive is stale" in capsys.readouterr().out
    main(["save", str(spec)])
    assert not Path("experiments/checkpoints/tiny.tar.gz").exists()


def test_a_run_cut_off_in_its_pretraining_stage_is_carried_with_it(tmp_path, monkeypatch, capsys):
    spec = setup(tmp_path, monkeypatch)
    fame = Path("runs/tiny/toys/fame/seed=1")
    fake_run(fame / "pretrain", epochs=4)  # the fine-tuning stage has not started
    (fame / "pretrain" / "notes.txt").unlink()
    main(["save", str(spec)])
    assert "fame/seed=1: after epoch 0 (pretraining: 4)" in capsys.readouterr().out

    shutil.rmtree("runs")
    main(["restore", str(spec)])
    assert (fame / "pretrain" / "checkpoint.pt").read_bytes() == b"wwww"
    assert "seed=1: restored, resumes after epoch 0 (pretraining: 4)" in capsys.readouterr().out
    main(["restore", str(spec)])  # now as far along here
    both = "epoch 0 (pretraining: 4)"
    assert f"here after {both}, archive after {both}; kept" in capsys.readouterr().out


CHAIN = """name = "chain"
[selection]
seeds = [1]
[datasets.toys]
[models.sasrec-init]
model.name = "sasrec"
[[models.sasrec-init.stages]]
name = "defaults"
points = [{ model.hidden_size = 16 }]
[models.fame]
model.name = "fame"
train.init_from = { selected = "sasrec-init", match = ["model.hidden_size"] }
stages = [{ name = "defaults", points = [{ model.hidden_size = 16 }] }]
[models.gru4rec]
model.name = "gru4rec"
stages = [{ name = "defaults", points = [{ model.hidden_size = 16 }] }]
[models.control]
control = true
model.name = "sasrec"
train.init_from = { selected = "fame", get = "train.init_from" }  # SASRec's run, not FAME's
"""


def test_pick_carries_the_weights_other_entries_start_from(tmp_path, monkeypatch, capsys):
    """By default pick carries the finished runs of the entries that others start from."""
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "experiments" / "chain.toml"
    spec.parent.mkdir()
    spec.write_text(CHAIN)
    for model in ("sasrec-init", "gru4rec"):
        run = Path(f"runs/chain/toys/{model}/hidden_size=16,seed=1")
        fake_run(run, epochs=2)
        (run / "metrics.json").write_text(json.dumps({"valid": {"NDCG@10": 0.1}}))
        config = {"model": {"hidden_size": 16}, "train": {"seed": 1}}
        (run / "config.json").write_text(json.dumps(config))
        record = Path(f"results/records/chain/toys/{model}/hidden_size=16,seed=1/record.json")
        record.parent.mkdir(parents=True)
        record.write_text("{}")
    assert starting_points(load_spec(spec)) == ["*/sasrec-init/*"]
    main(["pick", str(spec)])
    picked = {Path(line).parent for line in capsys.readouterr().out.split()}
    assert picked == {Path("runs/chain/toys/sasrec-init/hidden_size=16,seed=1")}
    main(["--weights", "*/gru4rec/* */nothing/*", "pick", str(spec)])
    picked = {Path(line).parent for line in capsys.readouterr().out.split()}
    assert picked == {Path("runs/chain/toys/gru4rec/hidden_size=16,seed=1")}
