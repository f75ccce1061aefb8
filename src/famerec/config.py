"""One typed run configuration: validated once, saved as config.json, overridable from the CLI.

Every field carries its help text (and, where it differs from the field name, its flag) so that
the command line is generated from these dataclasses instead of being written out by hand.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from famerec.errors import ConfigError

BUNDLED_ATTRIBUTES = "bundled"  # an attribute source: the bundled dataset's own attributes


def option(
    default: Any,
    help: str,
    flag: str | None = None,
    choices: tuple | None = None,
    paths: bool = False,
):
    """A config field with the metadata the CLI generator needs. `paths`: the value is file
    paths (comma-separated), saved absolute so that --resume works from any directory."""
    metadata = {"help": help, "flag": flag, "choices": choices, "paths": paths}
    return field(default=default, metadata=metadata)


def check_choices(section: Any) -> None:
    """Every field declared with `choices` holds one of them."""
    for f in dataclasses.fields(section):
        choices = f.metadata.get("choices")
        value = getattr(section, f.name)
        if choices and value not in choices:
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            raise ConfigError(f"unknown {flag} value '{value}' (choose from {', '.join(choices)})")


def check_finite(section: Any) -> None:
    """Every float field is a finite number: argparse's float() accepts 'nan' and 'inf', and a
    NaN slips through every range check (all comparisons with it are false)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            raise ConfigError(f"{flag} must be a finite number, got {value}")


@dataclass
class DataConfig:
    dataset: str | None = option("beauty", "bundled dataset: beauty, sports or toys")
    path: str | None = option(None, "read this file instead of a bundled dataset", flag="--data")
    format: str = option(
        "seq",
        "format of --data: seq (lines `user item item ...`) or table (CSV, TSV or Parquet)",
        choices=("seq", "table"),
    )
    sep: str | None = option(None, "table separator (default: tab for .tsv/.tab, comma otherwise)")
    header: bool = option(True, "the table's first row holds the column names")
    columns: str | None = option(None, "comma-separated names for a table without header row")
    user_col: str = option("user", "table column with user ids")
    item_col: str = option("item", "table column with item ids")
    time_col: str = option("timestamp", "table column with timestamps (ordering key)")
    kcore: int | None = option(
        None, "iterative k-core filter, 0 disables (default: 5 for tables, 0 for sequence files)"
    )
    items: str | None = option(
        None,
        "item table (CSV, TSV or Parquet) of names and attributes, kept in the run: names in "
        "recommend, explain and serve; attribute columns for --item-attributes items and FAME's "
        "--attributes items",
    )
    item_id_col: str = option("item", "--items: column with the item ids, spelled as in the data")
    item_name_col: str | None = option(
        None, "--items: column with the item names (default: 'name' where there is one)"
    )
    attribute_cols: str | None = option(
        None, "--items: comma-separated attribute columns, one attribute kind per column"
    )
    attribute_sep: str = option("|", "--items: separator of the values in an attribute column")

    @property
    def kcore_or_default(self) -> int:
        if self.kcore is not None:
            return self.kcore
        return 5 if (self.path is not None and self.format == "table") else 0

    def validate(self) -> None:
        if self.path is None and not self.dataset:
            raise ConfigError("name a bundled --dataset or give a file with --data")
        if self.kcore is not None and self.kcore < 0:
            raise ConfigError(f"--kcore must be 0 or more, got {self.kcore}")
        if self.sep is not None and len(self.sep.encode()) != 1 and self.sep != "\\t":
            raise ConfigError(f"--sep must be a single character, got {self.sep!r}")
        if not self.items and (self.item_name_col or self.attribute_cols):
            raise ConfigError("--item-name-col and --attribute-cols name columns of --items FILE")
        if not self.attribute_sep or not self.attribute_sep.strip():
            raise ConfigError(
                f"--attribute-sep must be one or more characters other than spaces, got "
                f"{self.attribute_sep!r}"
            )


