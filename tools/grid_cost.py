"""What would an experiment spec cost on this CPU? Counts the spec's runs per dataset and model
(every stage, every seed, whether it is ready or waits for a selection) and prices each run at
the mean wall time (over all its sittings: at least its log's time) of the committed records
(any spec's) of the same model and dataset, trained on the CPU in float32, from scratch or from
another run as the spec's run is, with one thread (else with two, which is cheaper: said so).
Where no such record exists, the model's Beauty mean (else another dataset's) is scaled by the
dataset's cost per epoch relative to that dataset: the ratio of minutes per epoch between like
records (same model, machine, settings, batch sizes and threads; `dataset_scale`), not of whole
runs, whose epochs differ with their recipes. Where a model has no finished run at all, an
unfinished run directory (`--runs`, any thread count) gives a lower bound: the minutes its epochs
so far took.

An entry that trains its model at settings of its own (a control such as `bert4rec-xu`, whose
entry name is not its model's) is priced from the records of entries of that name (any spec's)
once one exists, on any dataset, and gets a row of its own; until then, as its model.

A model with a training recipe (its registration's `recipe`: schedule, rate, batch size, epochs)
is priced from the records trained with that recipe; where it has none yet, from the trials of
that recipe in `--recipe-records` (records kept outside any spec, e.g. the recipe trials in
benchmarks/records/recipe-variants), else from its records of the old constant-rate recipe, and
the row says "old recipe". Where the spec's entry sets another schedule than the recipe's (a
frozen spec keeping the constant rate its first runs used), the model is priced from its records
without the recipe: "old recipe (the spec's)".

A spec with a pruned search (`[selection.pruning]`) prices each stage's n trials as the epochs
successive halving trains: n to the first rung, the kept share on to the next, and so on, the
last survivors to the early stop that the same records reached (their mean epochs). Its "runs"
column then counts full-run equivalents. A run that sets its own `train.epochs` (a spec point,
its model entry or `[base]`) is priced per epoch: the records' minutes x its epochs / their
mean epochs run, an upper bound where early stopping may end it sooner. A pruned trial revived
as another run's start is not counted (rare: only when no trial of that kind survived).

With `--left`, the same prices also give what is left of a grid under way: each run's share
is credited with what it has trained (a finished run in full; a pruned trial, or one paused
between sittings, its epochs logged in its record or run directory over the priced records'
mean epochs), and the table adds the runs and core-hours still to train.

    python tools/grid_cost.py experiments/table2.toml
    python tools/grid_cost.py experiments/table2_init.toml --left
    R=benchmarks/records/recipe-variants
    python tools/grid_cost.py experiments/table2.toml --recipe-records $R
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from famerec.config import RunConfig
from famerec.experiments.plan import DONE, RECORD, Plan, Run, Store
from famerec.experiments.pruning import reached, read_log
from famerec.experiments.spec import load_spec, relative
from famerec.models import model_spec
from famerec.report import table
from famerec.runs.dir import CONFIG, LOG, METRICS, RunDir

Key = tuple[str, str, bool]  # dataset, model, started from another run


@functools.cache
def model_defaults(model: str) -> dict:
    """`model`'s run config, flat: the defaults a record missing a setting ran at."""
    return RunConfig().with_overrides({"model.name": model}).flat()


def follows_recipe(config: dict, model: str) -> bool:
    """Whether a run's config has every setting of `model`'s recipe (true without a recipe)."""
    # a setting missing from an old record ran at its default, a shared one or the model's own
    # option's (BERT4Rec's mask proportion); built once per model, not once per record
    defaults = model_defaults(model)
    for key, value in model_spec(model).recipe:
        section, name = key.split(".")
        if config.get(section, {}).get(name, defaults[key]) != value:
            return False
    return True


