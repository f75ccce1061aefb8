"""A whole run: check the inputs, load data, build the model (started from another run where
asked), train, test once, write the run directory. The run's config comes from
`famerec.runconfig.resolve_config`."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from famerec.config import BUNDLED_ATTRIBUTES, file_settings
from famerec.data import SequenceData, fingerprint, leave_one_out, load_dataset
from famerec.data.frames import write_input
from famerec.data.items import keep_item_table, read_item_table
from famerec.errors import ConfigError, DataError, FamerecError, printable
from famerec.models import build_model, model_spec
from famerec.runconfig import RESUMABLE_CHANGES, RunConfig, pretrain_config, resolve_config
from famerec.runs.dir import (
    CONFIG,
    DATASET,
    INPUT,
    METRICS,
    PRETRAIN,
    WEIGHTS,
    RunDir,
    atomic_write,
    input_copy,
    write_json,
)
from famerec.runs.load import (
    TrainedRun,
    check_weight_shapes,
    kept_inputs,
    load_run,
    resolve_device,
)
from famerec.runs.machine import machine
from famerec.training import distributed
from famerec.training.rundata import DATA_SOURCE, check_same_data
from famerec.training.trainer import Trainer

if TYPE_CHECKING:
    import polars as pl

# resolve_config and pretrain_config live in famerec.runconfig; still importable from here.
__all__ = ["TrainedRun", "load_run", "pretrain_config", "resolve_config", "train_run"]

log = logging.getLogger("famerec")


@contextlib.contextmanager
def quoting_nothing(run_dir: RunDir, started: bool):
    """Around reading a started run's data again (--resume): a file it cannot read is named,
    but nothing of it is quoted. The run's config.json says which file that is, and it may have
    been edited to name a file that is not the run's (another user's, a system file), whose lines
    no error may print."""
    try:
        yield
    except DataError as error:
        if not started or error.path is None:
            raise
        path = Path(error.path)
        if not path.exists():
            what = "does not exist"
        elif not path.is_file():
            what = "is not a regular file"
        else:
            what = "cannot be read as this run's data" + (
                f" (line {error.line})" if error.line is not None else ""
            )
        raise FamerecError(
            f"cannot resume: {printable(path, limit=None)}, the data file that "
            f"{run_dir / CONFIG} names, {what}; restore the run's data file, or start the run "
            "over with --overwrite"
        ) from None


def dataset_summary(data: SequenceData) -> dict[str, Any]:
    return {
        "name": data.name,
        "users": data.num_users,
        "items": data.num_items,
        "actions": data.num_actions,
        "fingerprint": fingerprint(data),
    }


def keep_inputs(config: RunConfig, run_dir: RunDir) -> None:
    """A copy in the run directory of every file the run's settings name (`--item-attributes
    FILE`, FAME's `--attributes`), so that the run resumes and loads (recommend, serve,
    famerec.load) wherever it is moved, without the originals. A run started before the
    copies were kept gets them on resume."""
    for key, parts in file_settings(config).items():
        for i, part in enumerate(parts):
            copy = input_copy(run_dir, key, i)
            if part != BUNDLED_ATTRIBUTES and not copy.is_file():
                copy.parent.mkdir(exist_ok=True)
                atomic_write(copy, Path(part).read_bytes())


def set_threads(threads: int, processes_per_node: int = 1) -> None:
    """Use `threads`, or every core this process may run on (shared by the processes that
    torchrun started on this node); more than that is refused (a huge count crashed the
    process)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    if threads > cores:
        raise ConfigError(
            f"--threads {threads} is more than the {cores} cores this process may use "
            "(0 uses them all)"
        )
    torch.set_num_threads(threads or max(cores // processes_per_node, 1))


def train_run(
    config: RunConfig,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    time_limit: float | None = None,
    frame: pl.DataFrame | None = None,
) -> dict[str, Any] | None:
    """Run `config` into directory `out`; returns metrics.json's content.

    `frame`: in-memory data (`famerec.train(data=...)`, made by `famerec.data.frames`) for a
    config whose data path is OUT/input.parquet: read and checked first, then written there,
    under the run directory's lock, where a resumed run reads it again.

    Returns None when `stop_after` or `time_limit` (seconds from now: no epoch starts that
    would end after it) ended training early; the run stays resumable. A run that
    fails leaves nothing behind, unless it has a completed epoch to resume from. Under torchrun
    every process calls it (`training.distributed`); process 0 writes the run directory, and
    all return once it is written. The writer holds the run directory's lock throughout
    (`RunDir.lock`): a second writer of the same directory fails at once with InUseError.
    """
    config.validate()
    deadline = None if time_limit is None else time.monotonic() + time_limit
    run_dir = RunDir(out)
    processes = distributed.join(config.train.device)  # one process, or a torchrun job's
    # process 0 holds the run directory's lock from before it looks at it (--overwrite deletes)
    # until the run is written; another writer fails at once
    processes.on_main(run_dir.lock)
    claimed = False
    try:
        processes.on_main(lambda: run_dir.prepare(resume=resume, overwrite=overwrite))
        if run_dir.is_finished:
            log.info("%s is already finished", run_dir)
            return run_dir.metrics()
        device = processes.own_device(resolve_device(config.train.device))
        set_threads(config.train.threads, processes.local_world_size)
        processes.on_main(run_dir.claim)
        claimed = True
        result = _train_claimed(
            config,
            run_dir,
            device,
            resume,
            progress and processes.is_main,
            stop_after,
            processes,
            deadline,
            frame,
        )
        processes.on_main(run_dir.discard_aside)  # the run set aside by --overwrite
        return result
    except Exception as error:
        kept = processes.is_main and run_dir.release()
        if claimed and kept and not resume and isinstance(error, FamerecError):
            error.args = (f"{error}; {run_dir} keeps its completed epochs (--resume continues)",)
        raise
    finally:
        run_dir.unlock()  # a no-op on the processes that hold no lock


def _train_claimed(
    config: RunConfig,
    run_dir: RunDir,
    device: torch.device,
    resume: bool,
    progress: bool,
    stop_after: int | None,
    processes: distributed.OneProcess,
    deadline: float | None = None,
    frame: pl.DataFrame | None = None,
) -> dict[str, Any] | None:
    """train_run's work once the run directory is known to be writable."""
    started = processes.on_main(lambda: run_dir.is_started)  # as process 0 sees it before writing
    with quoting_nothing(run_dir, started):
        data = load_dataset(config.data, frame)
    # --items: checked before anything is written; a started run reads its own items.json
    item_table = read_item_table(config.data, data, run_dir.path)
    if started:
        check_same_data(data, run_dir / DATASET, config.data.path)
    if frame is not None:  # read and checked: now the run's own copy (--pretrain reads it)
        processes.on_main(lambda: write_input(frame, run_dir / INPUT))
    summary = dataset_summary(data)

    source = None
    if config.train.pretrain:
        log.info("stage 1 of 2: SASRec pretraining into %s", run_dir / PRETRAIN)
        left = None if deadline is None else deadline - time.monotonic()
        stage = train_run(
            stage_config(config, run_dir / PRETRAIN),
            run_dir / PRETRAIN,
            resume=True,
            progress=progress,
            time_limit=left,
        )
        if stage is None:  # paused at the time limit; the next sitting resumes it
            return None
        source = load_run(run_dir / PRETRAIN, device="cpu")
        log.info("stage 2 of 2: FAME fine-tuning into %s", run_dir)
    elif config.train.init_from:
        source = load_run(config.train.init_from, device="cpu")
    if source is not None:
        check_source(source, summary, config)

    torch.manual_seed(config.train.seed)
    if item_table is not None:  # items.json, and the files of --attributes items (data/items.py)
        copy_of = functools.partial(input_copy, run_dir)
        processes.on_main(lambda: keep_item_table(item_table, config, run_dir, copy_of))
        processes.barrier()
    kept = kept_inputs(config, run_dir)  # a started run reads its own copies of its files
    if started and (run_dir / WEIGHTS).is_file():  # before its model is allocated
        check_weight_shapes(kept, data, run_dir / WEIGHTS)
    model = build_model(kept.model, data.num_items, kept.options)
    model.attach_data(data)
    if source is not None:
        model.prepare(source.model, seed=config.train.seed)

    if processes.is_main:
        keep_inputs(config, run_dir)
        if not run_dir.is_started:
            data.save(run_dir / DATASET)
            write_json(run_dir / CONFIG, config.to_dict())
        elif resume:  # device, threads or file paths may have changed; nothing else
            write_json(run_dir / CONFIG, config.to_dict())

    trainer = Trainer(
        model,
        config,
        leave_one_out(data),
        run_dir,
        device,
        progress=progress,
        processes=processes,
    )
    state = trainer.fit(resume=resume, stop_after=stop_after, deadline=deadline)
    if state.epoch < config.train.epochs and not state.stopped:
        processes.barrier()  # process 0 has written the checkpoint
        return None
    (valid, valid_ranks), (test, test_ranks) = trainer.test_best(return_ranks=True)
    processes.on_main(lambda: run_dir.write_ranks({"valid": valid_ranks, "test": test_ranks}))
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
        "machine": machine(str(device)),  # the sitting that finished the run
        "wall_seconds": round(trainer.wall_seconds, 2),  # every sitting's, when resumed
    }
    if processes.world_size > 1:
        metrics["processes"] = processes.world_size
    if source is not None:
        metrics["init_from"] = {
            "run": str(source.path),
            "best_epoch": source.metrics["best_epoch"],
            "test": source.metrics["test"],
            # what this run's starting point cost, so `--pretrain`'s two stages can be summed
            "train_seconds": source.metrics.get("train_seconds"),
            "wall_seconds": source.metrics.get("wall_seconds"),
        }
    processes.on_main(lambda: write_json(run_dir / METRICS, metrics))
    return metrics


def stage_config(config: RunConfig, stage_dir: Path) -> RunConfig:
    """The config of `--pretrain`'s first stage. A started stage keeps the settings it was
    started with, so that a recipe changed since then cannot rewrite its config.json; only the
    settings any resume may change (device, threads, file paths) follow this run's."""
    fresh = pretrain_config(config)
    if not (stage_dir / CONFIG).is_file():
        return fresh
    asked = fresh.flat()
    saved = RunConfig.load(stage_dir / CONFIG)
    kept = saved.flat()
    changed = [
        f"{key} {kept.get(key)!r} (now {asked.get(key)!r})"
        for key in sorted(set(kept) | set(asked))
        if key not in RESUMABLE_CHANGES and kept.get(key) != asked.get(key)
    ]
    if changed:
        log.warning(
            "the pretraining stage keeps the settings it started with: %s", ", ".join(changed)
        )
    return saved.with_overrides({key: asked[key] for key in RESUMABLE_CHANGES if key in asked})


def check_source(source: TrainedRun, summary: dict[str, Any], config: RunConfig) -> None:
    """A run may start only from a run of a model it accepts, on the same data."""
    target_model = config.model.name
    source_model = source.config.model.name
    accepted = model_spec(target_model).starts_from
    if source_model not in accepted:
        raise ConfigError(
            f"--init-from: a {target_model} run starts from a {' or '.join(accepted)} run; "
            f"{source.path} is a {source_model} run"
        )
    theirs = source.metrics.get("dataset", {})
    if theirs.get("fingerprint") == summary["fingerprint"]:
        return
    same_settings = all(
        getattr(config.data, key) == getattr(source.config.data, key) for key in DATA_SOURCE
    )
    if same_settings and config.data.path:  # e.g. the data it defaulted to (--init-from)
        raise ConfigError(
            f"cannot start from {source.path}: {config.data.path} no longer holds the data it "
            "was trained on (the fingerprints differ); restore the file, or give the data with "
            "--data"
        )
    raise ConfigError(
        f"cannot start from {source.path}: it was trained on dataset '{theirs.get('name')}' "
        f"({theirs.get('users')} users, {theirs.get('items')} items), this run uses "
        f"'{summary['name']}' ({summary['users']} users, {summary['items']} items)"
    )
