"""A spec expanded into runs, given what is finished: staged trials, selection, seed reruns.

Selection reads validation metrics only. A stage that takes `from_best` values, the seed
reruns of a model and the runs that refer to another model's selected run wait until what they
depend on is finished; until then they are counted as waiting slots without an id.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from famerec.errors import ConfigError
from famerec.experiments.pruning import Verdict, decide, read_log, rung_score
from famerec.experiments.spec import (
    CONTROL_STAGE,
    SEED_KEY,
    SEED_STAGE,
    SPLIT,
    SUPPORT_STAGE,
    Dataset,
    Entry,
    Ref,
    Spec,
    SpecError,
    relative,
)
from famerec.runconfig import MOVED_KEYS, RunConfig
from famerec.runs.dir import LOG, logged_seconds

DONE, READY, WAITING = "done", "ready", "waiting"
PRUNED = "pruned"  # a trial the pruned search stopped at a rung: it never continues
# Settings a finished run may differ in from its spec: where it ran, and paths (relative to
# where it was started).
NOT_FROZEN = ("train.device", "train.threads", "data.path")
RECORD = "record.json"
RESTORED = "restored.json"  # beside a record: its run retrained for its weights (Plan.restore)
_PLAIN = re.compile(r"^[A-Za-z0-9._+-]+$")


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def describe_settings(settings: dict[str, Any]) -> str:
    """`num_heads=2,hidden_size=64`: the short names of the keys (the full key where two share
    a short name), sorted, values as written."""
    short = {key: key.rsplit(".", 1)[-1] for key in settings}
    counts = Counter(short.values())
    names = {key: short[key] if counts[short[key]] == 1 else key for key in settings}
    return ",".join(
        f"{names[key]}={format_value(settings[key])}" for key in sorted(settings, key=names.get)
    )


def pruned_rung(record: dict[str, Any]) -> int | None:
    """The rung a record says its trial was pruned at ("pruned at rung 3: ..."), else None."""
    found = re.match(r"pruned at rung (\d+)", str(record.get("pruned", "")))
    return int(found.group(1)) if found else None


def given(run: Run) -> dict[str, Any]:
    """A run's settings as its spec gives them (references unresolved where it is recorded)."""
    if run.settings is not None:
        return run.settings
    return run.unresolved[1] if run.unresolved is not None else {}


def run_slug(settings: dict[str, Any], seed: int) -> str:
    """The run's directory name: its searched settings and its seed, readable where possible."""
    parts = [describe_settings(settings)] if settings else []
    text = ",".join([*parts, f"seed={seed}"])
    values_plain = all(_PLAIN.match(format_value(v)) for v in settings.values())
    if len(text) <= 120 and values_plain:
        return text
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return f"settings-{digest},seed={seed}"


def flat_config(payload: dict[str, Any]) -> dict[str, Any]:
    """config.json's {"section": {"name": value}} -> {"section.name": value}, with the keys of
    older config files under their present names."""
    flat = {f"{s}.{k}": v for s, section in payload.items() for k, v in section.items()}
    return {MOVED_KEYS.get(key, key): value for key, value in flat.items()}


DEFAULTS = flat_config(RunConfig().to_dict())


@functools.cache
def option_defaults(model: Any) -> dict[str, Any]:
    """The defaults of `model`'s own options, as dotted keys. A record made before one of them
    existed holds no value for it; it ran as the option's default does (a new option's default
    keeps the old behaviour; a model's recipe may change what new runs get, not that)."""
    try:
        flat = RunConfig().with_overrides({"model.name": model}).flat()
    except (ConfigError, TypeError):  # no such model here: its records name what they hold
        return {}
    return {key: value for key, value in flat.items() if key.startswith(f"{model}.")}


