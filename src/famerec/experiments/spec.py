"""A frozen experiment spec (TOML): datasets, models with staged grids, seeds, selection rule.

Settings are `famerec train` config keys ("model.num_heads", "train.lr", ...), written either
as dotted TOML keys or quoted. A value may instead be a reference to another model's selected
run, resolved when that run is finished:

    train.init_from = { selected = "sasrec", match = ["model.hidden_size"] }  # its run directory
    train.lr = { selected = "fame", get = "train.lr" }         # a config value of that run
    train.epochs = { selected = "fame", get = "epochs_run" }   # a metrics.json value

`match` restricts the choice to that model's trials whose values of these keys equal the
referring run's; the referred run always has the referring run's seed.

Where a spec's runs, records and report go (`runs`, `records`, `report`, relative to the
spec's folder) stays inside the repository the spec belongs to, the folder above the spec's
(`OUTPUTS`), unless the command is given `--allow-outside` (`load_spec(allow_outside=True)`).
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from famerec.errors import FamerecError, printable
from famerec.runconfig import MOVED_KEYS, config_options

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SEED_KEY = "train.seed"
SPLIT = "valid"  # selection reads the validation split only
INIT_FROM = "train.init_from"  # the run a run starts from
PRETRAIN = "train.pretrain"
SEED_STAGE = "seeds"  # the selected setting rerun with the other seeds
SUPPORT_STAGE = "support"  # runs that another model's runs start from
CONTROL_STAGE = "control"  # a control's one setting, with every seed
RESERVED_STAGES = (SEED_STAGE, SUPPORT_STAGE, CONTROL_STAGE)
# Spec keys of the folders that the experiment commands write, and their Spec attributes.
OUTPUTS = {"records": "records_dir", "report": "report_dir", "runs": "runs_dir"}


class SpecError(FamerecError):
    """An invalid experiment spec."""


@dataclass(frozen=True)
class Ref:
    """A value taken from another model's selected run (see the module docstring)."""

    selected: str
    match: tuple[str, ...] = ()
    get: str | None = None

    def describe(self) -> str:
        what = f"{self.get} of " if self.get else ""
        match = f" with the same {', '.join(self.match)}" if self.match else ""
        return f"{what}the selected {self.selected} run{match}"


@dataclass
class Stage:
    name: str
    settings: dict[str, Any]  # fixed within the stage
    points: list[dict[str, Any]]  # one per trial: the grid's product or explicit points
    from_best: tuple[str, ...] = ()  # keys taken from the best trial of the earlier stages


@dataclass
class Entry:
    """A model of the comparison: fixed settings and the stages of its search."""

    name: str
    label: str
    settings: dict[str, Any]
    stages: list[Stage]
    paper: str | None = None  # its column in the paper's table
    pending: str | None = None  # why it is not run yet
    control: bool = False  # one setting, no search: run with every seed
    select_from: tuple[str, ...] = ()  # stages whose trials compete for selection
    versus: str | None = None  # the model (its control) this one is also tested against
    screen: bool = False  # a control whose other seeds run only if its first beats `versus`
    prune: bool = True  # `prune = false`: under [selection.pruning], its trials train to their end

    @property
    def trials(self) -> int:
        return sum(len(stage.points) for stage in self.stages)

    def values_of(self, key: str) -> list[Any]:
        """Every value the entry gives `key`: its own, its stages' and their points'."""
        values = [self.settings[key]] if key in self.settings else []
        for stage in self.stages:
            values += [stage.settings[key]] if key in stage.settings else []
            values += [point[key] for point in stage.points if key in point]
        return values

    def refs(self) -> list[Ref]:
        values = list(self.settings.values())
        for stage in self.stages:
            values += list(stage.settings.values())
            values += [v for point in stage.points for v in point.values()]
        return [value for value in values if isinstance(value, Ref)]

    def starts_from(self) -> list[str]:
        """The entries whose selected runs this one starts from: `train.init_from` references
        to a run (not to a value of it, `get`)."""
        refs = [v for v in self.values_of(INIT_FROM) if isinstance(v, Ref) and v.get is None]
        return sorted({ref.selected for ref in refs})

    @property
    def from_scratch(self) -> bool:
        """Whether its runs train from scratch: no `train.init_from` and no `train.pretrain`."""
        return not self.values_of(INIT_FROM) and not any(self.values_of(PRETRAIN))


