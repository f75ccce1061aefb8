"""The former path of `famerec.serving.batcher`: the same module, under its old name."""

import sys

import famerec.serving.batcher as _moved

sys.modules[__name__] = _moved