@dataclass(eq=False)  # one object per run id (see Plan.materialize): compared by identity
class Run:
    """One run of the plan; `id` is None while its settings wait for another stage."""

    dataset: str
    entry: str
    stage: str
    seed: int
    names: dict[str, Any] | None  # the settings that name it (set by its stage)
    id: str | None = None
    state: str = WAITING
    reason: str = ""
    settings: dict[str, Any] | None = None  # every setting, references resolved (when ready)
    stop_at: int | None = None  # pruned search: the rung (epoch) it trains to next
    settled: bool = False  # pruned search: its rungs are decided on record (Verdict.settled)
    rung: str = ""  # pruned search: where it stands ("at rung 3: valid NDCG@10 0.04321")
    needs: str | None = None  # the id of the start it waits to see retrained (Plan.restore)
    # a recorded run's (dataset, unresolved settings): what reviving a pruned trial needs
    unresolved: tuple[Any, dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.id or f"{self.dataset}/{self.entry}/({self.stage}, seed {self.seed})"


@dataclass
class EntryPlan:
    """The runs of one model on one dataset."""

    entry: Entry
    dataset: Dataset
    trials: list[Run] = field(default_factory=list)  # selection stages, first seed
    reruns: list[Run] = field(default_factory=list)  # the selected setting, other seeds
    support: list[Run] = field(default_factory=list)  # started from by other models' runs
    selected: Run | None = None  # the best trial on validation (controls: their first run)
    pool: list[Run] = field(default_factory=list)  # the trials that compete for selection
    screened_out: str = ""  # why its other seeds do not run (`screen = true`), if so

    @property
    def runs(self) -> list[Run]:
        return self.trials + self.reruns + self.support

    @property
    def selected_runs(self) -> list[Run]:
        """The selected setting with every seed (those finished or not)."""
        return [] if self.selected is None else [self.selected, *self.reruns]


class Store:
    """Finished runs: the committed records first, then local run directories."""

    def __init__(self, records_dir: Path, runs_dir: Path | None = None):
        self.records_dir = Path(records_dir)
        self.runs_dir = Path(runs_dir) if runs_dir is not None else None
        self._cache: dict[tuple[str, str], Any] = {}

    def record_dir(self, run_id: str) -> Path:
        return self.records_dir / run_id

    def run_dir(self, run_id: str) -> Path:
        if self.runs_dir is None:
            raise SpecError("no run directory is known here (records only)")
        return self.runs_dir / run_id

    def has_record(self, run_id: str) -> bool:
        return (self.record_dir(run_id) / RECORD).is_file()

    def finished(self, run_id: str) -> bool:
        """Trained to its end (metrics.json), not paused or pruned at a rung."""
        folder = self.record_dir(run_id) if self.has_record(run_id) else None
        if folder is not None and (folder / "metrics.json").is_file():
            return True
        # here: never recorded, or recorded when pruned and trained on since as a start
        return self.finished_locally(run_id)

    def log(self, run_id: str) -> list[dict[str, Any]]:
        """A trial's log.jsonl as it stands: its record's, else its run directory's."""
        if self.has_record(run_id):
            return read_log(self.record_dir(run_id))
        if self.runs_dir is None:
            return []
        return read_log(self.run_dir(run_id))

    def finished_locally(self, run_id: str) -> bool:
        return self.runs_dir is not None and (self.run_dir(run_id) / "metrics.json").is_file()

    def has_weights(self, run_id: str) -> bool:
        return self.runs_dir is not None and (self.run_dir(run_id) / "model.safetensors").is_file()

    def done(self, run_id: str) -> bool:
        return self.has_record(run_id) or self.finished_locally(run_id)

    def read(self, run_id: str, name: str) -> Any:
        key = (run_id, name)
        if key not in self._cache:
            folder = self.record_dir(run_id)
            recorded_end = (folder / RECORD).is_file() and (folder / "metrics.json").is_file()
            if name != RECORD and not recorded_end and self.finished_locally(run_id):
                folder = self.run_dir(run_id)  # finished here since its record (or none)
            path = folder / name
            try:
                if name.endswith(".jsonl"):
                    lines = path.read_text().splitlines()
                    self._cache[key] = [json.loads(line) for line in lines if line.strip()]
                else:
                    self._cache[key] = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise SpecError(f"cannot read {path}: {error}") from None
        return self._cache[key]

    def metrics(self, run_id: str) -> dict[str, Any]:
        return self.read(run_id, "metrics.json")

    def config(self, run_id: str) -> dict[str, Any]:
        flat = flat_config(self.read(run_id, "config.json"))
        return {**option_defaults(flat.get("model.name")), **flat}  # (the cached dict is copied)

    def record(self, run_id: str) -> dict[str, Any]:
        return self.read(run_id, RECORD) if self.has_record(run_id) else {}

    def wall_seconds(self, run_id: str) -> float:
        """A finished run's wall time over all its sittings: the recorded figure, or its log's
        time where that is more (runs resumed before the trainer carried wall time between
        sittings recorded the last sitting's only)."""
        recorded = self.record(run_id).get("wall_seconds") or self.metrics(run_id).get(
            "wall_seconds"
        )
        try:
            logged = logged_seconds(self.read(run_id, LOG))
        except SpecError:  # a record without its log
            logged = 0.0
        return max(float(recorded or 0.0), logged)

    def forget(self, run_id: str) -> None:
        for key in [k for k in self._cache if k[0] == run_id]:
            del self._cache[key]


def finished_dir(path: Any) -> bool:
    """Whether `path` is a finished run's directory here (its weights and final metrics)."""
    if not isinstance(path, str) or not path:
        return False
    folder = Path(path)
    return (folder / "model.safetensors").is_file() and (folder / "metrics.json").is_file()


class Plan:
    """Every run of a spec, with its state; rebuild it whenever runs finish."""

    def __init__(self, spec: Spec, store: Store):
        self.spec = spec
        self.store = store
        self.by_id: dict[str, Run] = {}
        self.entries: dict[tuple[str, str], EntryPlan] = {}
        self.verdicts: dict[tuple[str, str, str], Verdict] = {}  # (dataset, entry, stage)
        self.revived: set[str] = set()  # pruned trials that train on as another run's start
        # finished runs whose weights another run starts from but whose run directory is not
        # here (only the record is): retrained at their recorded settings, the record kept
        self.restores: dict[str, Run] = {}
        for dataset in spec.datasets:
            for entry in spec.run_order():
                self.entries[dataset.name, entry.name] = self.build(dataset, entry)
        for plan in self.entries.values():
            if plan.entry.screen:
                self.screen(plan)

    @property
    def runs(self) -> list[Run]:
        return [run for plan in self.entries.values() for run in plan.runs]

    def entry_plan(self, dataset: str, entry: str) -> EntryPlan | None:
        return self.entries.get((dataset, entry))

    def score(self, run: Run) -> float:
        return float(self.store.metrics(run.id)[SPLIT][self.spec.metric])

    def best(self, runs: list[Run]) -> Run:
        """The run with the highest validation metric; ties go to the earlier one."""
        best = runs[0]
        for run in runs[1:]:
            if self.score(run) > self.score(best):
                best = run
        return best

    # -- building ---------------------------------------------------------------------------

    def build(self, dataset: Dataset, entry: Entry) -> EntryPlan:
        plan = EntryPlan(entry, dataset)
        self.entries[dataset.name, entry.name] = plan
        first, others = self.spec.seeds[0], self.spec.seeds[1:]
        if entry.control:
            plan.trials = [self.materialize(dataset, entry, CONTROL_STAGE, {}, first)]
            plan.reruns = [self.materialize(dataset, entry, CONTROL_STAGE, {}, s) for s in others]
            plan.pool = plan.trials
            plan.selected = plan.trials[0]
            return plan
        for index, stage in enumerate(entry.stages):
            fixed: dict[str, Any] = {}
            if stage.from_best:
                earlier = {s.name for s in entry.stages[:index]}
                before = [t for t in plan.trials if t.stage in earlier and t.state != PRUNED]
                if any(t.state != DONE for t in before):
                    reason = f"waits for the best of stage {entry.stages[index - 1].name}"
                    plan.trials += [
                        Run(dataset.name, entry.name, stage.name, first, None, reason=reason)
                        for _ in stage.points
                    ]
                    continue
                best = self.store.config(self.best(before).id)
                fixed = {key: best[key] for key in stage.from_best}
            trials = [
                self.materialize(
                    dataset, entry, stage.name, {**fixed, **stage.settings, **p}, first
                )
                for p in stage.points
            ]
            if self.spec.prunes(entry):
                self.prune(dataset, entry, stage.name, trials)
            plan.trials += trials
        plan.pool = [t for t in plan.trials if t.stage in entry.select_from and t.state != PRUNED]
        if all(t.state == DONE for t in plan.pool):
            plan.selected = self.best(plan.pool)
            names = plan.selected.names
            plan.reruns = [self.materialize(dataset, entry, SEED_STAGE, names, s) for s in others]
        else:
            reason = "waits for the selection"
            plan.reruns = [
                Run(dataset.name, entry.name, SEED_STAGE, s, None, reason=reason) for s in others
            ]
        return plan

    def prune(self, dataset: Dataset, entry: Entry, stage: str, trials: list[Run]) -> None:
        """Successive halving over a stage's trials (see famerec.experiments.pruning), decided
        from their logged validation scores alone."""
        assert self.spec.pruning is not None
        metric = self.spec.metric
        by_id = {run.id: run for run in trials}

        def score(run_id: str, rung: int) -> float | None:
            finished = self.store.finished(run_id)
            return rung_score(self.store.log(run_id), rung, metric, finished)

        recorded = {}
        for run_id in by_id:
            rung = pruned_rung(self.store.record(run_id))
            if rung is not None:
                recorded[run_id] = rung
        verdict = decide(list(by_id), self.spec.pruning, score, recorded)
        self.verdicts[dataset.name, entry.name, stage] = verdict
        for run_id, (rung, value) in verdict.pruned.items():
            run = by_id[run_id]
            run.state, run.stop_at = PRUNED, None
            run.rung = run.reason = f"pruned at rung {rung}: valid {metric} {value:.5f}"
        if verdict.rung is None:
            return
        for run_id in verdict.alive:
            run, value = by_id[run_id], verdict.scores[run_id]
            if value is None:  # trains (or resumes) to the rung, then pauses
                run.stop_at, run.settled = verdict.rung, verdict.settled
                run.rung = f"to rung {verdict.rung}"
                continue
            run.rung = f"at rung {verdict.rung}: valid {metric} {value:.5f}"
            if run.state != DONE:
                run.state = WAITING
                run.reason = f"at rung {verdict.rung}, waits for the other trials of stage {stage}"

    def pruned_start(
        self, dataset: Dataset, target: EntryPlan, want: dict[str, Any]
    ) -> list[Run] | str:
        """Pruned search, where no trial of the kind `want` survived: the one that went
        furthest (latest rung, then best score there, then id) is the start, trained on to its
        own end and kept out of the selection. [it] once trained, why to wait while it trains,
        [] where no trial of that kind exists at all."""
        pruned = [
            t
            for t in target.trials
            if (t.state == PRUNED or t.id in self.revived)
            and t.stage in target.entry.select_from
            and all(given(t).get(k, DEFAULTS.get(k)) == v for k, v in want.items())
        ]
        if not pruned:
            return []
        start = self.furthest(dataset, target.entry, pruned)
        if not self.store.finished(start.id):
            self.revive(start, f"the start of runs with {describe_settings(want)}")
            return f"waits for {start.id} (pruned, trains on as its start)"
        return [start]

    def furthest(self, dataset: Dataset, entry: Entry, pruned: list[Run]) -> Run:
        """Of pruned trials, the one pruned at the latest rung, then with the best score there,
        then the first by id: decided from their logs alone."""

        def key(run: Run) -> tuple[int, float, str]:
            rung, value = self.verdicts[dataset.name, entry.name, run.stage].pruned[run.id]
            return (-rung, -value, run.id)

        return min(pruned, key=key)

    def revive(self, run: Run, why: str) -> None:
        """A pruned trial another run starts from trains on to its own early stop."""
        if run.state != PRUNED:
            return
        if run.settings is None and run.unresolved is not None:
            run.settings = self.resolve_settings(run, *run.unresolved)
        if run.settings is None:
            return
        if not run.rung.endswith(why):
            run.rung = run.reason = f"{run.rung}; trains on as {why}"
        run.state, run.stop_at = READY, None
        self.revived.add(run.id)

    def screen(self, plan: EntryPlan) -> None:
        """`screen = true`: the other seeds run only if the first seed's validation score beats
        that of the control it names (`versus`) at the same seed; chosen on validation only."""
        first, entry, dataset = plan.trials[0], plan.entry, plan.dataset
        if any(run.state == DONE for run in plan.reruns):  # already run: keep them in sight
            return
        control = self.entries[dataset.name, entry.versus].selected
        seed = self.spec.seeds[0]
        if first.state != DONE or control is None or control.state != DONE:
            why = f"waits for the screening: seed {seed} of {entry.name} and of {entry.versus}"
            plan.reruns = [
                Run(dataset.name, entry.name, CONTROL_STAGE, run.seed, None, reason=why)
                for run in plan.reruns
            ]
            return
        mine, theirs = self.score(first), self.score(control)
        if mine <= theirs:
            plan.reruns = []
            plan.screened_out = (
                f"screened out (seed {seed}: valid {self.spec.metric} {mine:.5f}, "
                f"{entry.versus} {theirs:.5f})"
            )

    def materialize(
        self, dataset: Dataset, entry: Entry, stage: str, names: dict[str, Any], seed: int
    ) -> Run:
        run_id = f"{dataset.name}/{entry.name}/{run_slug(names, seed)}"
        if run_id in self.by_id:
            return self.by_id[run_id]
        run = Run(dataset.name, entry.name, stage, seed, names, id=run_id)
        self.by_id[run_id] = run
        settings = self.spec.run_settings(dataset, entry, names)
        settings[SEED_KEY] = seed
        if self.store.done(run_id) and not self.trains_on(entry, run_id):
            self.check_frozen(run_id, settings)
            run.state = DONE
            run.unresolved = (dataset, settings)  # a pruned trial may be revived (`revive`)
            return run
        resolved = self.resolve_settings(run, dataset, settings)
        if resolved is not None:
            run.settings, run.state = resolved, READY
        return run

    def trains_on(self, entry: Entry, run_id: str) -> bool:
        """A trial pruned at a rung by another spec that shares this one's records (the same
        run, pruned there), where this spec trains the entry's trials to their end: it resumes
        from its rung. Its record keeps the other spec's decision."""
        return (
            not self.spec.prunes(entry)
            and pruned_rung(self.store.record(run_id)) is not None
            and not self.store.finished(run_id)
        )

    def resolve_settings(
        self, run: Run, dataset: Dataset, settings: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A run's settings with its references resolved; None (and `run.reason`) if one
        must wait."""
        resolved: dict[str, Any] = {}
        # a reference that matches on other settings comes after those (a control's dropout
        # "of the selected sasrec with the same hidden size", its hidden size "of the selected
        # fame"), whatever the order the spec lists them in
        matching = [k for k, v in settings.items() if isinstance(v, Ref) and v.match]
        order = [k for k in settings if k not in matching] + matching
        for key, value in ((k, settings[k]) for k in order):
            if isinstance(value, Ref):  # `match` sees the settings resolved before it
                value, waiting, needs = self.resolve(
                    value, dataset, {**settings, **resolved}, run.seed
                )
                if waiting:
                    run.reason, run.needs = waiting, needs
                    return None
            resolved[key] = value
        try:
            RunConfig().with_overrides(resolved).validate()
        except (ConfigError, TypeError) as error:
            raise SpecError(f"{self.spec.path}: run {run.id}: {error}") from None
        return resolved

    def check_frozen(self, run_id: str, settings: dict[str, Any]) -> None:
        """A finished run must have been made with the spec's settings as they are now."""
        recorded = self.store.config(run_id)
        for key, value in settings.items():
            if isinstance(value, Ref) or key in NOT_FROZEN or recorded.get(key) == value:
                continue
            raise SpecError(
                f"{self.spec.path}: {run_id} was run with {key} = {recorded.get(key)!r}, the spec "
                f"now says {value!r}; a spec is frozen once it has runs: write a new one"
            )

    def resolve(
        self, ref: Ref, dataset: Dataset, settings: dict[str, Any], seed: int
    ) -> tuple[Any, str, str | None]:
        """(value, "", None) or (None, why it must wait, the id of the start to retrain that it
        waits for if that is why)."""
        target = self.entries[dataset.name, ref.selected]
        if target.selected is None:
            return None, f"waits for the selection of {ref.selected}", None
        names = target.selected.names
        if ref.match:
            want = {key: settings.get(key, DEFAULTS.get(key)) for key in ref.match}
            pool = [
                t
                for t in target.pool
                if all(self.store.config(t.id).get(k) == v for k, v in want.items())
            ]
            if not pool:
                pool = self.pruned_start(dataset, target, want)
                if isinstance(pool, str):
                    return None, pool, None  # it trains on first
            if not pool:
                raise SpecError(
                    f"{self.spec.path}: no trial of {ref.selected} on {dataset.name} has "
                    f"{describe_settings(want)} (needed by {ref.describe()})"
                )
            names = self.best(pool).names
        run = self.materialize(dataset, target.entry, SUPPORT_STAGE, names, seed)
        if run.stage == SUPPORT_STAGE and run not in target.support:
            target.support.append(run)
        if not self.trained(run):
            return None, f"waits for {run.id}", None
        if ref.get is None:
            return self.start_dir(run)
        source = self.store.config(run.id) if "." in ref.get else self.store.metrics(run.id)
        if ref.get not in source:
            raise SpecError(f"{self.spec.path}: {run.id} has no '{ref.get}'")
        value = source[ref.get]
        # a recorded start (a control trains on from the one FAME started from): when it names
        # a run of this spec that is not here as it was recorded, that run's directory here,
        # which may have stayed on another machine
        if ref.get != "train.init_from" or finished_dir(value):
            return value, "", None
        start = self.run_at(value)
        if start is None:
            return value, "", None
        if not self.trained(start):
            return None, f"waits for {start.id}", None
        return self.start_dir(start)

    def trained(self, run: Run) -> bool:
        return run.state == DONE or (run.state == PRUNED and self.store.finished(run.id))

    def start_dir(self, run: Run) -> tuple[Any, str, str | None]:
        """The run directory another run starts from; if only the record of `run` is here, it
        waits (and `run` is retrained first). Weights are written at each best epoch: only a
        finished run's are a start."""
        if not (self.store.has_weights(run.id) and self.store.finished_locally(run.id)):
            needs = self.restore(run)
            why = "only its record is here; `experiment run` retrains it first"
            return None, f"needs the run directory of {run.id} ({why})", needs
        return relative(self.store.run_dir(run.id)), "", None

    def run_at(self, path: object) -> Run | None:
        """The run of this plan whose run directory `path` names (a recorded `init_from`, written
        on whichever machine trained it: .../<the spec's runs folder>/<dataset>/<model>/<run>),
        or None for a directory outside the spec's runs. A start not planned yet (another seed
        of a planned run: FAME's seed reruns start from SASRec's at their seed) is planned here."""
        if not isinstance(path, str) or self.store.runs_dir is None:
            return None
        parts = Path(path).as_posix().split("/")
        if len(parts) < 4 or parts[-4] != self.store.runs_dir.name:
            return None
        run_id = "/".join(parts[-3:])
        if run_id in self.by_id:
            return self.by_id[run_id]
        entry = self.entries.get((parts[-3], parts[-2]))
        if entry is None or not self.store.done(run_id):
            return None
        for run in [r for r in entry.runs if r.names is not None]:
            seed = next((s for s in self.spec.seeds if run_slug(run.names, s) == parts[-1]), None)
            if seed is not None:
                dataset = next(d for d in self.spec.datasets if d.name == run.dataset)
                start = self.materialize(dataset, entry.entry, SUPPORT_STAGE, run.names, seed)
                if start.stage == SUPPORT_STAGE and start not in entry.support:
                    entry.support.append(start)
                return start
        return None

    def restore(self, run: Run) -> str | None:
        """Plan a finished run's retraining into its run directory, at its recorded settings,
        when another run starts from its weights and only its record is here (the directory
        stayed on another machine). Its record, which selection read, is kept. Returns the id
        of the retraining to run first: this run's, or, if it starts from another run that
        must be retrained too (FAME from its SASRec), that one's."""
        if run.id in self.restores or run.unresolved is None:
            return run.id if run.id in self.restores else None
        dataset, settings = run.unresolved
        copy = replace(run, state=READY, reason="", stop_at=None)
        resolved = self.resolve_settings(copy, dataset, settings)
        if resolved is None:
            return copy.needs
        copy.settings = resolved
        self.restores[run.id] = copy
        return run.id

    # -- summaries --------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        counts = Counter(run.state for run in self.runs)
        states = (DONE, READY, WAITING) + ((PRUNED,) if self.spec.pruning else ())
        return {state: counts.get(state, 0) for state in states}
