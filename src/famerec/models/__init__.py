"""Models: nn.Modules with `forward`-style encoders, `loss(batch)` and `score(item_seq)`."""

from __future__ import annotations

from famerec.config import ModelConfig
from famerec.errors import ConfigError
from famerec.models.base import SequentialRecommender, softmax_cross_entropy
from famerec.models.fame import FAME, Explanation, FacetLayer, MoEAttention
from famerec.models.sasrec import SASRec
from famerec.models.transfer import init_fame_from_sasrec, transfer_map, warm_start_new_parts

MODELS: dict[str, type[SequentialRecommender]] = {"sasrec": SASRec, "fame": FAME}

__all__ = [
    "FAME",
    "MODELS",
    "Explanation",
    "FacetLayer",
    "MoEAttention",
    "SASRec",
    "SequentialRecommender",
    "build_model",
    "init_fame_from_sasrec",
    "softmax_cross_entropy",
    "transfer_map",
    "warm_start_new_parts",
]


def build_model(config: ModelConfig, num_items: int) -> SequentialRecommender:
    if config.name not in MODELS:
        raise ConfigError(f"unknown model '{config.name}' (available: {', '.join(MODELS)})")
    return MODELS[config.name](num_items, config)
