"""Finished runs on disk: weights in and out, and loading a run directory back.

Below both training and inference: the trainer saves weights with it; the recommender, the
service and the analysis load runs with it, without importing the training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from famerec.config import BUNDLED_ATTRIBUTES, file_settings
from famerec.data import SequenceData
from famerec.errors import ConfigError, FamerecError
from famerec.models import SequentialRecommender, build_model
from famerec.runconfig import RunConfig
from famerec.runs.dir import (
    CONFIG,
    DATASET,
    METRICS,
    WEIGHTS,
    RunDir,
    atomic_write,
    input_copy,
)


def resolve_device(name: str) -> torch.device:
    """auto, cpu, cuda or cuda:N, checked here so that a wrong name is one clear line."""
    kind, _, index = name.partition(":")
    if kind not in ("auto", "cpu", "cuda") or (index and not (kind == "cuda" and index.isdigit())):
        raise ConfigError(f"unknown device '{name}' (choose from auto, cpu, cuda or cuda:N)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for, but no CUDA device is available")
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices")
    return torch.device(name)


def save_weights(model: SequentialRecommender, path: Path) -> None:
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    atomic_write(path, safetensors_bytes(state))  # bytes first: a full disk is one clear line


def load_weights(model: SequentialRecommender, path: Path) -> None:
    """Load safetensors weights (never a pickle); damaged or mismatched files are one line."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise FamerecError(f"cannot read weights {path}: {error}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise FamerecError(f"weights {path} do not fit the model of its config: {first}") from None


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor in a safetensors file, read from its header alone."""
    try:
        with safe_open(str(path), framework="pt") as weights:
            names = weights.keys()  # a safe_open is no mapping: it has keys, no iteration
            return {name: tuple(weights.get_slice(name).get_shape()) for name in names}
    except (SafetensorError, OSError, ValueError) as error:
        raise FamerecError(f"cannot read weights {path}: {error}") from None


def check_weight_shapes(config: RunConfig, data: SequenceData, path: Path) -> None:
    """Refuse, in one line and before the model is allocated, weights whose tensors are not the
    parameters of the model that `config` (the run's config.json) and `data` describe: a
    config.json edited after training. The model is built on the meta device, which allocates
    nothing; only the item attributes' table (its size from the data) is real."""
    with torch.device("meta"):
        model = build_model(config.model, data.num_items, config.options)
    if config.model.item_attributes:
        model.attach_data(data)  # adds the attribute embeddings
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = weight_shapes(path)
    for name in [*expected, *(name for name in found if name not in expected)]:
        if name not in found:
            problem = f"it has no {name}"
        elif name not in expected:
            problem = f"it holds {name}, which that model has not"
        elif found[name] != expected[name] and not model.loads_older_shape(name, found[name]):
            problem = f"{name} is {list(found[name])} there, {list(expected[name])} in the model"
        else:
            continue
        raise FamerecError(
            f"weights {path} do not fit the model that {path.parent / CONFIG} describes: {problem}"
        )


def check_finite_weights(model: SequentialRecommender, path: Path) -> None:
    """A diverged model (NaN or infinite weights) must not be served or analysed."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FamerecError(f"{path} holds non-finite weights ({name}): the model diverged")


@dataclass
class TrainedRun:
    path: Path
    config: RunConfig
    model: SequentialRecommender
    data: SequenceData
    metrics: dict[str, Any]


def kept_inputs(config: RunConfig, run_dir: RunDir) -> RunConfig:
    """`config` reading its files (`--item-attributes FILE`, FAME's `--attributes`) from the
    copies its run keeps, so that a started run needs the originals no more."""
    kept = {}
    for key, parts in file_settings(config).items():
        copies = [input_copy(run_dir, key, i) for i in range(len(parts))]
        kept[key] = ",".join(
            str(copy) if part != BUNDLED_ATTRIBUTES and copy.is_file() else part
            for part, copy in zip(parts, copies)
        )
    return config.with_overrides(kept)


def load_run(path: str | Path, device: str | torch.device = "cpu") -> TrainedRun:
    """A finished run directory's config, data, best weights (eval mode) and metrics."""
    run_dir = RunDir(path)
    if not run_dir.path.is_dir():
        raise ConfigError(f"run directory {path} does not exist")
    if not run_dir.is_finished:
        raise ConfigError(f"{path} is not a finished famerec run (it has no {METRICS})")
    for name in (CONFIG, WEIGHTS, DATASET):
        if not (run_dir / name).is_file():
            raise ConfigError(f"{path} is missing {name}")
    config = RunConfig.load(run_dir / CONFIG)  # validated: types, ranges, sizes
    data = SequenceData.load(run_dir / DATASET)
    kept = kept_inputs(config, run_dir)
    check_weight_shapes(kept, data, run_dir / WEIGHTS)  # before anything is allocated
    model = build_model(kept.model, data.num_items, kept.options)
    if config.model.item_attributes:  # its attribute embeddings are scored: read them first
        model.attach_data(data)
    load_weights(model, run_dir / WEIGHTS)
    check_finite_weights(model, run_dir / WEIGHTS)
    if isinstance(device, str):
        device = resolve_device(device)
    model.to(device).eval()
    try:
        metrics = run_dir.metrics()
    except ValueError as error:
        raise FamerecError(f"cannot read {run_dir / METRICS}: {error}") from None
    return TrainedRun(run_dir.path, config, model, data, metrics)
