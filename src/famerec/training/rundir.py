"""Moved to `famerec.rundir` (below training and inference); kept for old imports."""

from famerec.rundir import *  # noqa: F403
from famerec.rundir import atomic_write, to_json, write_json  # noqa: F401