def priced_records(
    records: Path, recipe: bool | None = None, deep: bool = False
) -> Iterator[tuple[Path, dict, Key]]:
    """(metrics.json path, metrics, key) of every finished CPU float32 run: all of them, or
    (`recipe` True) those trained with the model's recipe, or (False) those of a model with a
    recipe trained without it. A spec's records sit at <spec>/<dataset>/<model>/<run>; `deep`:
    at any depth (records kept outside any spec)."""
    paths = records.rglob(METRICS) if deep else records.glob(f"*/*/*/*/{METRICS}")
    for path in sorted(paths):
        metrics = json.loads(path.read_text())
        cpu = metrics.get("device") == "cpu" and metrics.get("precision", "fp32") == "fp32"
        if not cpu or not metrics.get("wall_seconds"):
            continue
        model = metrics["model"]
        follows = follows_recipe(metrics["config"], model)
        if recipe is True and not follows:
            continue
        if recipe is False and (follows or not model_spec(model).recipe):
            continue
        train = metrics["config"]["train"]
        yield path, metrics, (metrics["dataset"]["name"], model, bool(train.get("init_from")))


def run_minutes(path: Path, metrics: dict) -> float:
    """A priced record's wall time in minutes over all its sittings (runs resumed before wall
    time was carried between sittings hold the last one's only: their log's time is more)."""
    return max(metrics["wall_seconds"], RunDir(path.parent).logged_seconds()) / 60


def record_walls(
    records: Path, recipe: bool | None = None, deep: bool = False, entries: set[str] | None = None
) -> dict[tuple[Key, int], list[float]]:
    """Minutes of wall time of the `priced_records`, by (dataset, model, started) and threads;
    with `entries`, only the records whose entry folder (<spec>/<dataset>/<entry>/<run>) is one
    of them, by (dataset, entry, started)."""
    walls: dict[tuple[Key, int], list[float]] = defaultdict(list)
    for path, metrics, (dataset, model, started) in priced_records(records, recipe, deep):
        name = model if entries is None else path.parent.parent.name
        if entries is not None and name not in entries:
            continue
        threads = metrics["config"]["train"].get("threads")
        walls[(dataset, name, started), threads].append(run_minutes(path, metrics))
    return walls


def record_epochs(
    records: Path, recipe: bool | None = None, deep: bool = False
) -> dict[Key, list[int]]:
    """Epochs run by the `priced_records` (any thread count)."""
    epochs: dict[Key, list[int]] = defaultdict(list)
    for _, metrics, key in priced_records(records, recipe, deep):
        if metrics.get("epochs_run"):
            epochs[key].append(int(metrics["epochs_run"]))
    return epochs


def add_recipe_trials(
    walls: dict[tuple[Key, int], list[float]], epochs: dict[Key, list[int]], folders: list[Path]
) -> set[Key]:
    """Add to `walls` and `epochs` the records under `folders` (recipe trials kept outside any
    spec, at any depth) that follow their model's recipe, for the keys no record of `walls`
    prices; returns the keys so priced."""
    priced = {key for key, _ in walls}
    added: set[Key] = set()
    trial_epochs: dict[Key, list[int]] = defaultdict(list)
    for folder in folders:
        for (key, threads), minutes in record_walls(folder, True, deep=True).items():
            if model_spec(key[1]).recipe and key not in priced:
                walls.setdefault((key, threads), []).extend(minutes)
                added.add(key)
        for key, runs in record_epochs(folder, True, deep=True).items():
            if key in added:
                trial_epochs[key].extend(runs)
    epochs.update(trial_epochs)  # the old recipe's epochs no longer price these keys
    return added


