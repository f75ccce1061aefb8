"""The sections of the typed run configuration: data, model, train, and `ModelOptions`, the
base of each model's own section.

Every field carries its help text (and, where it differs from the field name, its flag) so that
the command line is generated from these dataclasses instead of being written out by hand.
At the bottom of the package: it imports no other famerec module but `famerec.errors`. The
run config that joins the sections with the chosen model's (`RunConfig`, presets, resolution)
is `famerec.runconfig`, above the models; its names are still importable from here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from famerec.errors import ConfigError, printable

if TYPE_CHECKING:
    from famerec.runconfig import RunConfig

BUNDLED_ATTRIBUTES = "bundled"  # an attribute source: the bundled dataset's own attributes

# The most a size may be: far above any model this library trains, far below what a typing
# slip (or a hand-edited config.json: a hidden size of 1e12) would have allocated.
MAX_HIDDEN = 16384
MAX_LAYERS = 128
MAX_LEN = 16384  # the position table is max_len x hidden_size
MAX_BATCH = 2**20  # sequences per training or evaluation batch
MAX_NEGATIVES = 2**24  # --negatives, --loss-chunk
MAX_OPTION = 2**16  # any integer setting of a model's own section (sizes, counts)
BITS64 = 2**64  # no integer setting needs more than 64 bits; its own range check is tighter

KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


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


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of a config field."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


@functools.cache
def field_kinds(section_cls: type) -> tuple[tuple[dataclasses.Field, type, bool], ...]:
    """(field, base type, whether it may be None) of each field of a config section, from its
    annotations (`int`, `str | None`, ...)."""
    hints = typing.get_type_hints(section_cls)
    kinds = []
    for f in dataclasses.fields(section_cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        base = [a for a in args if a is not type(None)]
        kinds.append((f, base[0] if len(base) == 1 else hint, type(None) in args))
    return tuple(kinds)


def describe(value: object) -> str:
    """A setting's value as an error shows it: short, one line, JSON's words for JSON's kinds."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "the string " + printable(repr(value), limit=40)
    if isinstance(value, numbers.Number):
        try:
            return printable(value, limit=40)
        except ValueError:  # an integer of more digits than str() converts
            return "a number of thousands of digits"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def typed_value(key: str, kind: type, optional: bool, value: Any) -> Any:
    """`value` as setting `key` of type `kind` holds it (an integer for a float setting becomes
    a float); one line naming the key for any other type. A bool is not an integer, and an
    integer must fit in 64 bits."""
    if value is None and optional:
        return None
    if kind not in KIND_NAMES:
        return value  # a type this check does not know: the section's validate checks it
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, numbers.Integral if kind is int else numbers.Real)
        ok = ok and not isinstance(value, bool)
    if not ok:
        expected = KIND_NAMES[kind] + (" or null" if optional else "")
        raise ConfigError(f"{key} must be {expected}, got {describe(value)}")
    if kind is int:
        value = int(value)
        if not -BITS64 < value < BITS64:
            raise ConfigError(f"{key} must fit in 64 bits, got {describe(value)}")
    elif kind is float:
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"{key} must be a finite number, got {describe(value)}") from None
    return value


def typed_values(name: str, section_cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """`values` of config section `name` checked and converted by `typed_value`."""
    kinds = {f.name: (kind, optional) for f, kind, optional in field_kinds(section_cls)}
    return {
        key: typed_value(f"{name}.{key}", *kinds[key], value) if key in kinds else value
        for key, value in values.items()
    }


def check_types(section: Any, name: str) -> None:
    """Every field of config section `name` holds a value of its declared type (`typed_value`):
    a section built in Python, not read from a file, is checked before its ranges."""
    for f, kind, optional in field_kinds(type(section)):
        typed_value(f"{name}.{f.name}", kind, optional, getattr(section, f.name))


def check_option_sizes(options: Any) -> None:
    """No integer setting of a model's own section (sizes, counts) exceeds MAX_OPTION."""
    for f, kind, _ in field_kinds(type(options)):
        value = getattr(options, f.name)
        if kind is int and value is not None and value > MAX_OPTION:
            raise ConfigError(f"{flag_of(f)} must be at most {MAX_OPTION}, got {value}")


def check_choices(section: Any) -> None:
    """Every field declared with `choices` holds one of them."""
    for f in dataclasses.fields(section):
        choices = f.metadata.get("choices")
        value = getattr(section, f.name)
        if choices and value not in choices:
            raise ConfigError(
                f"unknown {flag_of(f)} value '{value}' (choose from {', '.join(choices)})"
            )


def check_finite(section: Any) -> None:
    """Every float field is a finite number: argparse's float() accepts 'nan' and 'inf', and a
    NaN slips through every range check (all comparisons with it are false)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{flag_of(f)} must be a finite number, got {value}")


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
        "attributes, zero at first: 'bundled' (the bundled dataset's), a JSON file "
        "{item_id: [attribute_id, ...]} or 'items' (the attribute columns of --items) "
        "(sasrec, fame; not in the papers)",
        paths=True,
    )

    def validate(self) -> None:
        """The sizes; the model's name is checked against the registry by RunConfig.validate."""
        sizes = (
            ("--hidden", self.hidden_size, MAX_HIDDEN),
            ("--layers", self.num_layers, MAX_LAYERS),
            ("--heads", self.num_heads, self.hidden_size),
            ("--max-len", self.max_len, MAX_LEN),
        )
        for flag, value, most in sizes:
            if not 1 <= value <= most:
                raise ConfigError(f"{flag} must be from 1 to {most}, got {value}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")

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
    weight_decay: float = option(
        0.0, "weight decay: Adam's L2 term in the gradient, or AdamW's decoupled shrinking"
    )
    optimizer: str = option(
        "adam",
        "adam (the weight decay is an L2 term of the gradient, as in most originals) or "
        "adamw (decoupled: weights shrink by lr x --weight-decay each step, outside Adam's "
        "scaling)",
        choices=("adam", "adamw"),
    )
    lr_schedule: str = option(
        "constant",
        "learning-rate schedule after the warmup: constant, linear or cosine decay to "
        "--lr-floor over --decay-epochs, or step (x --step-factor every --step-epochs)",
        choices=("constant", "linear", "cosine", "step"),
    )
    warmup_steps: int = option(0, "optimizer steps of linear warmup to --lr, 0 = none")
    aux_warmup_steps: int = option(
        0,
        "optimizer steps over which every loss term but the next-item one (contrastive, "
        "intent, ...) grows linearly from 0 to its full weight, 0 = none",
    )
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
        for flag, value, most in (
            ("--batch-size", self.batch_size, MAX_BATCH),
            ("--eval-batch-size", self.eval_batch_size, MAX_BATCH),
            ("--negatives", self.negatives, MAX_NEGATIVES),
            ("--loss-chunk", self.loss_chunk, MAX_NEGATIVES),
        ):
            if value > most:
                raise ConfigError(f"{flag} must be at most {most}, got {value}")
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
        if self.warmup_steps < 0 or self.decay_epochs < 0 or self.aux_warmup_steps < 0:
            raise ConfigError(
                "--warmup-steps, --aux-warmup-steps and --decay-epochs must be 0 or more"
            )
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


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


# Moved to famerec.runconfig (it reads the model registry); still importable from here.
MOVED_TO_RUNCONFIG = (
    "CLASSIC",
    "MOVED_KEYS",
    "PRESETS",
    "RunConfig",
    "absolute_paths",
    "config_options",
)


def __getattr__(name: str) -> Any:
    if name in MOVED_TO_RUNCONFIG:
        import famerec.runconfig

        return getattr(famerec.runconfig, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
