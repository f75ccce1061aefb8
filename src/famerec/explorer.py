"""The former path of `famerec.serving.explorer`: the same module, under its old name."""

import sys

import famerec.serving.explorer as _moved

sys.modules[__name__] = _moved
