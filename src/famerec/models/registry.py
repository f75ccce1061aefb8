"""The model registry: a model is one file plus `@register(...)` on its class.

The registration names the model, its own config section (a `ModelOptions` dataclass whose
fields become its command-line flags), a one-line summary, the model whose run `--pretrain`
trains first, and the models whose runs `--init-from` accepts. Everything that lists models
(`--model` choices, `famerec train --model X --help`, validation, loading a run) reads it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from famerec.config import ModelOptions
from famerec.errors import ConfigError


def cosine_recipe(
    epochs: int,
    dropout: float | None = None,
    lr: float = 3e-3,
    batch_size: int = 512,
    warmup_steps: int = 50,
) -> dict[str, object]:
    """A recipe of Adam with linear warmup and cosine decay to 0 over `epochs`. Its defaults
    are the recipe most models with one share (peak rate 3e-3, batches of 512, 50 warmup
    steps); a model whose recipe was found at other values passes them (CORE: 2e-3, 256, 100).
    `dropout` where the model's recipe sets its own (the session models: their originals'
    0.1)."""
    recipe: dict[str, object] = {
        "train.lr": lr,
        "train.batch_size": batch_size,
        "train.warmup_steps": warmup_steps,
        "train.lr_schedule": "cosine",
        "train.epochs": epochs,
    }
    if dropout is not None:
        recipe["model.dropout"] = dropout
    return recipe


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model: type  # a SequentialRecommender subclass
    options: type[ModelOptions]
    summary: str
    pretrain: str | None = None  # model trained into OUT/pretrain by --pretrain
    starts_from: tuple[str, ...] = ()  # models whose runs --init-from accepts
    defaults: tuple[tuple[str, object], ...] = ()  # the model's own defaults of shared settings
    recipe: tuple[tuple[str, object], ...] = ()  # its training recipe (`--preset classic`: none)

    def own_defaults(self, recipe: bool = True) -> dict[str, object]:
        """The shared settings whose default differs for this model: `defaults`, then, unless
        `recipe` is False (`--preset classic`), the recipe's."""
        return {**dict(self.defaults), **(dict(self.recipe) if recipe else {})}


MODELS: dict[str, ModelSpec] = {}


def register(
    name: str,
    summary: str,
    options: type[ModelOptions] = ModelOptions,
    pretrain: str | None = None,
    starts_from: tuple[str, ...] = (),
    defaults: dict[str, object] | None = None,
    recipe: dict[str, object] | None = None,
) -> Callable[[type], type]:
    """Class decorator adding a model to the registry under `name`.

    `defaults` are dotted keys of shared settings whose default differs for this model (e.g.
    {"model.num_layers": 1}); presets and explicit options still override them. `recipe`: the
    same for the training recipe found fastest to the model's best quality (schedule, rate,
    batch size, epochs); `--preset classic` leaves it out, back to the constant-rate recipe
    every model had before."""

    def add(cls: type) -> type:
        if name in MODELS and MODELS[name].model is not cls:
            raise ValueError(f"model name '{name}' is registered twice")
        own_defaults = tuple(sorted((defaults or {}).items()))
        own_recipe = tuple(sorted((recipe or {}).items()))
        MODELS[name] = ModelSpec(
            name, cls, options, summary, pretrain, starts_from, own_defaults, own_recipe
        )
        cls.name = name
        return cls

    return add


def model_spec(name: str) -> ModelSpec:
    """The registration of model `name`. Every model is registered: importing this module
    imports the package `famerec.models` first, which imports every model's file."""
    if name not in MODELS:
        raise ConfigError(f"unknown --model '{name}' (available: {', '.join(sorted(MODELS))})")
    return MODELS[name]
