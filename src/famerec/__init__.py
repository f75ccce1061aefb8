"""famerec: FAME (Facet-Aware Multi-Head Mixture-of-Experts) sequential recommendation."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["FamerecError", "Recommender", "Run", "__version__", "compare", "load", "train"]

from famerec.api import Run, compare, train  # light: torch loads when training starts
from famerec.errors import FamerecError

if TYPE_CHECKING:
    from famerec.serving.recommender import Recommender


def load(run_dir, device: str = "cpu") -> Recommender:
    """Load a finished run directory for recommendation; see `famerec.serving.recommender`."""
    from famerec.serving.recommender import load as _load

    return _load(run_dir, device=device)


def __getattr__(name: str):
    if name == "Recommender":
        from famerec.serving.recommender import Recommender

        return Recommender
    raise AttributeError(name)
