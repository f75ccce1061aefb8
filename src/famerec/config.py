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

FAME_HEADS = (1, 2, 4, 8, 16)
FAME_HIDDEN = (64, 128)
MAX_EXPERTS = 32


def option(default: Any, help: str, flag: str | None = None, choices: tuple | None = None):
    """A config field with the metadata the CLI generator needs."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


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


@dataclass
class ModelConfig:
    name: str = option("sasrec", "model to train", flag="--model", choices=("sasrec", "fame"))
    hidden_size: int = option(64, "hidden size d", flag="--hidden")
    num_layers: int = option(2, "number of Transformer layers", flag="--layers")
    num_heads: int = option(2, "attention heads H", flag="--heads")
    num_experts: int = option(
        4, "FAME: query experts N per head (1 = FAME w/o MoE)", flag="--experts"
    )
    dropout: float = option(0.5, "dropout rate (0.5 is SASRec's Amazon setting)")
    max_len: int = option(50, "most recent items kept per sequence")
    attn_residual: bool = option(
        True, "FAME: residual connection around the last layer's attention, per head"
    )

    def validate(self) -> None:
        if self.hidden_size <= 0 or self.num_layers <= 0 or self.num_heads <= 0:
            raise ConfigError("--hidden, --layers and --heads must be positive")
        if self.name == "fame":
            if self.num_heads not in FAME_HEADS:
                raise ConfigError(f"FAME needs --heads in {FAME_HEADS}, got {self.num_heads}")
            if self.hidden_size not in FAME_HIDDEN:
                raise ConfigError(f"FAME needs --hidden in {FAME_HIDDEN}, got {self.hidden_size}")
            if not 1 <= self.num_experts <= MAX_EXPERTS:
                raise ConfigError(
                    f"FAME needs --experts from 1 to {MAX_EXPERTS}, got {self.num_experts}"
                )
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"hidden size {self.hidden_size} is not divisible by {self.num_heads} heads"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.max_len <= 0:
            raise ConfigError(f"--max-len must be positive, got {self.max_len}")


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
    init_from: str | None = option(None, "FAME: start from this finished SASRec run directory")
    pretrain: bool = option(False, "FAME: first train SASRec into OUT/pretrain, then start from it")
    freeze_epochs: int = option(
        0,
        "FAME from SASRec: train only the new parts for this many epochs before fine-tuning "
        "everything (0 = end to end from the start, as in the paper)",
    )

    warm_start: bool = option(
        False,
        "FAME from SASRec: start the new parts close to SASRec (expert queries from SASRec's "
        "last query, W_f as head slices, uniform gate, zero FFN') instead of random (not in "
        "the paper)",
    )

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
        if self.threads < 0 or self.loss_chunk < 0:
            raise ConfigError("--threads and --loss-chunk must be 0 or more")
        if self.init_from is not None and self.pretrain:
            raise ConfigError("use either --init-from RUN_DIR or --pretrain, not both")
        if self.freeze_epochs < 0:
            raise ConfigError(f"--freeze-epochs must be 0 or more, got {self.freeze_epochs}")
        if self.freeze_epochs and self.init_from is None and not self.pretrain:
            raise ConfigError("--freeze-epochs needs --init-from or --pretrain")
        if self.warm_start and self.init_from is None and not self.pretrain:
            raise ConfigError("--warm-start needs --init-from or --pretrain")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        for section in (self.data, self.model, self.train):
            check_choices(section)
            check_finite(section)
        self.data.validate()
        self.model.validate()
        self.train.validate()
        if self.model.name != "fame" and (self.train.init_from or self.train.pretrain):
            raise ConfigError("--init-from and --pretrain apply to --model fame only")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> RunConfig:
        sections = {}
        for section in dataclasses.fields(cls):
            section_cls = SECTIONS[section.name]
            values = dict(payload.get(section.name, {}))
            known = {f.name for f in dataclasses.fields(section_cls)}
            unknown = set(values) - known
            if unknown:
                raise ConfigError(f"unknown {section.name} options in config: {sorted(unknown)}")
            sections[section.name] = section_cls(**values)
        return cls(**sections)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        try:
            payload = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot read config {path}: {error}") from None
        return cls.from_dict(payload)

    def with_overrides(self, overrides: dict[str, Any]) -> RunConfig:
        """A copy with dotted overrides applied, e.g. {"model.hidden_size": 128}."""
        payload = self.to_dict()
        for key, value in overrides.items():
            section, name = key.split(".", 1)
            payload[section][name] = value
        return RunConfig.from_dict(payload)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}

# Named bundles of overrides, applied before explicit flags.
PRESETS: dict[str, dict[str, Any]] = {
    # A few minutes on a laptop CPU: enough epochs to see learning, not to converge.
    "quick": {"train.epochs": 15, "train.patience": 3},
    # The paper's protocol: train to early stop.
    "paper": {"train.epochs": 200, "train.patience": 10},
}


def config_options() -> list[tuple[str, str, dataclasses.Field, type]]:
    """(dotted key, flag, field, python type) for every config field, in declaration order."""
    options = []
    for section_name, section_cls in SECTIONS.items():
        hints = typing.get_type_hints(section_cls)
        for f in dataclasses.fields(section_cls):
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            hint = hints[f.name]
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            base = args[0] if args else hint
            options.append((f"{section_name}.{f.name}", flag, f, base))
    return options