def pruned_share(trials: int, rungs: tuple[int, ...], reduction: int, epochs: float) -> float:
    """The epochs successive halving trains over `trials` trials that would each run `epochs`
    epochs unpruned, as a share of training them all: n to the first rung, ceil(n / reduction)
    of them on to the next, ..., the last survivors to `epochs`."""
    if trials == 0 or epochs <= 0:
        return 1.0
    alive, done, spent = trials, 0.0, 0.0
    for rung in rungs:
        reach = min(rung, epochs)
        spent += alive * (reach - done)
        done = reach
        alive = -(-alive // reduction)
    spent += alive * (epochs - done)
    return spent / (trials * epochs)


def epoch_weight(settings: dict, known: list[int] | None) -> float:
    """A run's cost as a share of a priced record's: the epochs it sets (`train.epochs` in its
    spec point, entry or base) over the records' mean epochs run; 1 where it sets none or no
    record gives epochs. A run may stop before the epochs it sets (early stopping), so a
    weight above 1 is an upper bound; cosine runs mostly train to their end."""
    epochs = settings.get("train.epochs")
    if not isinstance(epochs, int) or not known or settings.get("train.lr_schedule") == "constant":
        return 1.0  # a constant-rate run stops on patience: its epochs are a cap, like the records'
    return epochs / statistics.mean(known)


def trained_share(run: Run, store: Store, weight: float, known: list[int] | None) -> float:
    """How much of its priced share (`weight` full runs) `run` has trained: all of it when
    finished; else its logged epochs (its record's or its run directory's, whichever has more:
    a pruned trial revived as a start trains on past its record) over the records' mean
    epochs (`known`), at most its share; nothing where no record gives epochs."""
    if run.state == DONE:
        return weight
    if run.id is None or not known:
        return 0.0
    logs = [read_log(store.record_dir(run.id))]
    if store.runs_dir is not None:
        logs.append(read_log(store.run_dir(run.id)))
    return min(weight, max(reached(log) for log in logs) / statistics.mean(known))


def unfinished_minutes(runs: Path) -> dict[Key, float]:
    """Minutes spent so far by the longest unfinished CPU run of each key."""
    spent: dict[Key, float] = {}
    for log in runs.glob(f"**/{LOG}"):
        folder = RunDir(log.parent)
        if folder.is_finished or not folder.is_started:
            continue
        config = json.loads((folder / CONFIG).read_text())
        train = config["train"]
        if train.get("device") not in ("cpu", "auto"):
            continue  # any thread count: more threads only shorten it, so still a lower bound
        minutes = folder.logged_seconds() / 60
        key = (config["data"]["dataset"], config["model"]["name"], bool(train.get("init_from")))
        spent[key] = max(spent.get(key, 0.0), minutes)
    return spent


def dataset_scale(records: Path) -> tuple[dict[str, float], dict[str, int]]:
    """Each dataset's training cost per epoch relative to Beauty's, and the record pairs it
    rests on. Like is compared with like: the finished CPU records from scratch (any model) are
    grouped by model, machine (the CPU their record names, with its family and model where
    recorded), model settings (dropout aside), batch sizes, threads and loss; within a group
    holding both datasets the ratio is that of their mean minutes per epoch (wall over epochs
    run), and the groups' ratios are averaged geometrically, each weighted by its pairs (the
    fewer records of its two datasets)."""
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path, metrics, (dataset, model, started) in priced_records(records):
        if started or not metrics.get("epochs_run"):
            continue
        record = path.parent / RECORD
        machine = json.loads(record.read_text()).get("machine", {}) if record.is_file() else {}
        machine = machine or metrics.get("machine", {})  # a plain run's own, since it has one
        config, train = metrics["config"], metrics["config"]["train"]
        settings = {k: v for k, v in config["model"].items() if k != "dropout" and v is not None}
        cpu = [str(machine.get("cpu", "?")).split(" @")[0], machine.get("cpu_id")]
        like = [model, *cpu, settings]
        like += [train.get(k) for k in ("batch_size", "eval_batch_size", "threads", "loss")]
        minutes = run_minutes(path, metrics) / metrics["epochs_run"]
        groups[json.dumps(like, sort_keys=True)][dataset].append(minutes)
    logs: dict[str, float] = defaultdict(float)
    pairs: dict[str, int] = defaultdict(int)
    for group in groups.values():
        if "beauty" not in group:
            continue
        beauty = statistics.mean(group["beauty"])
        for dataset, minutes in group.items():
            weight = min(len(minutes), len(group["beauty"]))
            logs[dataset] += weight * math.log(statistics.mean(minutes) / beauty)
            pairs[dataset] += weight
    return {d: math.exp(logs[d] / pairs[d]) for d in pairs}, dict(pairs)


def price(
    key: Key,
    walls: dict[tuple[Key, int], list[float]],
    spent: dict[Key, float],
    scale: dict[str, float],
) -> tuple[float, str] | None:
    """Minutes per run of `key` and where the figure comes from; `scale`: each dataset's cost
    per epoch relative to Beauty (`dataset_scale`)."""
    dataset, model, started = key

    def ratio(other: str) -> float:  # this dataset's cost per epoch over `other`'s
        return scale.get(dataset, 0.0) / scale[other] if scale.get(other) else 0.0

    for threads, note in ((1, "records"), (2, "records, 2 threads")):
        if (key, threads) in walls:
            return statistics.mean(walls[key, threads]), note
    others = sorted({d for (d, m, s), _ in walls if (m, s) == (model, started)} - {"beauty"})
    for other in ["beauty", *others]:  # Beauty first, then any dataset with a record
        scaled = ratio(other)
        for threads, note in ((1, ""), (2, ", 2 threads")):
            known = ((other, model, started), threads)
            if known in walls and scaled:
                minutes = statistics.mean(walls[known]) * scaled
                return minutes, f"{other.capitalize()} x {scaled:.2f}{note}"
    if key in spent:
        return spent[key], "at least (unfinished run)"
    scaled = ratio("beauty")
    if ("beauty", model, started) in spent and scaled:
        minutes = spent["beauty", model, started] * scaled
        return minutes, f"at least (unfinished Beauty x {scaled:.2f})"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--records", type=Path, default=Path("results/records"))
    parser.add_argument(
        "--recipe-records",
        type=Path,
        action="append",
        default=[],
        help="records of recipe trials outside any spec, at any depth (e.g. "
        "benchmarks/records/recipe-variants): those that follow their model's recipe price "
        "its runs where --records has none that do; repeat for several folders",
    )
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument(
        "--left",
        action="store_true",
        help="also price what is left to train: runs finished, pruned or trained so far (in "
        "the spec's records and its own runs folder, not --runs) are credited",
    )
    args = parser.parse_args()

    spec = load_spec(args.spec)
    store = Store(spec.records_dir, spec.runs_dir if args.left else None)
    plan = Plan(spec, store)
    walls, old = record_walls(args.records, True), record_walls(args.records, False)
    old_epochs = record_epochs(args.records, False)
    epochs = {**old_epochs, **record_epochs(args.records, True)}
    trials = add_recipe_trials(walls, epochs, args.recipe_records)
    named = {  # entries that train their model at settings of their own
        entry
        for (_, entry), entry_plan in plan.entries.items()
        if str(entry_plan.entry.settings.get("model.name", entry)) != entry
    }
    own = record_walls(args.records, entries=named)
    owned = {key[1:] for key, _ in own}  # (entry, started) with records of their own
    counts: dict[Key, float] = defaultdict(float)
    trained: dict[Key, float] = defaultdict(float)  # full-run equivalents trained (--left)
    classic: set[Key] = set()  # a model with a recipe whose spec entry sets another schedule
    per_epoch = False  # some run sets its own epochs: "runs" are full-run equivalents
    for (dataset, entry), entry_plan in plan.entries.items():
        settings = entry_plan.entry.settings
        model = str(settings.get("model.name", entry))
        key = (dataset, model, "train.init_from" in settings)
        recipe = dict(model_spec(model).recipe)
        schedule = {**spec.base, **settings}.get("train.lr_schedule")
        if (entry, key[2]) in owned:
            key = (dataset, entry, key[2])  # priced from the entry's own records
        elif recipe and schedule not in (None, recipe.get("train.lr_schedule")):
            classic.add(key)  # priced from the records trained without the recipe
        source = old_epochs if key in classic else epochs
        known = source.get(key) or source.get(("beauty", model, key[2]))
        weights = [
            epoch_weight(
                spec.run_settings(entry_plan.dataset, entry_plan.entry, r.names or {}), known
            )
            for r in entry_plan.runs
        ]
        per_epoch = per_epoch or any(w != 1.0 for w in weights)
        runs = sum(weights)
        if spec.prunes(entry_plan.entry) and known:
            mean = statistics.mean(known)
            for stage in entry_plan.entry.stages:
                n = sum(1 for t in entry_plan.trials if t.stage == stage.name)
                share = pruned_share(n, spec.pruning.rungs, spec.pruning.reduction, mean)
                runs -= n * (1 - share)
        counts[key] += runs
        if args.left:
            trained[key] += sum(
                trained_share(r, store, w, known) for r, w in zip(entry_plan.runs, weights)
            )
    scale, pairs = dataset_scale(args.records)
    spent = unfinished_minutes(args.runs) if args.runs.is_dir() else {}

    rows, total, bound, unpriced = [], 0.0, 0.0, 0
    left_total, left_bound = 0.0, 0.0

    def left(key: Key, runs: float) -> float:  # full-run equivalents still to train
        return max(0.0, runs - trained[key])

    def shown(runs: float) -> str:
        return f"{runs:.1f}" if runs != int(runs) else str(int(runs))

    for key, runs in sorted(counts.items()):
        dataset, model, started = key
        name = f"{model} (from a run)" if started else model
        if key[1:] in owned:
            priced = price(key, own, {}, scale)
            if priced is not None:
                priced = priced[0], priced[1] + ", the entry's own"
        else:
            priced = None if key in classic else price(key, walls, spent, scale)
        if priced is None or priced[1].startswith("at least"):  # the old recipe's records
            priced = price(key, old, {}, scale) or priced
            if priced is not None and not priced[1].startswith("at least"):
                priced = priced[0], priced[1] + ", old recipe"
        if priced is None:
            extra = [shown(left(key, runs)), ""] if args.left else []
            rows.append([dataset, name, f"{runs:g}", "", "", *extra, "no run yet"])
            unpriced += int(round(runs))
            continue
        minutes, source = priced
        if key in classic:
            source += " (the spec's)"
        elif ("beauty" if source.startswith("Beauty") else dataset, model, started) in trials:
            source += ", recipe trials"
        hours = runs * minutes / 60
        remaining = left(key, runs) * minutes / 60
        if source.startswith("at least"):
            bound += hours
            left_bound += remaining
        else:
            total += hours
            left_total += remaining
        extra = [shown(round(left(key, runs), 1)), f"{remaining:.1f}"] if args.left else []
        rows.append([dataset, name, shown(runs), f"{minutes:.1f}", f"{hours:.1f}", *extra, source])
    header = ["dataset", "model", "runs", "min / run", "core-hours"]
    header += ["runs left", "core-hours left"] if args.left else []
    print(table([*header, "priced from"], rows, align="ll" + "r" * (len(header) - 2) + "l"))
    print(
        f"\n{sum(counts.values()):.0f} runs"
        + (
            " (full-run equivalents, pruned)"
            if spec.pruning is not None
            else " (full-run equivalents: runs priced per epoch)"
            if per_epoch
            else ""
        )
        + f": {total:.0f} core-hours priced from finished runs, "
        f"at least {bound:.0f} more from unfinished ones, {unpriced} runs not priced (no run yet); "
        f"at least {(total + bound) / 2:.0f} h of wall on two cores, one run per core"
    )
    if args.left:
        print(
            f"left to train: {sum(left(k, r) for k, r in counts.items()):.0f} of those runs, "
            f"{left_total:.0f} core-hours priced from finished runs, at least {left_bound:.0f} "
            f"more from unfinished ones (credited: each run's epochs so far, records and "
            f"{relative(spec.runs_dir)})"
        )
    scales = ", ".join(
        f"{d.capitalize()} x {scale[d]:.2f} ({pairs[d]} pairs)"
        for d in sorted(scale)
        if d != "beauty"
    )
    print(f"cost per epoch against Beauty's (like records): {scales or 'no like records'}")


if __name__ == "__main__":
    main()
