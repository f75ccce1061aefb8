"""Experiments: frozen specs (TOML) expanded into staged grids of `famerec train` runs, a
resumable parallel runner, committed records, and reports built from the records alone."""

from famerec.experiments.plan import Plan, Run, Store
from famerec.experiments.spec import Spec, SpecError, load_spec

__all__ = ["Plan", "Run", "Spec", "SpecError", "Store", "load_spec"]
