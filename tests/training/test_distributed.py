"""Data-parallel training (torch.distributed, gloo on the CPU) with two processes: sharded
evaluation, the training step, resume with another process count, --pretrain under torchrun.

Processes are spawned (torch.multiprocessing) with the environment torchrun would give them,
or started by torchrun itself; each writes what it computed to a file for the test to compare.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import famerec
from famerec.config import RunConfig
from famerec.data import leave_one_out, load_dataset
from famerec.data.batching import EvalBatches, train_tensors
from famerec.evaluation import evaluate
from famerec.models import build_model
from famerec.runs.dir import RunDir
from famerec.training import distributed, train_run
from famerec.training.distributed import ONE_PROCESS, ShardedTrainBatches
from famerec.training.trainer import Trainer
from tests.conftest import tiny_overrides, write_sequences

PROCESSES = 2
TIMEOUT = 120  # seconds; a hung collective fails the test instead of the suite


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_torchrun_process(rank, world_size, port, work, args):
    os.environ.update(
        WORLD_SIZE=str(world_size),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        work(rank, *args)
    finally:
        distributed.leave()


def run_processes(work, *args, world_size=PROCESSES) -> None:
    """work(rank, *args) in `world_size` fresh processes that form one process group."""
    context = mp.start_processes(
        _as_torchrun_process,
        args=(world_size, free_port(), work, args),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + TIMEOUT
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{world_size} processes did not finish in {TIMEOUT} s")


def tiny_config(data: Path, **extra) -> RunConfig:
    overrides = {
        "model.dropout": 0.0,  # dropout masks differ per process
        "train.batch_size": 17,  # 120 rows: the last batch has one row, one process none
        "train.eval_batch_size": 13,  # 10 evaluation batches, 5 per process
        **extra,
    }
    return RunConfig().with_overrides(tiny_overrides(data, **overrides)).validate()


# -- evaluation, training step, random numbers ----------------------------------------


def evaluation_setup(config: RunConfig):
    data = load_dataset(config.data)
    torch.manual_seed(0)
    model = build_model(config.model, data.num_items, config.options).eval()
    batches = EvalBatches(leave_one_out(data).test, config.model.max_len, 13)
    return model, batches


def one_epoch(config: RunConfig, out: Path, processes=ONE_PROCESS):
    data = load_dataset(config.data)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, data.num_items, config.options)
    trainer = Trainer(
        model, config, leave_one_out(data), RunDir(out), torch.device("cpu"), False, processes
    )
    losses, _ = trainer.train_epoch(1)
    return losses, {name: tensor.clone() for name, tensor in model.state_dict().items()}


def initial_weights(config: RunConfig) -> dict[str, torch.Tensor]:
    data = load_dataset(config.data)
    torch.manual_seed(config.train.seed)
    return build_model(config.model, data.num_items, config.options).state_dict()


def _two_process_checks(rank, config, out, run_config):
    processes = distributed.join("cpu")
    model, batches = evaluation_setup(config)
    metrics, ranks = evaluate(model, batches, return_ranks=True, shard=processes)
    with processes.same_random_numbers():  # as around each epoch's hook
        hook_draw = torch.rand(4)
    step_draw = torch.rand(4)
    losses, weights = one_epoch(config, out, processes)
    result = {"metrics": metrics, "ranks": ranks, "hook_draw": hook_draw, "step_draw": step_draw}
    result.update(losses=losses, weights=weights)
    torch.save(result, out / f"process-{rank}.pt")
    assert train_run(run_config, out / "cut", progress=False, stop_after=1) is None


@dataclass
class TwoProcesses:
    config: RunConfig
    results: list[dict]  # what each process computed: evaluation, random draws, one epoch
    run_config: RunConfig
    cut_run: Path  # a run of `run_config` that two processes stopped after epoch 1


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> TwoProcesses:
    """Two processes spawned once for the tests below (spawning is most of their time)."""
    root = tmp_path_factory.mktemp("two-processes")
    config = tiny_config(write_sequences(root / "tiny.txt"))
    run_config = config.with_overrides({"train.epochs": 3}).validate()
    run_processes(_two_process_checks, config, root, run_config)
    results = [torch.load(root / f"process-{r}.pt", weights_only=False) for r in range(PROCESSES)]
    return TwoProcesses(config, results, run_config, root / "cut")


@pytest.fixture
def one_thread():
    """Compare with one thread per process, as the spawned processes use."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_sharded_evaluation_equals_single_process_exactly(two_processes, one_thread):
    model, batches = evaluation_setup(two_processes.config)
    assert len(batches) == 10
    metrics, ranks = evaluate(model, batches, return_ranks=True)
    assert len(np.unique(ranks)) > 10  # a model that ranks users differently
    for result in two_processes.results:
        assert result["metrics"] == metrics  # exactly, on every process
        assert np.array_equal(result["ranks"], ranks)


