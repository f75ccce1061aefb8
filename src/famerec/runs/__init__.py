"""Runs on disk.

* `dir`: a run directory and its files (locks, atomic writes; `RunDir`), at the bottom of the
  package beside the config sections;
* `load`: weights in and out and loading a finished run back (`load_run`, `TrainedRun`,
  `resolve_device`), above the models and the run config;
* `machine`: where a run ran (platform, CPU, cores, GPU), for metrics.json and the records.

The names of `load` are importable from here (`from famerec.runs import load_run`), as they
were when it was the module `famerec.runs`; it is imported on first use, so that importing
`famerec.runs.dir` loads neither torch nor the models. The former module `famerec.rundir` is
`dir` under its old name.
"""

from __future__ import annotations

import importlib
from typing import Any

SUBMODULES = ("dir", "load")


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    if name in SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    import famerec.runs.load as load

    try:
        return getattr(load, name)
    except AttributeError:
        raise AttributeError(f"module 'famerec.runs' has no attribute {name!r}") from None
