"""Models. Each is one file whose class carries `@register(...)`; importing it here is what
makes it available to the CLI, the config and run loading (see `famerec.models.registry`)."""

from __future__ import annotations

# One line per model: importing its file registers it.
import famerec.models.attenmixer  # noqa: F401
import famerec.models.bert4rec  # noqa: F401
import famerec.models.cl4srec  # noqa: F401
import famerec.models.core  # noqa: F401
import famerec.models.duorec  # noqa: F401
import famerec.models.fame  # noqa: F401
import famerec.models.gru4rec  # noqa: F401
import famerec.models.iclrec  # noqa: F401
import famerec.models.miasrec  # noqa: F401
import famerec.models.msgifsr  # noqa: F401
import famerec.models.sasrec  # noqa: F401
from famerec.config import ModelConfig, ModelOptions
from famerec.models.base import EpochContext, SequentialRecommender
from famerec.models.fame import FAME, Explanation, FacetLayer, FAMEOptions, MoEAttention
from famerec.models.losses import info_nce, softmax_cross_entropy
from famerec.models.registry import MODELS, ModelSpec, model_spec, register
from famerec.models.sasrec import SASRec
from famerec.models.transfer import init_fame_from_sasrec, transfer_map, warm_start_new_parts

__all__ = [
    "FAME",
    "MODELS",
    "EpochContext",
    "Explanation",
    "FAMEOptions",
    "FacetLayer",
    "ModelSpec",
    "MoEAttention",
    "SASRec",
    "SequentialRecommender",
    "build_model",
    "info_nce",
    "init_fame_from_sasrec",
    "model_spec",
    "register",
    "softmax_cross_entropy",
    "transfer_map",
    "warm_start_new_parts",
]


def build_model(
    config: ModelConfig, num_items: int, options: ModelOptions | None = None
) -> SequentialRecommender:
    """The model named by `config.name`, with its own options (defaults when None)."""
    spec = model_spec(config.name)
    return spec.model(num_items, config, options if options is not None else spec.options())