def test_one_epoch_on_two_processes_matches_one_process(two_processes, one_thread, tmp_path):
    config, results = two_processes.config, two_processes.results
    losses, weights = one_epoch(config, tmp_path)
    # The attention's key bias shifts every score of a query alike, so softmax gives it a zero
    # gradient in exact arithmetic; Adam scales its rounding noise up to steps of size lr.
    noise_only = {name for name in weights if name.endswith("attn.key.bias")}
    assert len(noise_only) == 2
    for result in results:
        assert result["losses"]["loss"] == pytest.approx(losses["loss"], rel=1e-6)
        for name in weights.keys() - noise_only:
            torch.testing.assert_close(result["weights"][name], weights[name], rtol=0, atol=1e-6)
    # every process holds the same weights, to the bit (DDP averages the gradients)
    first, second = (result["weights"] for result in results)
    assert all(torch.equal(first[name], second[name]) for name in first)
    start = initial_weights(config)
    assert sum(float((weights[n] - start[n]).abs().sum()) for n in weights) > 1.0  # it trained


def test_epoch_hooks_draw_alike_on_every_process_and_training_steps_do_not(two_processes):
    first, second = two_processes.results
    assert torch.equal(first["hook_draw"], second["hook_draw"])
    assert not torch.equal(first["step_draw"], second["step_draw"])


def test_shares_cover_each_batch_once_with_weights_that_add_up_to_the_process_count(seq_file):
    tensors = train_tensors(leave_one_out(load_dataset(tiny_config(seq_file).data)).train, 12)
    shards = [
        ShardedTrainBatches(
            tensors, 17, torch.Generator().manual_seed(3), rank=rank, world_size=PROCESSES
        )
        for rank in range(PROCESSES)
    ]
    steps = list(zip(*shards))
    assert len(steps) == len(shards[0]) == 8
    for rank_batches in steps:
        weights = [batch.loss_weight for batch in rank_batches]
        assert sum(weights) == pytest.approx(PROCESSES)
    last = steps[-1]  # one row: process 1 computes a stand-in row that weighs nothing
    assert [batch.num_sequences for batch in last] == [1, 1] and last[1].loss_weight == 0.0
    assert sum(b.num_sequences for s in steps for b in s) == len(tensors.lengths) + 1
    assert sum(b.positions for s in steps for b in s if b.loss_weight) == tensors.num_positions


# -- whole runs ------------------------------------------------------------------------------


def test_run_of_two_processes_resumes_with_one(two_processes, tmp_path):
    config, out = two_processes.run_config, tmp_path / "run"
    shutil.copytree(two_processes.cut_run, out)
    assert (out / "checkpoint.pt").is_file() and not (out / "metrics.json").exists()
    first = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in first] == [1]  # written once, by process 0
    metrics = train_run(config, out, resume=True, progress=False)
    assert metrics["epochs_run"] == 3 and "processes" not in metrics
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [1, 2, 3] and log[0] == first[0]
    assert (out / "metrics.json").is_file()


def test_fame_pretrain_under_torchrun_writes_both_runs(tmp_path):
    data = write_sequences(tmp_path / "tiny.txt")
    out = tmp_path / "fame"
    flags = "--hidden 64 --heads 2 --max-len 12 --dropout 0 --epochs 2 --batch-size 17"
    flags += " --eval-batch-size 13 --threads 1 --freeze-epochs 1"
    source = str(Path(famerec.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", str(PROCESSES), "-m", "famerec", "train", "--model", "fame"]
    command += ["--pretrain", "--data", str(data), "--out", str(out), *flags.split()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run directory:") == 1  # process 0 speaks for the job
    for run in (out / "pretrain", out):
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["processes"] == PROCESSES and metrics["epochs_run"] == 2
        assert (run / "ranks.npz").is_file()  # the per-user ranks, gathered from both
    fame = json.loads((out / "metrics.json").read_text())
    assert fame["model"] == "fame" and fame["init_from"]["run"] == str(out / "pretrain")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [record["pretrained_frozen"] for record in log] == [True, False]


# -- one process -----------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [None, "1"])
def test_without_torchrun_there_is_no_process_group(monkeypatch, world_size):
    if world_size is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world_size)
    assert distributed.join("cpu") is ONE_PROCESS
    assert not torch.distributed.is_initialized()


def test_an_error_names_the_torchrun_process(monkeypatch, capsys, tmp_path):
    from famerec.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    code = main(["train", "--model", "fame", "--freeze-epochs", "2", "--out", str(tmp_path)])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("famerec: error (torchrun process 1): --freeze-epochs")


def test_python_api_under_torchrun_needs_a_run_directory_and_a_data_file(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(famerec.FamerecError, match="pass out= and a data file"):
        famerec.train(data={1: [1, 2, 3, 4]}, out="unused")
    with pytest.raises(famerec.FamerecError, match="pass out= and a data file"):
        famerec.train(dataset="beauty")
    assert not torch.distributed.is_initialized()
