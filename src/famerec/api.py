"""Train and compare from Python, on the same code path as `famerec train`.

    import famerec
    sasrec = famerec.train(model="sasrec", dataset="beauty", out="runs/sasrec", epochs=20)
    fame = famerec.train(model="fame", init_from=sasrec, out="runs/fame", epochs=20)
    famerec.compare([sasrec, fame])
    fame.plot()

Options are the CLI's flags without the dashes (`hidden=64`, `experts=4`, `lr=1e-3`,
`no_attn_residual` is `attn_residual=False`) or dotted config keys (`"model.hidden_size"`),
with the CLI's defaults and validation; bad input raises `FamerecError` with the CLI's message.
`data=` takes a file path, a Polars or pandas DataFrame of (user, item, timestamp) rows, or a
mapping user -> items (oldest first); in-memory data (pandas without pyarrow too:
`famerec.data.frames`) is checked, then written into the run directory (`input.parquet`) so
that the run can be resumed and checked later. With `init_from=` and no `data=` or `dataset=`,
the run reads the data of the run it starts from.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from famerec.errors import ConfigError
from famerec.runconfig import config_options
from famerec.runs.dir import INPUT, LOG, RunDir

log = logging.getLogger("famerec")


class Run:
    """A finished run directory: metrics, per-epoch history, recommender, plots."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        run_dir = RunDir(self.path)
        if not run_dir.is_finished:
            raise ConfigError(f"{self.path} is not a finished famerec run (it has no metrics.json)")
        self._metrics = run_dir.metrics()
        self._recommender = None

    @property
    def metrics(self) -> dict[str, Any]:
        """metrics.json: `valid`, `test`, `best_epoch`, `dataset`, `config`, ..."""
        return self._metrics

    @property
    def model(self) -> str:
        return self._metrics["config"]["model"]["name"]

    @property
    def history(self):
        """The per-epoch log (log.jsonl) as a Polars DataFrame, validation metrics flattened
        into `valid_HR@10`, ... columns."""
        import polars as pl

        rows = []
        for line in (self.path / LOG).read_text().splitlines():
            record = json.loads(line)
            flat = {k: v for k, v in record.items() if not isinstance(v, dict)}
            for section in ("valid", "train_losses"):
                for key, value in record.get(section, {}).items():
                    flat[f"{section}_{key}"] = value
            rows.append(flat)
        return pl.DataFrame(rows)

    @property
    def recommender(self):
        """What `famerec.load(run.path)` returns (loaded once, on the CPU)."""
        if self._recommender is None:
            from famerec.serving.recommender import load

            self._recommender = load(self.path)
        return self._recommender

    def plot(self, ax=None):
        """Training loss and validation NDCG@10 per epoch, best epoch marked (matplotlib)."""
        import matplotlib.pyplot as plt

        history = self.history
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        epochs = history["epoch"].to_list()
        ax.plot(epochs, history["valid_NDCG@10"].to_list(), marker=".", label="valid NDCG@10")
        ax.axvline(self._metrics["best_epoch"], color="gray", linestyle=":", label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation NDCG@10")
        loss_axis = ax.twinx()
        loss_axis.plot(epochs, history["train_loss"].to_list(), color="tab:red", alpha=0.6)
        loss_axis.set_ylabel("training loss", color="tab:red")
        ax.set_title(f"{self.model} on {self._metrics['dataset']['name']}")
        ax.legend(loc="lower right")
        return ax

    def __repr__(self) -> str:
        test = self._metrics["test"]
        return (
            f"Run({str(self.path)!r}: {self.model} on {self._metrics['dataset']['name']}, "
            f"best epoch {self._metrics['best_epoch']} of {self._metrics['epochs_run']}, "
            f"test NDCG@10 {test['NDCG@10']:.4f}, HR@10 {test['HR@10']:.4f})"
        )

    def __fspath__(self) -> str:
        return str(self.path)


def option_keys(model: str) -> dict[str, str]:
    """Python keyword -> dotted config key, for the shared options and `model`'s own: both the
    flag's name (`hidden`) and the field's name (`hidden_size`) work."""
    keys = {}
    for key, flag, field, _ in config_options(model):
        keys[field.name] = key
        keys[flag.lstrip("-").replace("-", "_")] = key
    return keys


def train(
    model: str = "sasrec",
    dataset: str | None = None,
    data: Any = None,
    out: str | Path | None = None,
    init_from: str | Path | Run | None = None,
    preset: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    quiet: bool = False,
    **options: Any,
) -> Run:
    """Train and evaluate a model exactly as `famerec train` does; returns the finished Run.

    `out` defaults to a new temporary directory. `progress` (default: when stderr is a
    terminal or a notebook) shows the epoch bars; `quiet` silences the per-epoch log lines.
    """
    from famerec.data.frames import as_frame
    from famerec.training import resolve_config, train_run
    from famerec.training.distributed import environment_world_size
    from famerec.training.rundata import with_data_of_source

    if dataset is not None and data is not None:
        raise ConfigError("give either dataset= or data=, not both")
    if environment_world_size() > 1 and (out is None or not isinstance(data, str | Path | None)):
        raise ConfigError(
            "under torchrun every process must find the same run and data: pass out= and a "
            "data file (or dataset=)"
        )
    temporary = out is None
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"famerec-{model}-"))
    keys = option_keys(model)
    overrides: dict[str, Any] = {"model.name": model}
    for name, value in options.items():
        key = name if "." in name else keys.get(name)
        if key is None:
            raise ConfigError(
                f"unknown option {name}= for --model {model} "
                f"(see `famerec train --model {model} --help`)"
            )
        overrides[key] = value
    if dataset is not None:
        overrides["data.dataset"] = dataset
    if init_from is not None:
        overrides["train.init_from"] = str(
            init_from.path if isinstance(init_from, Run) else init_from
        )
    in_memory = data is not None and not isinstance(data, str | Path)
    if in_memory:  # written into the run directory by train_run once read and checked
        overrides.update({"data.path": str(out / INPUT), "data.format": "table"})
        if isinstance(data, Mapping):
            overrides.setdefault("data.kcore", 0)  # like a sequence file: no k-core unless asked
    elif data is not None:
        overrides["data.path"] = str(data)
    if progress is None:
        progress = sys.stderr.isatty() or "ipykernel" in sys.modules
    level = log.level
    if quiet:
        log.setLevel(logging.WARNING)
    try:
        overrides = with_data_of_source(overrides, out, resume)  # init_from's data, if no other
        config = resolve_config(out, overrides, preset=preset, resume=resume)  # validates first
        frame = as_frame(data, config.data) if in_memory else None
        train_run(config, out, resume=resume, overwrite=overwrite, progress=progress, frame=frame)
    except BaseException:
        if temporary:  # the folder made for this run, left empty by the failure
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    finally:
        log.setLevel(level)
    return Run(out)


def compare(runs: Sequence[Run | str | Path], metric: str = "NDCG@10"):
    """A Polars table of the runs' validation and test metrics side by side; where runs share
    the same test users and saved their per-user ranks, a paired test against the first run
    on per-user `metric` (p-value column)."""
    import polars as pl

    from famerec.evaluation.significance import paired_test_for_runs

    loaded = [run if isinstance(run, Run) else Run(run) for run in runs]
    rows = []
    for index, run in enumerate(loaded):
        row = {"run": str(run.path), "model": run.model, "best_epoch": run.metrics["best_epoch"]}
        row.update({f"valid {k}": v for k, v in run.metrics["valid"].items()})
        row.update({f"test {k}": v for k, v in run.metrics["test"].items()})
        row[f"p vs first ({metric})"] = (
            None if index == 0 else paired_test_for_runs(loaded[0].path, run.path, metric)
        )
        rows.append(row)
    return pl.DataFrame(rows)
