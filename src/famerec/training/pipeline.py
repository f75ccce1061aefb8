"""A whole run: check the inputs, load data, build (or transfer) the model, train, test once,
write the run directory. Also loads finished runs back for explanation and serving."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from famerec.config import PRESETS, RunConfig
from famerec.data import SequenceData, leave_one_out, load_dataset
from famerec.errors import ConfigError
from famerec.models import (
    FAME,
    SASRec,
    SequentialRecommender,
    build_model,
    init_fame_from_sasrec,
    warm_start_new_parts,
)
from famerec.training.rundir import CONFIG, DATASET, METRICS, PRETRAIN, WEIGHTS, RunDir, write_json
from famerec.training.trainer import Trainer, load_weights, resolve_device

log = logging.getLogger("famerec")

# Settings that may change when a run is resumed: they do not change what is computed.
RESUMABLE_CHANGES = {"train.device", "train.threads", "train.compile", "train.eval_batch_size"}


def dataset_summary(data: SequenceData) -> dict[str, Any]:
    digest = hashlib.sha256(data.items.tobytes() + data.offsets.tobytes()).hexdigest()[:16]
    return {
        "name": data.name,
        "users": data.num_users,
        "items": data.num_items,
        "actions": data.num_actions,
        "fingerprint": digest,
    }


def resolve_config(
    out: str | Path,
    overrides: dict[str, Any],
    preset: str | None = None,
    resume: bool = False,
) -> RunConfig:
    """The config of a run: defaults, then the preset, then explicit overrides.

    On --resume the saved config is the base, and explicit overrides may not change it.
    """
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}' (available: {', '.join(PRESETS)})")
    overrides = dict(overrides)
    if "data.path" in overrides and "data.dataset" not in overrides:
        overrides["data.dataset"] = None
    saved_path = Path(out) / CONFIG
    if resume and saved_path.is_file():
        saved = RunConfig.load(saved_path)
        flat = {f"{s}.{k}": v for s, section in saved.to_dict().items() for k, v in section.items()}
        changed = [
            f"{key.split('.', 1)[1]} (run has {flat[key]!r}, asked {value!r})"
            for key, value in overrides.items()
            if flat.get(key) != value and key not in RESUMABLE_CHANGES
        ]
        if changed:
            raise ConfigError("cannot change settings of a run on --resume: " + ", ".join(changed))
        return saved.with_overrides(overrides).validate()
    base = RunConfig().with_overrides(PRESETS.get(preset, {}))
    return base.with_overrides(overrides).validate()


def set_threads(threads: int) -> None:
    """Use `threads`, or every core this process may run on."""
    if not threads:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    torch.set_num_threads(threads or os.cpu_count() or 1)


def pretrain_config(config: RunConfig) -> RunConfig:
    """The SASRec run that a `--pretrain` FAME run starts from: same data and sizes."""
    return config.with_overrides(
        {"model.name": "sasrec", "train.pretrain": False, "train.init_from": None}
    ).validate()


def train_run(
    config: RunConfig,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any] | None:
    """Run `config` into directory `out`; returns metrics.json's content.

    Returns None when `stop_after` ended training early (the run stays resumable).
    """
    config.validate()
    run_dir = RunDir(out)
    run_dir.prepare(resume=resume, overwrite=overwrite)
    if run_dir.is_finished:
        log.info("%s is already finished", run_dir)
        return run_dir.metrics()
    device = resolve_device(config.train.device)
    set_threads(config.train.threads)
    data = load_dataset(config.data)
    summary = dataset_summary(data)

    source = None
    if config.train.pretrain:
        log.info("stage 1 of 2: SASRec pretraining into %s", run_dir / PRETRAIN)
        train_run(pretrain_config(config), run_dir / PRETRAIN, resume=True, progress=progress)
        source = load_run(run_dir / PRETRAIN, device="cpu")
        log.info("stage 2 of 2: FAME fine-tuning into %s", run_dir)
    elif config.train.init_from:
        source = load_run(config.train.init_from, device="cpu")
    if source is not None:
        check_source(source, summary)

    torch.manual_seed(config.train.seed)
    model = build_model(config.model, data.num_items)
    pretrained: list[str] = []
    if source is not None:
        assert isinstance(model, FAME)
        pretrained = init_fame_from_sasrec(model, source.model)
        if config.train.warm_start:
            generator = torch.Generator().manual_seed(config.train.seed)
            warm_start_new_parts(model, source.model, generator=generator)

    run_dir.path.mkdir(parents=True, exist_ok=True)
    if not run_dir.is_started:
        data.save(run_dir / DATASET)
        write_json(run_dir / CONFIG, config.to_dict())
    elif resume:  # the device or threads may have changed; everything else is identical
        write_json(run_dir / CONFIG, config.to_dict())

    started = time.perf_counter()
    trainer = Trainer(
        model,
        config,
        leave_one_out(data),
        run_dir,
        device,
        progress=progress,
        pretrained=pretrained,
    )
    state = trainer.fit(resume=resume, stop_after=stop_after)
    finished = state.epoch >= config.train.epochs or state.bad_epochs >= config.train.patience
    if not finished:
        return None
    (valid, valid_ranks), (test, test_ranks) = trainer.test_best(return_ranks=True)
    run_dir.write_ranks({"valid": valid_ranks, "test": test_ranks})
    metrics: dict[str, Any] = {
        "valid": valid,
        "test": test,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "train_seconds": round(state.train_seconds, 2),
        "dataset": summary,
        "config": config.to_dict(),
        "model": config.model.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "precision": "bf16" if trainer.amp_dtype == torch.bfloat16 else "fp32",
        "torch": torch.__version__,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    if source is not None:
        metrics["init_from"] = {
            "run": str(source.path),
            "best_epoch": source.metrics["best_epoch"],
            "test": source.metrics["test"],
        }
    write_json(run_dir / METRICS, metrics)
    return metrics


@dataclass
class TrainedRun:
    path: Path
    config: RunConfig
    model: SequentialRecommender
    data: SequenceData
    metrics: dict[str, Any]


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
    config = RunConfig.load(run_dir / CONFIG)
    data = SequenceData.load(run_dir / DATASET)
    model = build_model(config.model, data.num_items)
    load_weights(model, run_dir / WEIGHTS)
    model.to(device).eval()
    return TrainedRun(run_dir.path, config, model, data, run_dir.metrics())


def check_source(source: TrainedRun, summary: dict[str, Any]) -> None:
    """A FAME run may start only from a SASRec run on the same data."""
    if not isinstance(source.model, SASRec):
        raise ConfigError(
            f"--init-from needs a SASRec run; {source.path} is a {source.config.model.name} run"
        )
    theirs = source.metrics.get("dataset", {})
    if theirs.get("fingerprint") != summary["fingerprint"]:
        raise ConfigError(
            f"cannot start from {source.path}: it was trained on dataset '{theirs.get('name')}' "
            f"({theirs.get('users')} users, {theirs.get('items')} items), this run uses "
            f"'{summary['name']}' ({summary['users']} users, {summary['items']} items)"
        )