@dataclass
class ModelConfig:
    """Settings every model shares; a model's own settings live in its own section."""

    name: str = option("sasrec", "model to train", flag="--model")
    hidden_size: int = option(64, "hidden size d", flag="--hidden")
    num_layers: int = option(2, "number of layers", flag="--layers")
    num_heads: int = option(2, "attention heads H", flag="--heads")
    dropout: float = option(0.5, "dropout rate (0.5 is SASRec's Amazon setting)")
    max_len: int = option(50, "most recent items kept per sequence")
    item_attributes: str | None = option(
        None,
        "add to each item's vector (input and output) the mean of learned embeddings of its "
        "attributes, zero at first: 'bundled' (the bundled dataset's) or a JSON file "
        "{item_id: [attribute_id, ...]} (sasrec, fame; not in the papers)",
        paths=True,
    )

    def validate(self) -> None:
        from famerec.models.registry import model_spec

        model_spec(self.name)  # a clear error for an unknown model
        if self.hidden_size <= 0 or self.num_layers <= 0 or self.num_heads <= 0:
            raise ConfigError("--hidden, --layers and --heads must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.max_len <= 0:
            raise ConfigError(f"--max-len must be positive, got {self.max_len}")

    def check_heads_divide_hidden(self) -> None:
        """For models that split d over H attention heads."""
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"hidden size {self.hidden_size} is not divisible by {self.num_heads} heads"
            )


@dataclass
class ModelOptions:
    """Base of a model's own config section (empty for models without own settings).

    A subclass declares its fields with `option(...)`; `validate` sees the shared sections.
    """

    def validate(self, model: ModelConfig, train: TrainConfig) -> None:
        """Raise ConfigError for settings this model cannot use."""


@dataclass
class TrainConfig:
    epochs: int = option(200, "most training epochs")
    patience: int = option(10, "stop after this many epochs without a better validation NDCG@10")
    patience_growth: float = option(
        0.25, "patience grows to this share of the best epoch (slow, noisy late improvement)"
    )
    min_steps: int = option(
        1000, "never stop early before this many optimizer steps (small data: few per epoch)"
    )
    lr: float = option(1e-3, "Adam learning rate")
    weight_decay: float = option(0.0, "Adam weight decay")
    lr_schedule: str = option(
        "constant",
        "learning-rate schedule after the warmup: constant, linear or cosine decay to "
        "--lr-floor over --decay-epochs, or step (x --step-factor every --step-epochs)",
        choices=("constant", "linear", "cosine", "step"),
    )
    warmup_steps: int = option(0, "optimizer steps of linear warmup to --lr, 0 = none")
    decay_epochs: int = option(
        0, "linear/cosine: the decay ends after this many epochs (warmup included), 0 = --epochs"
    )
    lr_floor: float = option(0.0, "linear/cosine: the rate at the decay's end, a share of --lr")
    step_epochs: int = option(3, "step: epochs between rate changes")
    step_factor: float = option(0.1, "step: the rate's factor at each change")
    batch_size: int = option(256, "training sequences per batch")
    eval_batch_size: int = option(256, "sequences per evaluation batch")
    seed: int = option(42, "random seed (CPU runs repeat exactly)")
    device: str = option("auto", "where to train", choices=("auto", "cpu", "cuda"))
    precision: str = option(
        "auto",
        "matmul precision: auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16",
        choices=("auto", "fp32", "bf16"),
    )
    compile: bool = option(False, "torch.compile the model (CUDA only; slower start)")
    threads: int = option(0, "CPU threads, 0 = all cores")
    keep_seen: bool = option(False, "keep items of the input history in the evaluation ranking")
    bucketing: bool = option(
        True, "compute each random batch as parts of similar length (same loss, less padding)"
    )
    loss_chunk: int = option(
        512, "positions per chunk of the fused cross-entropy, 0 = plain full logits"
    )
    loss: str = option(
        "full",
        "next-item loss: full (softmax over all items, the paper's protocol) or sampled "
        "(softmax over the target and --negatives items shared by the batch, for huge catalogs)",
        choices=("full", "sampled"),
    )
    negatives: int = option(1024, "--loss sampled: negatives per batch")
    negative_sampling: str = option(
        "uniform",
        "--loss sampled: uniform, or popularity (by training frequency, with logQ correction)",
        choices=("uniform", "popularity"),
    )
    # the CLI adds to both helps what the registry says of each model (cli.add_config_flags)
    init_from: str | None = option(None, "start from this finished run directory")
    pretrain: bool = option(False, "first train the model's pretraining model into OUT/pretrain")

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be a positive integer, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed must be from 0 to 2**63 - 1, got {self.seed}")
        if self.patience <= 0:
            raise ConfigError(f"--patience must be a positive integer, got {self.patience}")
        if self.patience_growth < 0 or self.min_steps < 0:
            raise ConfigError("--patience-growth and --min-steps must be 0 or more")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"--weight-decay must be 0 or more, got {self.weight_decay}")
        if self.warmup_steps < 0 or self.decay_epochs < 0:
            raise ConfigError("--warmup-steps and --decay-epochs must be 0 or more")
        if not 0.0 <= self.lr_floor <= 1.0:
            raise ConfigError(f"--lr-floor must be a share of --lr in [0, 1], got {self.lr_floor}")
        if self.step_epochs <= 0:
            raise ConfigError(f"--step-epochs must be a positive integer, got {self.step_epochs}")
        if not 0.0 < self.step_factor <= 1.0:
            raise ConfigError(f"--step-factor must be in (0, 1], got {self.step_factor}")
        if self.negatives <= 0:
            raise ConfigError(f"--negatives must be a positive integer, got {self.negatives}")
        if self.threads < 0 or self.loss_chunk < 0:
            raise ConfigError("--threads and --loss-chunk must be 0 or more")
        if self.init_from is not None and self.pretrain:
            raise ConfigError("use either --init-from RUN_DIR or --pretrain, not both")

    @property
    def starts_from_run(self) -> bool:
        return self.init_from is not None or self.pretrain


