"""The former path of `famerec.runs.dir`: the same module, under its old name."""

import sys

import famerec.runs.dir as _moved

sys.modules[__name__] = _moved
