"""The former path of `famerec.serving.recommender`: the same module, under its old name."""

import sys

import famerec.serving.recommender as _moved

sys.modules[__name__] = _moved
