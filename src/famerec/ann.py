"""The former path of `famerec.serving.ann`: the same module, under its old name."""

import sys

import famerec.serving.ann as _moved

sys.modules[__name__] = _moved