@dataclass(frozen=True)
class Pruning:
    """Successive halving over each stage's trials (`[selection.pruning]`): at each rung (an
    epoch), the trials still searched are ranked on their best validation score up to it, and
    only the best 1/reduction of them (rounded up) train on."""

    rungs: tuple[int, ...]
    reduction: int

    def keep(self, count: int) -> int:
        return -(-count // self.reduction)


@dataclass
class Dataset:
    name: str
    settings: dict[str, Any]
    paper: str | None = None


class Series(NamedTuple):
    """The trials of one stage drawn in a figure: `entry:stage` of the spec, or
    `spec:entry:stage` of another spec of its folder (`source`, its name), read from that
    spec's records (one figure with lines that different specs trained)."""

    entry: str
    stage: str
    source: str | None = None

    def __str__(self) -> str:
        return ":".join(filter(None, (self.source, self.entry, self.stage)))


@dataclass
class Figure:
    """Metrics of the trials of some stages against one setting (paper Figs. 5-6): validation
    by default; `split = "test"` draws the test metrics of the trials trained to their end, as
    the paper's figures do (for reading only: selection reads validation)."""

    name: str
    title: str
    x: str
    series: list[Series]
    reference: Series | None = None  # its best-validation trial's value, drawn as a line
    metrics: tuple[str, ...] = ("NDCG@10", "HR@10")
    split: str = "valid"  # or "test"


@dataclass
class Spec:
    path: Path
    name: str
    title: str
    metric: str
    seeds: list[int]
    baseline: str | None
    base: dict[str, Any]
    datasets: list[Dataset]
    entries: list[Entry]
    figures: list[Figure] = field(default_factory=list)
    paper: Path | None = None
    pruning: Pruning | None = None  # None: every trial trains to its own early stop
    records_dir: Path = Path()
    report_dir: Path = Path()
    runs_dir: Path = Path()

    @property
    def draws_test(self) -> bool:
        """Whether a figure draws the test split (`split = "test"`)."""
        return any(figure.split == "test" for figure in self.figures)

    def prunes(self, entry: Entry) -> bool:
        """Whether the pruned search stops this entry's trials at rungs."""
        return self.pruning is not None and entry.prune and not entry.control

    def run_settings(self, dataset: Dataset, entry: Entry, names: dict[str, Any]) -> dict[str, Any]:
        """A run's settings as the spec writes them, references unresolved: `[base]`, then the
        dataset's, the model entry's and the stage point's (`names`), each over the one before."""
        return {**self.base, **dataset.settings, **entry.settings, **names}

    def entry(self, name: str) -> Entry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise SpecError(f"{self.path}: no model '{name}' in [models]")

    def pending(self) -> str:
        """The models that are not run, grouped by why: "a, b: reason; c: other reason"."""
        reasons: dict[str, list[str]] = {}
        for entry in self.entries:
            if entry.pending is not None:
                reasons.setdefault(str(entry.pending), []).append(entry.name)
        return "; ".join(f"{', '.join(names)}: {why}" for why, names in reasons.items())

    def run_order(self) -> list[Entry]:
        """The entries that are run (not pending), referenced ones before those referring."""
        order: list[Entry] = []

        def visit(entry: Entry, chain: tuple[str, ...]) -> None:
            if entry in order:
                return
            if entry.name in chain:
                raise SpecError(f"{self.path}: models refer to each other in a cycle: {chain}")
            for ref in entry.refs():
                visit(self.entry(ref.selected), (*chain, entry.name))
            order.append(entry)

        for entry in self.entries:
            if entry.pending is None:
                visit(entry, ())
        return order


def relative(path: str | Path) -> str:
    """`path` relative to the working directory where it lies below it, else absolute, so
    that records written from the repository root name repository paths."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@functools.cache
def known_options() -> dict[str, tuple[str, type]]:
    """Every `famerec train` config key -> (flag, type): the shared keys and every registered
    model's own ("fame.num_experts")."""
    from famerec.models import MODELS

    return {
        key: (flag, kind) for name in (None, *MODELS) for key, flag, _, kind in config_options(name)
    }


def fits(value: Any, kind: type) -> bool:
    """Whether a TOML value suits a config field of type `kind` (references always do)."""
    if isinstance(value, dict):
        return True
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    return isinstance(value, (int, float) if kind is float else kind)


# -- loading ---------------------------------------------------------------------------------

_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_METRICS = tuple(f"{m}@{k}" for m in ("HR", "NDCG") for k in (5, 10, 20))


_LOADING: set[Path] = set()  # the specs being read (a figure's series may name another)


def load_spec(path: str | Path, allow_outside: bool = False) -> Spec:
    """Read and check a spec; every problem is a SpecError naming the file. Its output folders
    must lie inside its repository (the folder above the spec's) unless `allow_outside`."""
    path = Path(path)
    try:
        payload = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"experiment spec {path} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"cannot read experiment spec {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: invalid TOML: {error}") from None
    _LOADING.add(path.resolve())  # a figure may read another spec that reads this one
    try:
        spec = _Loader(path).spec(payload)
    finally:
        _LOADING.discard(path.resolve())
    if not allow_outside:
        check_outputs_inside(spec, payload)
    return spec


def check_outputs_inside(spec: Spec, payload: dict) -> None:
    """Refuse a `runs`, `records` or `report` folder outside the spec's repository, the folder
    above the spec's. Paths are compared as written (`..` counts; links are not followed)."""
    repository = Path(os.path.abspath(spec.path)).parent.parent
    for key, attribute in OUTPUTS.items():
        folder = Path(os.path.abspath(getattr(spec, attribute)))
        if folder != repository and repository not in folder.parents:
            written = printable(repr(payload.get(key, str(folder))))
            raise SpecError(
                f"{spec.path}: {key} = {written} is outside the repository of the spec "
                f"({repository}, the folder above the spec's); use a folder inside it, or pass "
                "--allow-outside"
            )


class _Loader:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, message: str) -> SpecError:
        return SpecError(f"{self.path}: {message}")

    def spec(self, payload: dict) -> Spec:
        self.split(
            payload,
            "the spec",
            {"name", "title", "paper", "records", "report", "runs"},
            {"selection", "base", "datasets", "models", "figures"},
        )
        name = self.name(self.string(payload, "name", "the spec", required=True), "the spec")
        selection = self.table(payload, "selection")
        self.split(
            selection, "[selection]", {"metric", "seeds", "budget", "baseline", "split", "pruning"}
        )
        if selection.get("split", SPLIT) != SPLIT:
            raise self.fail('selection uses the validation split only (split = "valid")')
        metric = selection.get("metric", "NDCG@10")
        if metric not in _METRICS:
            raise self.fail(f"unknown selection metric '{metric}' (one of {', '.join(_METRICS)})")
        seeds = selection.get("seeds", [42])
        if (
            not isinstance(seeds, list)
            or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
            or len(set(seeds)) != len(seeds)
        ):
            raise self.fail("selection.seeds must be a list of distinct integers")
        base = self.settings(self.table(payload, "base"), "[base]")
        datasets = [
            self.dataset(key, value) for key, value in self.table(payload, "datasets").items()
        ]
        if not datasets:
            raise self.fail("no [datasets.NAME] table")
        entries = [self.entry(key, value) for key, value in self.table(payload, "models").items()]
        if not entries:
            raise self.fail("no [models.NAME] table")
        here = self.path.parent
        records, report, runs = (self.string(payload, key, "the spec") for key in OUTPUTS)
        spec = Spec(
            path=self.path,
            name=name,
            title=self.string(payload, "title", "the spec") or name,
            metric=metric,
            seeds=seeds,
            baseline=selection.get("baseline"),
            base=base,
            datasets=datasets,
            entries=entries,
            paper=here / payload["paper"] if "paper" in payload else None,
            records_dir=here / (records or f"../results/records/{name}"),
            report_dir=here / (report or "../results"),
            runs_dir=here / (runs or f"../runs/{name}"),
            pruning=self.pruning(selection.get("pruning")),
        )
        self.check_references(spec)
        self.check_budget(spec, selection.get("budget"))
        self.check_prune(spec)
        spec.figures = [self.figure(spec, f) for f in payload.get("figures", [])]
        if spec.baseline is not None:
            spec.entry(spec.baseline)
        return spec

    def check_prune(self, spec: Spec) -> None:
        """`prune = false` keeps a searched entry's trials from being pruned; where nothing
        would prune them (no [selection.pruning], or a control, which runs no search) it would
        do nothing, so it is refused rather than silently ignored."""
        for entry in spec.entries:
            if entry.prune:
                continue
            if spec.pruning is None:
                raise self.fail(
                    f"[models.{entry.name}]: prune = false does nothing without "
                    "[selection.pruning]; remove it"
                )
            if entry.control:
                raise self.fail(
                    f"[models.{entry.name}]: prune = false does nothing on a control (it runs "
                    "one setting, never pruned); remove it"
                )

    # -- tables ----------------------------------------------------------------------------

    def name(self, name: str, where: str) -> str:
        """Names become parts of paths and run ids."""
        if not name.replace("-", "").replace("_", "").isalnum():
            raise self.fail(f"{where}: name '{name}' may hold only letters, digits, '-' and '_'")
        return name

    def table(self, payload: dict, key: str) -> dict:
        value = payload.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(f"'{key}' must be a table")
        return value

    def string(self, payload: dict, key: str, where: str, required: bool = False) -> str | None:
        value = payload.get(key)
        if value is None and required:
            raise self.fail(f"{where} needs '{key}'")
        if value is not None and not isinstance(value, str):
            raise self.fail(f"'{key}' in {where} must be a string")
        return value

    def split(
        self,
        payload: dict,
        where: str,
        meta: set[str],
        tables: set[str] = frozenset(),
        settings: bool = False,
    ) -> dict[str, Any]:
        """Check the keys of a table: metadata, known sub-tables, and (if allowed) settings."""
        sections = {key.split(".", 1)[0] for key in known_options()}
        for key in payload:
            if key in meta or key in tables or (settings and key in sections):
                continue
            raise self.fail(f"unknown key '{key}' in {where}")
        return {key: payload[key] for key in payload if key in meta}

    def settings(self, payload: dict, where: str, prefix: str = "") -> dict[str, Any]:
        """Nested or dotted TOML keys -> {"section.name": value}, every key checked."""
        flat: dict[str, Any] = {}
        for key, value in payload.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and "selected" not in value:
                flat.update(self.settings(value, where, prefix=dotted + "."))
                continue
            dotted = MOVED_KEYS.get(dotted, dotted)
            if dotted not in known_options():
                raise self.fail(
                    f"unknown setting '{dotted}' in {where} (settings are `famerec train` "
                    "config keys such as model.num_heads or train.lr)"
                )
            if dotted == SEED_KEY:
                raise self.fail(f"{where} sets {SEED_KEY}; seeds come from selection.seeds")
            flat[dotted] = self.value(value, f"{dotted} in {where}")
            kind = known_options()[dotted][1]
            if not fits(value, kind):
                raise self.fail(
                    f"{dotted} in {where} must be {_KIND_NAMES.get(kind, kind)}, got {value!r}"
                )
        return flat

    def value(self, value: Any, where: str) -> Any:
        if isinstance(value, dict):
            unknown = set(value) - {"selected", "match", "get"}
            match = value.get("match", [])
            if unknown or not isinstance(value["selected"], str) or not isinstance(match, list):
                raise self.fail(
                    f'{where}: a reference is {{ selected = "MODEL", match = [KEYS], get = "KEY" }}'
                )
            for key in match:
                if key not in known_options():
                    raise self.fail(f"{where}: unknown setting '{key}' in match")
            return Ref(value["selected"], tuple(match), value.get("get"))
        if isinstance(value, (list, dict)) or value is None:
            raise self.fail(f"{where}: a setting must be a single value, got {value!r}")
        return value

    def pruning(self, payload: Any) -> Pruning | None:
        if payload is None:
            return None
        where = "[selection.pruning]"
        if not isinstance(payload, dict):
            raise self.fail(f"{where} must be a table")
        self.split(payload, where, {"rungs", "reduction"})
        rungs, reduction = payload.get("rungs"), payload.get("reduction")
        if (
            not isinstance(rungs, list)
            or not rungs
            or not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in rungs)
            or rungs != sorted(set(rungs))
        ):
            raise self.fail(f"{where}: rungs must be increasing epochs, e.g. rungs = [3, 9]")
        if not isinstance(reduction, int) or isinstance(reduction, bool) or reduction < 2:
            raise self.fail(f"{where}: reduction must be an integer of 2 or more, e.g. 3")
        return Pruning(tuple(rungs), reduction)

    def dataset(self, name: str, payload: Any) -> Dataset:
        where = f"[datasets.{name}]"
        self.name(name, where)
        if not isinstance(payload, dict):
            raise self.fail(f"{where} must be a table")
        meta = self.split(payload, where, {"paper"}, settings=True)
        settings = self.settings({k: v for k, v in payload.items() if k not in meta}, where)
        if not any(key.startswith("data.") for key in settings):
            settings["data.dataset"] = name  # an empty table names a bundled dataset
        if isinstance(settings.get("data.path"), str):  # relative to the spec's folder
            settings["data.path"] = relative(self.path.parent / settings["data.path"])
        return Dataset(name, settings, paper=meta.get("paper"))

    def entry(self, name: str, payload: Any) -> Entry:
        where = f"[models.{name}]"
        self.name(name, where)
        if not isinstance(payload, dict):
            raise self.fail(f"{where} must be a table")
        meta = self.split(
            payload,
            where,
            {"label", "paper", "pending", "control", "select_from", "versus", "screen", "prune"},
            {"stages"},
            settings=True,
        )
        settings = self.settings(
            {k: v for k, v in payload.items() if k not in meta and k != "stages"}, where
        )
        stages = [
            self.stage(f"{where} stage {i + 1}", s) for i, s in enumerate(payload.get("stages", []))
        ]
        pending = meta.get("pending")
        if pending is True:
            pending = "not implemented yet"
        control = bool(meta.get("control", False))
        screen = meta.get("screen", False)
        if not isinstance(screen, bool) or (screen and not (control and meta.get("versus"))):
            raise self.fail(
                f"{where}: screen = true (its other seeds run only if its first seed beats its "
                "control on validation) needs control = true and versus"
            )
        prune = meta.get("prune", True)
        if not isinstance(prune, bool):
            raise self.fail(f"{where}: prune must be true or false")
        if control and stages:
            raise self.fail(f"{where}: a control runs one setting and has no stages")
        if not control and not stages and pending is None:
            raise self.fail(f"{where} has no [[models.{name}.stages]] (or set control = true)")
        names = [stage.name for stage in stages]
        if len(set(names)) != len(names) or set(RESERVED_STAGES) & set(names):
            raise self.fail(
                f"{where}: stage names must be distinct and not {', '.join(RESERVED_STAGES)}"
            )
        select_from = tuple(meta.get("select_from", names))
        for stage_name in select_from:
            if stage_name not in names:
                raise self.fail(f"{where}: select_from names an unknown stage '{stage_name}'")
        for i, stage in enumerate(stages):
            if stage.from_best and i == 0:
                raise self.fail(f"{where}: the first stage cannot take from_best")
        return Entry(
            name=name,
            label=meta.get("label", name),
            settings=settings,
            stages=stages,
            paper=meta.get("paper"),
            pending=pending or None,
            control=control,
            select_from=select_from,
            versus=meta.get("versus"),
            screen=screen,
            prune=prune,
        )

    def stage(self, where: str, payload: Any) -> Stage:
        if not isinstance(payload, dict):
            raise self.fail(f"{where} must be a table")
        self.split(payload, where, {"name", "from_best", "points"}, {"grid", "settings"})
        name = self.string(payload, "name", where, required=True)
        where = where.rsplit(" stage", 1)[0] + f" stage '{name}'"
        settings = self.settings(self.table(payload, "settings"), where)
        grid = self.table(payload, "grid")
        points = payload.get("points")
        if points is not None and grid:
            raise self.fail(f"{where}: give a grid or points, not both")
        if points is not None:
            if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
                raise self.fail(f"{where}: points must be a list of tables")
            points = [self.settings(point, where) for point in points]
        else:
            axes = self.grid(grid, where)
            points = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
        if not points or not all(points):
            raise self.fail(f"{where} has no trials (give a grid or points)")
        from_best = payload.get("from_best", [])
        if not isinstance(from_best, list) or not all(k in known_options() for k in from_best):
            raise self.fail(f"{where}: from_best must list settings such as model.num_heads")
        for point in points:
            overlap = (set(point) | set(settings)) & set(from_best)
            if overlap:
                raise self.fail(f"{where} both searches and takes from_best {sorted(overlap)}")
            for value in point.values():
                if isinstance(value, Ref):
                    raise self.fail(f"{where}: references belong to fixed settings, not grids")
        return Stage(name, settings, points, tuple(from_best))

    def grid(self, payload: dict, where: str, prefix: str = "") -> dict[str, list]:
        axes: dict[str, list] = {}
        for key, values in payload.items():
            if isinstance(values, dict):
                axes.update(self.grid(values, where, prefix=f"{prefix}{key}."))
                continue
            dotted = f"{prefix}{key}"
            if not isinstance(values, list) or not values:
                raise self.fail(f"{where}: grid.{dotted} must be a non-empty list of values")
            checked = [self.settings({dotted: v}, where)[dotted] for v in values]
            if len(set(map(repr, checked))) != len(checked):
                raise self.fail(f"{where}: grid.{dotted} repeats a value")
            axes[dotted] = checked
        return axes

    def figure(self, spec: Spec, payload: Any) -> Figure:
        if not isinstance(payload, dict):
            raise self.fail("[[figures]] entries must be tables")
        where = f"figure '{payload.get('name')}'"
        self.split(
            payload, where, {"name", "title", "x", "series", "reference", "metrics", "split"}
        )
        name = self.string(payload, "name", "a [[figures]] table", required=True)
        x = self.string(payload, "x", where, required=True)
        if x not in known_options():
            raise self.fail(f"{where}: unknown setting '{x}' for x")

        def series(text: Any) -> Series:
            parts = str(text).split(":")
            if len(parts) == 3:  # another spec's
                source, entry_name, stage_name = parts
                other = spec.path.parent / f"{source}.toml"
                if source == spec.name or not other.is_file():
                    raise self.fail(
                        f"{where}: '{text}': SPEC:MODEL:STAGE must name another spec of "
                        f"{spec.path.parent.name}/"
                    )
                if other.resolve() in _LOADING:  # it draws from this spec too: checked there
                    return Series(entry_name, stage_name, source)
                entries = {e.name: e for e in load_spec(other, allow_outside=True).entries}
                found = entries.get(entry_name)
                if found is None or stage_name not in [s.name for s in found.stages]:
                    raise self.fail(f"{where}: '{text}': no such MODEL:STAGE in {source}")
                return Series(entry_name, stage_name, source)
            if len(parts) != 2:
                raise self.fail(f"{where}: '{text}' is not MODEL:STAGE (or SPEC:MODEL:STAGE)")
            entry_name, stage_name = parts
            entry = spec.entry(entry_name)
            if stage_name not in [s.name for s in entry.stages]:
                raise self.fail(f"{where}: '{text}' is not MODEL:STAGE of the spec")
            return Series(entry_name, stage_name)

        metrics = tuple(payload.get("metrics", Figure.metrics))
        if not set(metrics) <= set(_METRICS):
            raise self.fail(f"{where}: metrics must be among {', '.join(_METRICS)}")
        split = payload.get("split", Figure.split)
        if split not in ("valid", "test"):
            raise self.fail(f'{where}: split must be "valid" or "test", got {split!r}')
        return Figure(
            name=name,
            title=self.string(payload, "title", where) or name,
            x=x,
            series=[series(s) for s in payload.get("series", [])],
            reference=series(payload["reference"]) if "reference" in payload else None,
            metrics=metrics,
            split=split,
        )

    # -- whole-spec checks -------------------------------------------------------------------

    def check_references(self, spec: Spec) -> None:
        runnable = {entry.name for entry in spec.entries if entry.pending is None}
        for entry in spec.entries:
            if entry.versus is not None and (
                not isinstance(entry.versus, str)
                or entry.versus not in runnable
                or entry.versus == entry.name
            ):
                raise self.fail(
                    f"[models.{entry.name}] versus = {entry.versus!r} must name another model "
                    "that is not pending"
                )
            for ref in entry.refs():
                target = spec.entry(ref.selected)
                if target.pending is not None and entry.pending is None:
                    raise self.fail(
                        f"[models.{entry.name}] refers to '{ref.selected}', which is pending"
                    )
        spec.run_order()  # raises on cycles

    def check_budget(self, spec: Spec, budget: Any) -> None:
        """Equal budget: every searched model gets the same number of validation trials."""
        searched = {e.name: e.trials for e in spec.entries if e.pending is None and not e.control}
        if budget is not None:
            unequal = {name: n for name, n in searched.items() if n != budget}
            if unequal:
                counts = ", ".join(f"{name} {n}" for name, n in unequal.items())
                raise self.fail(
                    f"selection.budget is {budget} validation trials per model, but {counts}"
                )
        elif len(set(searched.values())) > 1:
            counts = ", ".join(f"{name} {n}" for name, n in searched.items())
            raise self.fail(f"models get unequal numbers of validation trials: {counts}")