# Keys of settings that moved into a model's own section: old config.json files and old
# callers keep working.
MOVED_KEYS = {
    "model.num_experts": "fame.num_experts",
    "model.attn_residual": "fame.attn_residual",
    "train.freeze_epochs": "fame.freeze_epochs",
    "train.warm_start": "fame.warm_start",
}


def _options_class(name: str) -> type:
    from famerec.models.registry import model_spec

    return model_spec(name).options


def _model_sections() -> dict[str, type]:
    from famerec.models.registry import MODELS

    return {name: spec.options for name, spec in MODELS.items()}


@dataclass
class RunConfig:
    """The shared sections, plus `options`: the section of the model named in `model.name`.

    In config.json and in dotted keys the model's section goes by the model's name, e.g.
    `{"model": {"name": "fame", ...}, "fame": {"num_experts": 4, ...}}` and "fame.num_experts".
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    options: Any = None

    def __post_init__(self) -> None:
        if self.options is None:
            self.options = _options_class(self.model.name)()

    def validate(self) -> RunConfig:
        for section in (self.data, self.model, self.train, self.options):
            check_choices(section)
            check_finite(section)
        self.data.validate()
        self.model.validate()
        self.train.validate()
        if not isinstance(self.options, _options_class(self.model.name)):
            raise ConfigError(f"the model section does not belong to model '{self.model.name}'")
        self.options.validate(self.model, self.train)
        from famerec.models.registry import model_spec

        spec = model_spec(self.model.name)
        if self.train.pretrain and spec.pretrain is None:
            raise ConfigError(f"--pretrain: {self.model.name} has no pretraining stage")
        if self.train.init_from and not spec.starts_from:
            raise ConfigError(f"--init-from: {self.model.name} cannot start from another run")
        return self

    def to_dict(self) -> dict[str, Any]:
        payload = {
            "data": dataclasses.asdict(self.data),
            "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train),
        }
        payload[self.model.name] = dataclasses.asdict(self.options)
        return payload

    def flat(self) -> dict[str, Any]:
        """Every setting by its dotted key ("train.lr", "fame.num_experts", ...)."""
        return {f"{s}.{k}": v for s, section in self.to_dict().items() for k, v in section.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> RunConfig:
        payload = _move_old_keys(payload)
        sections = {}
        for name, section_cls in SECTIONS.items():
            sections[name] = _build_section(name, section_cls, payload.get(name, {}))
        model_name = sections["model"].name
        known_sections = set(SECTIONS) | set(_model_sections())
        unknown = set(payload) - known_sections
        if unknown:
            raise ConfigError(f"unknown config sections: {sorted(unknown)}")
        options_cls = _options_class(model_name)
        options = _build_section(model_name, options_cls, payload.get(model_name, {}))
        return cls(**sections, options=options)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        try:
            payload = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot read config {path}: {error}") from None
        return cls.from_dict(payload)

    def with_overrides(self, overrides: dict[str, Any]) -> RunConfig:
        """A copy with dotted overrides applied, e.g. {"model.hidden_size": 128}.

        A key of another model's section than the resulting model's is an error.
        """
        overrides = {MOVED_KEYS.get(key, key): value for key, value in overrides.items()}
        payload = self.to_dict()
        model_name = overrides.get("model.name", self.model.name)
        if model_name != self.model.name:
            payload.pop(self.model.name, None)  # the old model's settings do not carry over
        for key, value in overrides.items():
            section, name = key.split(".", 1)
            if section not in SECTIONS and section != model_name:
                flag = _flag_of(section, name)
                raise ConfigError(f"{flag} applies to --model {section}, not {model_name}")
            payload.setdefault(section, {})[name] = value
        return RunConfig.from_dict(payload)


def _move_old_keys(payload: dict[str, Any]) -> dict[str, Any]:
    """Settings saved by older versions in the shared sections move to the model's section."""
    payload = {key: dict(value) for key, value in payload.items()}
    model_name = payload.get("model", {}).get("name", "sasrec")
    for old, new in MOVED_KEYS.items():
        old_section, old_name = old.split(".")
        new_section, new_name = new.split(".")
        if old_name in payload.get(old_section, {}):
            value = payload[old_section].pop(old_name)
            if model_name == new_section:
                payload.setdefault(new_section, {}).setdefault(new_name, value)
    return payload


