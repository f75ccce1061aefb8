"""The run config: the shared sections and the chosen model's own, resolved from defaults,
the model's registration, a preset and explicit settings.

Above `famerec.models`: a model's own section and defaults come from the registry (imported on
first use: the command line starts without torch). The sections themselves (`famerec.config`)
know no models. `famerec.config` and `famerec.training.pipeline` still export the names that
moved here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from famerec.config import (
    BUNDLED_ATTRIBUTES,
    SECTIONS,
    DataConfig,
    ModelConfig,
    ModelOptions,
    TrainConfig,
    check_choices,
    check_finite,
    check_option_sizes,
    check_types,
    describe,
    file_settings,
    flag_of,
    path_parts,
    typed_values,
)
from famerec.data.items import expand_table_sources
from famerec.errors import ConfigError, printable
from famerec.runs.dir import CONFIG, RunDir, input_copy

if TYPE_CHECKING:
    from famerec.models import ModelSpec

__all__ = [
    "CLASSIC",
    "MOVED_KEYS",
    "PATH_SETTINGS",
    "PRESETS",
    "RunConfig",
    "absolute_config",
    "absolute_paths",
    "config_options",
    "pretrain_config",
    "resolve_config",
]

# Settings that hold one file path each (not copied into the run: `file_settings` are).
PATH_SETTINGS = ("data.path", "data.items")

# A config.json is a few kilobytes; a file this large is no config (and is not read whole).
MAX_CONFIG_BYTES = 2**20
MESSAGE_LIMIT = 300  # characters of a loaded config's error: its values are shown, cut short
MAX_DEPTH = 64  # a config's values sit at depth 2; JSON nested deeper than this is not parsed

# Keys of settings that moved into a model's own section: old config.json files and old
# callers keep working.
MOVED_KEYS = {
    "model.num_experts": "fame.num_experts",
    "model.attn_residual": "fame.attn_residual",
    "train.freeze_epochs": "fame.freeze_epochs",
    "train.warm_start": "fame.warm_start",
}


def model_spec(name: str) -> ModelSpec:
    """The registration of model `name` (`famerec.models.model_spec`). The registry is imported
    on first use, so that `import famerec` and the command line start without torch."""
    from famerec.models import model_spec

    return model_spec(name)


def _options_class(name: str) -> type:
    return model_spec(name).options


def _model_sections() -> dict[str, type]:
    from famerec.models import MODELS

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
        names = {"data": self.data, "model": self.model, "train": self.train}
        for name, section in names.items():
            check_types(section, name)
        check_types(self.options, self.model.name)
        for section in (self.data, self.model, self.train, self.options):
            check_choices(section)
            check_finite(section)
        self.data.validate()
        spec = model_spec(self.model.name)  # a clear error for an unknown model
        self.model.validate()
        self.train.validate()
        if not isinstance(self.options, spec.options):
            raise ConfigError(f"the model section does not belong to model '{self.model.name}'")
        check_option_sizes(self.options)
        self.options.validate(self.model, self.train)
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
        """The config of `payload` (config.json's content), each value checked against its
        setting's type (`typed_values`); its ranges are `validate`'s."""
        if not isinstance(payload, dict):
            raise ConfigError(f"a config is an object of sections, got {describe(payload)}")
        for name, values in payload.items():
            if not isinstance(values, dict):
                shown = printable(name, limit=40)
                raise ConfigError(
                    f"config section '{shown}' must be an object of settings, got "
                    f"{describe(values)}"
                )
        payload = _absolute(_move_old_keys(payload))
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
        """The validated config saved in file `path` (a run's config.json, perhaps edited by
        hand): before anything is built from it, every setting has its type and range, else
        one line (ConfigError) names the file and the setting's key."""
        path = Path(path)
        try:
            with open(path, "rb") as handle:
                text = handle.read(MAX_CONFIG_BYTES + 1)
        except OSError as error:
            raise ConfigError(f"cannot read config {path}: {error.strerror or error}") from None
        if len(text) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: over {MAX_CONFIG_BYTES} bytes, too large for a config")
        deep = too_deep(text.decode(errors="replace"))  # before json.loads recurses as deep
        nested = f"nested too deeply for a config (over {MAX_DEPTH} levels)"
        if deep is not None:
            where = f"{printable(deep, limit=60)} is " if deep else ""
            raise ConfigError(f"{path}: {where}{nested}")
        try:
            payload = json.loads(text)
        except RecursionError:  # a nesting too_deep did not see (it reads every bracket)
            raise ConfigError(f"{path}: {nested}") from None
        except ValueError as error:  # not JSON, not UTF-8, an integer of too many digits
            raise ConfigError(f"cannot read config {path}: {error}") from None
        try:
            return cls.from_dict(payload).validate()
        except ConfigError as error:
            message = named_by_keys(str(error), saved_model_name(payload))
            raise ConfigError(f"{path}: {printable(message, limit=MESSAGE_LIMIT)}") from None

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


def _absolute(payload: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`payload` with its path settings absolute (`absolute_paths`): every RunConfig, however
    it is built, holds absolute paths (a `Path` given from Python becomes one string). A value
    of another type is left for the type check."""
    flat = {
        f"{section}.{name}": os.fspath(value)
        for section, values in payload.items()
        for name, value in values.items()
        if isinstance(value, str | os.PathLike)
    }
    for key, value in absolute_paths(flat).items():
        section, name = key.split(".", 1)
        payload[section][name] = value
    return payload


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
    return section_cls(**typed_values(name, section_cls, values))


JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:]')


def too_deep(text: str) -> str | None:
    """Where JSON `text` nests deeper than MAX_DEPTH, as the dotted keys of the objects on the
    way there ("" at the top); None where it does not. Reads tokens, never recurses."""
    stack: list[list] = []  # per open container: its bracket, its last key
    last_string = None
    for match in JSON_TOKEN.finditer(text):
        token = match.group()
        if token.startswith('"'):
            last_string = token[1:-1]
        elif token == ":":
            if stack and stack[-1][0] == "{":
                stack[-1][1] = last_string
        elif token in "[{":
            stack.append([token, None])
            if len(stack) > MAX_DEPTH:
                return ".".join(key for bracket, key in stack if bracket == "{" and key)
        elif stack:
            stack.pop()
    return None


def saved_model_name(payload: Any) -> str | None:
    """The model a config's content names, where it names a known one."""
    from famerec.models import MODELS

    model = payload.get("model") if isinstance(payload, dict) else None
    name = model.get("name", RunConfig().model.name) if isinstance(model, dict) else None
    return name if isinstance(name, str) and name in MODELS else None


FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def named_by_keys(message: str, model: str | None) -> str:
    """A validation message about a config file, each flag it names ("--hidden") written as the
    file's key ("model.hidden_size"): the file has keys, not flags."""
    keys = {flag: key for key, flag, _, _ in config_options(model)}
    return FLAG.sub(lambda match: keys.get(match.group(0), match.group(0)), message)


def absolute_paths(overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` with every path setting made absolute, `~` expanded: the data file and the
    item table (`PATH_SETTINGS`), and each comma-separated path of a `paths` field.

    Called as every RunConfig is built (`from_dict`, under `with_overrides` and `load`), the
    one place where paths become absolute: config.json keeps them so, and --resume, load and
    serve work from any directory."""
    sections = {**SECTIONS, **_model_sections()}
    result = dict(overrides)
    for key, value in overrides.items():
        if key in PATH_SETTINGS:
            result[key] = str(Path(value).expanduser().absolute()) if value else value
            continue
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


def absolute_config(config: RunConfig) -> RunConfig:
    """`config` itself: every RunConfig holds absolute paths from the moment it is built. Kept
    for callers of the name."""
    return config


def _flag_of(section: str, name: str) -> str:
    sections = {**SECTIONS, **_model_sections()}
    for f in dataclasses.fields(sections.get(section, ModelOptions)):
        if f.name == name:
            return flag_of(f)
    return "--" + name.replace("_", "-")


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


# Settings that may change when a run is resumed: they do not change what is computed. The
# data file may move (another checkout, another machine): what it holds must still be the
# data of the run's dataset.npz (check_same_data).
RESUMABLE_CHANGES = {
    "train.device",
    "train.threads",
    "train.compile",
    "train.eval_batch_size",
    "data.path",
    "data.items",  # the run keeps what it read of the item table (items.json)
}


def resolve_config(
    out: str | Path,
    overrides: dict[str, Any],
    preset: str | None = None,
    resume: bool = False,
) -> RunConfig:
    """The config of a run: defaults, then the preset, then explicit overrides.

    On --resume the saved config is the base, and explicit overrides may not change it.
    """
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}' (available: {', '.join(PRESETS)})")
    overrides = {MOVED_KEYS.get(key, key): value for key, value in overrides.items()}
    if "data.path" in overrides and "data.dataset" not in overrides:
        overrides["data.dataset"] = None
    saved_path = Path(out) / CONFIG
    if resume and saved_path.is_file():
        saved = RunConfig.load(saved_path)
        config = saved.with_overrides(overrides)  # paths made absolute, as saved
        flat, asked = saved.flat(), config.flat()
        files = file_settings(saved)
        changed = [
            f"{key.split('.', 1)[1]} (run has {flat.get(key)!r}, asked {asked.get(key)!r}"
            + (": not the same files as the run's copies" if key in files else "")
            + ")"
            for key in overrides
            if flat.get(key) != asked.get(key)
            and key not in RESUMABLE_CHANGES
            and not (key in files and same_files(RunDir(out), key, asked[key], files[key]))
        ]
        if changed:
            raise ConfigError("cannot change settings of a run on --resume: " + ", ".join(changed))
        return config.validate()
    model_name = overrides.get("model.name", RunConfig().model.name)
    # e.g. GRU4Rec's single layer, and the model's recipe unless the preset is "classic"
    own_defaults = model_spec(model_name).own_defaults(recipe=preset != CLASSIC)
    layers = {"model.name": model_name, **own_defaults, **PRESETS.get(preset, {}), **overrides}
    config = expand_table_sources(RunConfig().with_overrides(layers)).validate()  # --attributes
    if resume and RunDir(out).in_first_stage and not config.train.pretrain:
        # its own config.json is written after its SASRec stage: the flags are all there is
        raise ConfigError(
            f"--out {out} holds a --pretrain run paused in its SASRec stage; resume it with "
            "the flags it was started with (--pretrain included) and --resume"
        )
    return config


def same_files(run_dir: RunDir, key: str, asked: Any, saved: list[str]) -> bool:
    """Whether setting `key` names, at `asked`, the files `saved` the run keeps copies of: a
    run may resume where its files lie elsewhere (another checkout, another machine)."""
    asked_parts = path_parts(str(asked)) if asked else []
    if len(asked_parts) != len(saved):
        return False
    for i, (new, old) in enumerate(zip(asked_parts, saved)):
        if new == BUNDLED_ATTRIBUTES or old == BUNDLED_ATTRIBUTES:
            if new != old:
                return False
            continue
        copy = input_copy(run_dir, key, i)
        try:
            if Path(new).read_bytes() != copy.read_bytes():
                return False
        except OSError:  # either file missing or unreadable: not known to be the same
            return False
    return True


def pretrain_config(config: RunConfig) -> RunConfig:
    """The run that a `--pretrain` run starts from (FAME: SASRec): same data, sizes, training
    settings and seed, with the pretraining model's default settings of its own. A setting of
    the pretraining model's recipe that this run leaves at its own model's default takes the
    recipe's value (FAME's `--pretrain` trains SASRec with SASRec's recipe). A recipe setting of
    the pretraining model's own options (SASRec's `--block torch-init`) applies while this run
    keeps any value of its own recipe: not under `--preset classic`, which keeps none, nor when
    every recipe value is overridden."""
    spec = model_spec(config.model.name)
    own = {**RunConfig().with_overrides({"model.name": spec.name}).flat(), **spec.own_defaults()}
    flat = config.flat()
    on_recipe = any(flat[key] == value for key, value in spec.recipe)
    recipe = {
        key: value
        for key, value in model_spec(spec.pretrain).recipe
        if (flat[key] == own[key] if key in flat else on_recipe)
    }
    return config.with_overrides(
        {"model.name": spec.pretrain, "train.pretrain": False, "train.init_from": None, **recipe}
    ).validate()


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
            flag = flag_of(f)
            hint = hints[f.name]
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            base = args[0] if args else hint
            options.append((f"{section_name}.{f.name}", flag, f, base))
    return options