def _build_section(name: str, section_cls: type, values: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(section_cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown {name} options in config: {sorted(unknown)}")
    return section_cls(**values)


def absolute_paths(overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` with every value of a `paths` field made absolute (each comma-separated
    path, `~` expanded)."""
    sections = {**SECTIONS, **_model_sections()}
    result = dict(overrides)
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        fields = {f.name: f for f in dataclasses.fields(sections.get(section, ModelOptions))}
        if value and name in fields and fields[name].metadata.get("paths"):
            result[key] = ",".join(
                part
                if part == BUNDLED_ATTRIBUTES or part.split(":", 1)[0] == "items"  # data/items.py
                else str(Path(part).expanduser().absolute())
                for part in path_parts(value)
            )
    return result


def file_settings(config: RunConfig) -> dict[str, list[str]]:
    """The set values of `paths` fields, by key ("model.item_attributes", "fame.attributes"),
    split into their comma-separated parts: the files a run reads besides its data."""
    sections = {
        "data": config.data,
        "model": config.model,
        "train": config.train,
        config.model.name: config.options,
    }
    found = {}
    for section_name, section in sections.items():
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if f.metadata.get("paths") and value:
                found[f"{section_name}.{f.name}"] = path_parts(value)
    return found


def path_parts(value: str) -> list[str]:
    """The comma-separated paths of a `paths` field's value."""
    return [part.strip() for part in value.split(",")]


def _flag_of(section: str, name: str) -> str:
    sections = {**SECTIONS, **_model_sections()}
    for f in dataclasses.fields(sections.get(section, ModelOptions)):
        if f.name == name:
            return f.metadata.get("flag") or "--" + name.replace("_", "-")
    return "--" + name.replace("_", "-")


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}

# Named bundles of overrides, applied before explicit flags.
CLASSIC = "classic"  # also leaves out the models' recipes (models/registry.py)
PRESETS: dict[str, dict[str, Any]] = {
    # Every model's recipe before schedules: Adam at a constant 1e-3, batch 256, 200 epochs.
    CLASSIC: {},
    # A few minutes on a laptop CPU: enough epochs to see learning, not to converge.
    "quick": {"train.epochs": 15, "train.patience": 3},
    # The paper's protocol: train to early stop.
    "paper": {"train.epochs": 200, "train.patience": 10},
}


def config_options(model: str | None = None) -> list[tuple[str, str, dataclasses.Field, type]]:
    """(dotted key, flag, field, python type) for every shared config field and, with `model`,
    that model's own fields, in declaration order."""
    options = []
    sections = dict(SECTIONS)
    if model is not None:
        sections[model] = _options_class(model)
    for section_name, section_cls in sections.items():
        hints = typing.get_type_hints(section_cls)
        for f in dataclasses.fields(section_cls):
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            hint = hints[f.name]
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            base = args[0] if args else hint
            options.append((f"{section_name}.{f.name}", flag, f, base))
    return options
