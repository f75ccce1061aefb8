"""`famerec experiment report`: markdown tables and PNG plots from the committed records alone.

The output depends on the records and the spec only (sorted, fixed float formats), so that a
test can check that the committed report is what the committed records give.
"""

from __future__ import annotations

import math
import os
import statistics
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from famerec.evaluation import METRIC_NAMES
from famerec.evaluation.significance import paired_bootstrap, paired_t_test, per_user
from famerec.experiments.plan import (
    DONE,
    PRUNED,
    RESTORED,
    EntryPlan,
    Plan,
    Run,
    Store,
    describe_settings,
    format_value,
)
from famerec.experiments.pruning import logged_up_to
from famerec.experiments.runner import plural
from famerec.experiments.spec import (
    SPLIT,
    Dataset,
    Entry,
    Figure,
    Series,
    Spec,
    SpecError,
    load_spec,
    tomllib,
)
from famerec.runs.dir import LOG, RANKS, read_ranks
from famerec.runs.machine import cpu_label
from famerec.tables import table

TEST_METRIC = "NDCG@10"  # the per-user metric of the significance tests
SIGNIFICANT = 0.05  # the paired t-test's level in the summary's "above" and "below" counts


def fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def fmt_p(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def mean_std(values: list[float]) -> str:
    if not values:
        return "n/a"
    spread = statistics.stdev(values) if len(values) > 1 else math.nan
    return f"{statistics.mean(values):.4f} ± {fmt(spread)}"


@dataclass
class Context:
    spec: Spec
    store: Store
    plan: Plan
    root: Path  # paths are shown relative to this folder (the repository)
    paper: dict[str, Any]
    # per-user test gains of a selected setting, by its run ids: the results, best-baseline
    # and summary tables test the same settings, and each ranks.npz is read once
    gains: dict[tuple[str, ...], np.ndarray | None] = field(default_factory=dict)
    others: dict[str, Context] = field(default_factory=dict)  # specs a figure draws from

    def show(self, path: Path) -> str:
        return Path(os.path.relpath(Path(path).resolve(), self.root.resolve())).as_posix()

    def of(self, series: Series) -> Context:
        """The context of the spec whose records `series` reads: this one, or another spec
        of its folder (loaded once)."""
        if series.source is None:
            return self
        if series.source not in self.others:
            spec = load_spec(self.spec.path.parent / f"{series.source}.toml", allow_outside=True)
            store = Store(spec.records_dir)
            self.others[series.source] = Context(spec, store, Plan(spec, store), self.root, {})
        return self.others[series.source]


def load_paper(spec: Spec) -> dict[str, Any]:
    if spec.paper is None:
        return {}
    try:
        return tomllib.loads(spec.paper.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise SpecError(f"cannot read the paper's numbers {spec.paper}: {error}") from None


def finished_selection(entry_plan: EntryPlan) -> list[Run]:
    """The selected setting's runs (one per seed), once all of them are finished."""
    if entry_plan.screened_out:
        return []
    runs = entry_plan.selected_runs
    return runs if runs and all(run.state == DONE for run in runs) else []


# -- the report -------------------------------------------------------------------------------


def write_report(spec: Spec, out: str | Path | None = None, plots: bool = True) -> str:
    """Write <out>/<name>.md (and <out>/<name>/*.png); returns the markdown."""
    store = Store(spec.records_dir)
    context = Context(spec, store, Plan(spec, store), spec.path.resolve().parent.parent, {})
    context.paper = load_paper(spec)
    out = Path(out) if out is not None else spec.report_dir
    if out.exists() and not out.is_dir():
        raise SpecError(f"cannot write the report to {out}: it is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SpecError(f"cannot write the report to {out}: {error.strerror}") from None
    figures_dir = out / spec.name
    sections = [header(context)]
    summary = summary_section(context)
    if summary:
        sections.append(summary)
    for dataset in spec.datasets:
        sections.append(dataset_section(context, dataset))
        if plots:
            figures_dir.mkdir(parents=True, exist_ok=True)
            draw_dataset(context, dataset, figures_dir)
    text = "\n\n".join(sections) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{spec.name}.md").write_text(text)
    return text


def header(context: Context) -> str:
    spec, plan, store = context.spec, context.plan, context.store
    done = [run for run in plan.runs if run.state == DONE]
    records = [store.record(run.id) for run in done]
    spec_path = context.show(spec.path)
    trials = {e.trials for e in spec.run_order() if not e.control}
    lines = [
        f"# {spec.title}",
        "",
        f"Generated by `famerec experiment report {spec_path}` from the records in "
        f"`{context.show(spec.records_dir)}` alone (no weights); do not edit by hand. The runs: "
        f"`famerec experiment run {spec_path}`. Protocol: `results/README.md`.",
        "",
        selection_line(spec, trials),
        "",
        provenance(records, sum(map(store.wall_seconds, (run.id for run in done))), len(plan.runs)),
    ]
    if spec.pending():
        lines += ["", f"Not run: {spec.pending()}."]
    return "\n".join(lines)


def selection_line(spec: Spec, trials: set[int]) -> str:
    """How settings were selected; a spec of controls only (one setting each, every seed) has
    no trials to select among."""
    others = ", ".join(map(str, spec.seeds[1:]))
    if not trials:
        return (
            f"Every model runs its one setting with seeds {', '.join(map(str, spec.seeds))}; "
            f"nothing is selected. Test metrics: each model's runs."
        )
    return (
        f"Selection on validation {spec.metric} only: every model gets "
        f"{' / '.join(map(str, sorted(trials)))} validation trials per dataset (seed "
        f"{spec.seeds[0]}); its best trial is its selected setting"
        + (f", rerun with seeds {others}" if others else "")
        + ". Test metrics are shown for the selected settings only"
        + (
            ", except in the figures on the test split, which draw every trial trained to its "
            "end as the paper's figures do"
            if spec.draws_test
            else ""
        )
        + "."
    )


def provenance(records: list[dict[str, Any]], wall_seconds: float, total: int) -> str:
    """Where the records come from; `wall_seconds`: of all runs, over all their sittings."""

    def listed(values) -> str:
        counts = Counter(v for v in values if v is not None)
        return ", ".join(f"{value} ({n})" for value, n in sorted(counts.items())) or "none"

    def machine(record: dict[str, Any]) -> str:
        info = record.get("machine", {})
        return f"{info.get('gpu') or cpu_label(info)}, {info.get('cores', '?')} cores"

    hours = wall_seconds / 3600
    return (
        f"Records: {len(records)} of {total} runs finished. Commits (runs): "
        f"{listed(r.get('commit') for r in records)}. Machines: "
        f"{listed(machine(r) for r in records)}. Devices: "
        f"{listed(r.get('device') for r in records)}; precision: "
        f"{listed(r.get('precision') for r in records)}; torch: "
        f"{listed(r.get('torch') for r in records)}. Wall time of all runs: {hours:.2f} h."
    )


def dataset_section(context: Context, dataset: Dataset) -> str:
    title = f"## {dataset.name}" + (f" (paper: {dataset.paper})" if dataset.paper else "")
    parts = [
        title,
        results_table(context, dataset),
        versus_table(context, dataset),
        best_baseline_table(context, dataset),
        trials_table(context, dataset),
        pruned_table(context, dataset),
        restored_table(context, dataset),
        figure_links(context, dataset),
    ]
    return "\n\n".join(part for part in parts if part)


def selected_ranks(context: Context, runs: list[Run]) -> np.ndarray | None:
    """Per-user test NDCG@10, the mean over the seeds (None without ranks); read once."""
    key = tuple(run.id for run in runs)
    if key not in context.gains:
        context.gains[key] = read_selected_ranks(context, runs)
    return context.gains[key]


def read_selected_ranks(context: Context, runs: list[Run]) -> np.ndarray | None:
    gains = []
    for run in runs:
        path = context.store.record_dir(run.id) / RANKS
        if not path.is_file():
            return None
        _, ranks = read_ranks(path)["test"]
        gains.append(per_user(ranks, TEST_METRIC))
    if len({len(g) for g in gains}) != 1:
        return None
    return np.mean(gains, axis=0)


def results_table(context: Context, dataset: Dataset) -> str:
    spec, plan = context.spec, context.plan
    baseline = spec.baseline
    base_gains = None
    if baseline is not None:
        base_plan = plan.entries.get((dataset.name, baseline))
        base_runs = finished_selection(base_plan) if base_plan else []
        base_gains = selected_ranks(context, base_runs) if base_runs else None
    rows = []
    for entry in spec.entries:
        if entry.pending is not None:
            rows.append([entry.label, "pending", "", *[""] * len(METRIC_NAMES), "", ""])
            continue
        entry_plan = plan.entries[dataset.name, entry.name]
        runs = finished_selection(entry_plan)
        if not runs:
            done = sum(r.state == DONE for r in entry_plan.runs)
            unfinished = f"not finished ({done} of {len(entry_plan.runs)} runs)"
            state = entry_plan.screened_out or unfinished
            rows.append([entry.label, state, "", *[""] * len(METRIC_NAMES), "", ""])
            continue
        tests = [context.store.metrics(r.id)["test"] for r in runs]
        cells = [mean_std([t[name] for t in tests]) for name in METRIC_NAMES]
        p_t = p_boot = ""
        if baseline is not None and entry.name != baseline:
            gains = selected_ranks(context, runs)
            p_t, p_boot = paired_p(base_gains, gains)
        setting = describe_settings(runs[0].names) or "its one setting"
        rows.append([entry.label, setting, str(len(runs)), *cells, p_t, p_boot])
    reported = reported_rows(context, dataset)
    rows += reported
    headers = ["model", "selected setting", "seeds", *METRIC_NAMES, "p (t)", "p (bootstrap)"]
    against = f" against {spec.entry(baseline).label}" if baseline else ""
    caption = (
        f"Test metrics of each model's selected setting (Table 2 of the paper): mean ± standard "
        f"deviation over the seeds. p: paired tests of per-user test {TEST_METRIC} (the mean "
        f"over the seeds){against} on the same test users: a t-test and a bootstrap over users "
        "(2,000 resamples, seed 0)."
    )
    if reported:
        source = context.paper.get("source")
        caption += (
            ' Rows marked "as reported" are the paper\'s numbers'
            + (f" ({source})" if source else "")
            + ", from a different implementation and set-up."
        )
    align = "llr" + "r" * len(METRIC_NAMES) + "rr"
    return (
        "### Test metrics of the selected settings\n\n"
        + caption
        + "\n\n"
        + table(headers, rows, align=align)
    )


def mean_test(context: Context, runs: list[Run]) -> float:
    """The mean test NDCG@10 of a selected setting's runs (one per seed)."""
    return statistics.mean(context.store.metrics(r.id)["test"][TEST_METRIC] for r in runs)


def paired_p(base: np.ndarray | None, gains: np.ndarray | None) -> tuple[str, str]:
    """The paired t-test and bootstrap p-values of per-user gains against base ones, as
    cells ("n/a" unless both are there for the same users)."""
    if base is None or gains is None or len(gains) != len(base) or len(gains) < 2:
        return "n/a", "n/a"
    return fmt_p(paired_t_test(base, gains)), fmt_p(paired_bootstrap(base, gains))


def versus_table(context: Context, dataset: Dataset) -> str:
    """Each model that names a control (`versus`) against it: the comparison that says whether
    a gain is the model's own or the extra training it got (e.g. FAME against SASRec trained on
    from the same weights for as long)."""
    rows = []
    for entry in context.spec.entries:
        if entry.versus is None or entry.pending is not None:
            continue
        other = context.spec.entry(entry.versus)
        runs = finished_selection(context.plan.entries[dataset.name, entry.name])
        other_runs = finished_selection(context.plan.entries[dataset.name, other.name])
        if not runs or not other_runs:
            state = state_of(context.plan.entries[dataset.name, entry.name])
            rows.append([entry.label, other.label, state, "", "", "", ""])
            continue
        mine, theirs = mean_test(context, runs), mean_test(context, other_runs)
        p_t, p_boot = paired_p(selected_ranks(context, other_runs), selected_ranks(context, runs))
        change = change_text(mine, theirs)
        rows.append([entry.label, other.label, fmt(mine), fmt(theirs), change, p_t, p_boot])
    if not rows:
        return ""
    headers = ["model", "against", f"test {TEST_METRIC}", "theirs", "change", "p (t)"]
    return (
        "### Against the matching controls\n\n"
        f"Each model against the control named in the spec (`versus`): the mean test "
        f"{TEST_METRIC} over the seeds of each, the relative change, and the same paired tests "
        "as above on the same test users.\n\n"
        + table([*headers, "p (bootstrap)"], rows, align="llrrrrr")
    )


def split_baselines(spec: Spec) -> tuple[list[Entry], list[Entry]]:
    """The baselines (entries trained from scratch that are not controls) and the others (the
    controls, and the models that start from another's run)."""
    runnable = [e for e in spec.entries if e.pending is None]
    baselines = [e for e in runnable if not e.control and e.from_scratch]
    return baselines, [e for e in runnable if e not in baselines]


@dataclass
class BestBaseline:
    """The best baseline of a dataset, chosen on validation, and every finished baseline."""

    name: str
    valid: float  # mean validation score over the seeds: what chose it
    test: float  # mean test NDCG@10 over the seeds
    finished: dict[str, np.ndarray | None]  # every finished baseline's per-user test gains
    baselines: int  # baselines in the spec, finished or not

    @property
    def gains(self) -> np.ndarray | None:
        return self.finished[self.name]

    @property
    def provisional(self) -> bool:
        return len(self.finished) < self.baselines


def best_baseline(
    context: Context, dataset: Dataset, baselines: list[Entry]
) -> BestBaseline | None:
    """Of the baselines whose selected setting has finished every seed, the one with the
    highest mean validation score (ties: the earlier entry); None while none has finished."""
    finished = {}
    for entry in baselines:
        runs = finished_selection(context.plan.entries[dataset.name, entry.name])
        if runs:
            valid = [context.store.metrics(r.id)["valid"][context.spec.metric] for r in runs]
            finished[entry.name] = (statistics.mean(valid), runs)
    if not finished:
        return None
    best = max(finished, key=lambda name: finished[name][0])
    return BestBaseline(
        name=best,
        valid=finished[best][0],
        test=mean_test(context, finished[best][1]),
        finished={name: selected_ranks(context, runs) for name, (_, runs) in finished.items()},
        baselines=len(baselines),
    )


def best_baseline_table(context: Context, dataset: Dataset) -> str:
    """Every other model (the other baselines, the controls, and the models that start from
    another's run) against the best baseline: of the entries trained from scratch that are not
    controls, the one whose selected setting has the highest mean validation score over its
    seeds. Chosen on validation, like everything else. Only with two baselines or more."""
    spec, plan = context.spec, context.plan
    baselines, others = split_baselines(spec)
    best = best_baseline(context, dataset, baselines) if len(baselines) >= 2 else None
    if best is None:
        return ""
    rows = []
    for entry in [e for e in baselines if e.name != best.name] + others:
        entry_plan = plan.entries[dataset.name, entry.name]
        runs = finished_selection(entry_plan)
        if not runs:
            rows.append([entry.label, state_of(entry_plan), fmt(best.test), "", "", ""])
            continue
        mine = mean_test(context, runs)
        p_t, p_boot = paired_p(best.gains, selected_ranks(context, runs))
        rows.append(
            [entry.label, fmt(mine), fmt(best.test), change_text(mine, best.test), p_t, p_boot]
        )
    label = spec.entry(best.name).label
    provisional = (
        f" Finished so far: {len(best.finished)} of the {best.baselines} baselines, so the "
        "best one may still change."
        if best.provisional
        else ""
    )
    return (
        "### Against the best baseline\n\n"
        f"The best baseline is {label}: of the models trained from scratch that are not "
        f"controls, its selected setting has the highest mean validation {spec.metric} over the "
        f"seeds ({best.valid:.4f}; chosen on validation, never on test).{provisional} "
        f"Every other model against it, the other baselines first, then the controls and the "
        f"models that start from another's run: the mean test {TEST_METRIC} over the seeds, the "
        "relative change, and the same paired tests as above on the same test users.\n\n"
        + table(
            ["model", f"test {TEST_METRIC}", label, "change", "p (t)", "p (bootstrap)"],
            rows,
            align="lrrrrr",
        )
    )


def summary_section(context: Context) -> str:
    """One table across the datasets: each model that is not a baseline against the best
    baseline and against every finished baseline. Only with two baselines or more, and at
    least one other model."""
    spec = context.spec
    baselines, others = split_baselines(spec)
    if len(baselines) < 2 or not others:
        return ""
    best_row = ["best baseline (on validation)"]
    rows = {entry.name: [entry.label] for entry in others}
    for dataset in spec.datasets:
        best = best_baseline(context, dataset, baselines)
        if best is None:
            best_row.append(f"none finished (0 of {len(baselines)})")
        else:
            label = spec.entry(best.name).label
            done = f"{len(best.finished)} of {best.baselines} baselines finished"
            best_row.append(
                f"{label}: test {fmt(best.test)} ({done}"
                + ("; may change)" if best.provisional else ")")
            )
        for entry in others:
            entry_plan = context.plan.entries[dataset.name, entry.name]
            runs = finished_selection(entry_plan)
            if not runs:
                cell = state_of(entry_plan)
            elif best is None:
                cell = f"{fmt(mean_test(context, runs))}; no baseline finished"
            else:
                cell = versus_baselines(
                    mean_test(context, runs), selected_ranks(context, runs), best
                )
            rows[entry.name].append(cell)
    return (
        "## Summary: against every baseline\n\n"
        f"For each model that is not a baseline (the controls, and the models that start from "
        f"another's run), per dataset: its mean test {TEST_METRIC} over the seeds; the change "
        f"against the best baseline (the finished baseline whose selected setting is highest on "
        f"validation {spec.metric}) with the paired t-test's p; and how many of the finished "
        f"baselines it is above and below, each by its own paired t-test over test users at "
        f"p < {SIGNIFICANT} (no correction for the number of tests). The datasets' sections "
        "below give the p against the spec's baseline and against the best baseline.\n\n"
        + table(
            ["model", *(d.name for d in spec.datasets)],
            [best_row, *rows.values()],
            align="l" + "l" * len(spec.datasets),
        )
    )


def versus_baselines(mine: float, my_gains: np.ndarray | None, best: BestBaseline) -> str:
    """A summary cell: the mean test score, the change against the best baseline with its p,
    and the counts of finished baselines it is significantly above and below."""
    p_values = {}  # baseline: the paired t-test's p, where both have the same test users
    for name, theirs in best.finished.items():
        if theirs is not None and my_gains is not None and len(theirs) == len(my_gains) > 1:
            p_values[name] = paired_t_test(theirs, my_gains)
    p_best = p_text(fmt_p(p_values[best.name])) if best.name in p_values else "no paired test"
    significant = [name for name, p in p_values.items() if p < SIGNIFICANT]
    above = sum(my_gains.mean() > best.finished[name].mean() for name in significant)
    cell = f"{fmt(mine)}: {change_text(mine, best.test)} ({p_best}); "
    cell += f"above {above}, below {len(significant) - above} of {len(best.finished)}"
    untested = len(best.finished) - len(p_values)
    return cell + (f" ({untested} without a paired test)" if untested else "")


def change_text(mine: float, theirs: float) -> str:
    """The relative change of `mine` against `theirs`, as a cell."""
    return f"{100 * (mine / theirs - 1):+.1f} %" if theirs else "n/a"


def p_text(cell: str) -> str:
    """A p-value cell in a sentence: "p < 0.001", "p = 0.042"."""
    return f"p {cell}" if cell.startswith("<") else f"p = {cell}"


def state_of(entry_plan: EntryPlan) -> str:
    """Why a model has no selected result: screened out, or not finished."""
    return entry_plan.screened_out or "not finished"


def reported_rows(context: Context, dataset: Dataset) -> list[list[str]]:
    reported = context.paper.get(dataset.paper or "", {})
    rows = []
    for entry in context.spec.entries:
        numbers = reported.get(entry.paper or "")
        if numbers:
            cells = [f"{numbers[name]:.4f}" if name in numbers else "" for name in METRIC_NAMES]
            rows.append([f"{entry.paper} (as reported)", "", "", *cells, "", ""])
    return rows


def trials_table(context: Context, dataset: Dataset) -> str:
    spec, plan = context.spec, context.plan
    rows = []
    for entry in spec.run_order():
        entry_plan = plan.entries[dataset.name, entry.name]
        # a control selects nothing: all its seeds are listed, for their speed and validation
        runs = entry_plan.runs if entry.control else entry_plan.trials + entry_plan.support
        for run in runs:
            if run.state != DONE:
                continue
            metrics = context.store.metrics(run.id)
            try:
                epoch_seconds = sorted(r["train_seconds"] for r in context.store.read(run.id, LOG))
            except SpecError:  # a record without its log
                epoch_seconds = []
            mark = "selected" if run is entry_plan.selected and not entry.control else ""
            rows.append(
                [
                    entry.name,
                    run.stage,
                    describe_settings(run.names) or "-",
                    run.seed,
                    fmt(metrics["valid"][spec.metric]),
                    fmt(metrics["valid"]["HR@10"]),
                    f"{metrics['best_epoch']} / {metrics['epochs_run']}",
                    f"{epoch_seconds[len(epoch_seconds) // 2]:.1f}" if epoch_seconds else "",
                    context.store.record(run.id).get("threads", ""),
                    mark,
                ]
            )
    if not rows:
        return ""
    headers = [
        "model",
        "stage",
        "setting",
        "seed",
        f"valid {spec.metric}",
        "valid HR@10",
        "best / run epochs",
        "s / epoch",
        "threads",
        "",
    ]
    caption = (
        "Every finished trial on the validation split (what selection reads; support runs are "
        "the settings other models start from, not trials), and every seed of each control "
        "(stage `control`, nothing selected). Test metrics of trials that were "
        "not selected stay in the records and are not shown"
        + (
            " here (the figures on the test split draw them, as the paper's figures do)"
            if spec.draws_test
            else ""
        )
        + ". s / epoch: the median training "
        "seconds per epoch in the run's log (epoch hooks included), on the record's machine with "
        "that many threads."
    )
    return (
        "### Trials (validation)\n\n" + caption + "\n\n" + table(headers, rows, align="lllrrrrrrl")
    )


def pruned_table(context: Context, dataset: Dataset) -> str:
    """Pruned search: the trials stopped at a rung, with their validation score up to it."""
    spec, plan = context.spec, context.plan
    rows = []
    for (name, entry, stage), verdict in plan.verdicts.items():
        if name != dataset.name:
            continue
        for run_id, (rung, score) in verdict.pruned.items():
            run = plan.by_id[run_id]
            setting = describe_settings(run.names or {}) or "-"
            rows.append([entry, stage, setting, run.seed, rung, fmt(score), "pruned"])
    if not rows:
        return ""
    assert spec.pruning is not None
    headers = ["model", "stage", "setting", "seed", "rung (epoch)", f"valid {spec.metric}", ""]
    caption = (
        f"Pruned search: at each rung (epochs {', '.join(map(str, spec.pruning.rungs))}) a "
        f"stage's trials are ranked on their best validation {spec.metric} up to it (ties by "
        f"run id) and the best 1/{spec.pruning.reduction} train on; these were stopped there "
        "and never selected."
    )
    return (
        "### Pruned trials (validation)\n\n"
        + caption
        + "\n\n"
        + table(headers, rows, align="lllrrrl")
    )


def restored_table(context: Context, dataset: Dataset) -> str:
    """Starts retrained for their weights (`restored.json` beside a record): the runs that
    started from them started from the retrained weights, not the recorded run's."""
    spec, plan, store = context.spec, context.plan, context.store
    rows = []
    for run in plan.runs:
        if run.dataset != dataset.name or run.id is None:
            continue
        if not (store.record_dir(run.id) / RESTORED).is_file():
            continue
        again = store.read(run.id, RESTORED)
        recorded = store.metrics(run.id)
        rows.append(
            [
                run.entry,
                describe_settings(run.names or {}) or "-",
                run.seed,
                fmt(recorded["valid"][spec.metric]),
                fmt(again["valid"][spec.metric]),
                fmt(recorded["test"][spec.metric]),
                fmt(again["test"][spec.metric]),
                again.get("commit", "?"),
            ]
        )
    if not rows:
        return ""
    metric = spec.metric
    headers = ["model", "setting", "seed", f"valid {metric}", "retrained", f"test {metric}"]
    headers += ["retrained", "commit"]
    caption = (
        "Retrained starts: these runs' directories (their weights) stayed on another machine, "
        "so the runner retrained each at its recorded settings before the runs that start from "
        "it. Selection read the record; the runs that start from it started from the retrained "
        "weights (`restored.json` beside the record)."
    )
    table_text = table(headers, rows, align="llrrrrrl")
    return "### Retrained starts\n\n" + caption + "\n\n" + table_text


def figure_links(context: Context, dataset: Dataset) -> str:
    spec = context.spec
    lines = ["### Figures"]
    for figure in spec.figures:
        test = figure.split == "test"
        lines += [
            "",
            f"![{figure.title}]({spec.name}/{dataset.name}-{figure.name}.png)",
            "",
            f"*{figure.title}.* {'Test' if test else 'Validation'} {', '.join(figure.metrics)} "
            "of the trials of "
            + ", ".join(str(series) for series in figure.series)
            + " against "
            + figure.x
            + (
                " (each trial at its best validation epoch, as the paper's figures plot the "
                "test split; drawn for reading only: nothing is selected from it)"
                if test
                else ""
            )
            + "; a star marks the test value of a selected setting (mean over its seeds)"
            + (
                "; trials the pruned search stopped have no test value and are not drawn"
                if test and spec.pruning
                else "; a hollow circle, a trial the pruned search stopped, at its best epoch up"
                " to that rung (what pruning compared)"
                if spec.pruning
                else ""
            )
            + (
                (
                    f"; the dashed line is the test value of the best trial (on validation) "
                    f"of {figure.reference}"
                    if test
                    else f"; the dashed line is the best validation value of {figure.reference}"
                )
                if figure.reference
                else ""
            )
            + (
                "; SPEC:MODEL:STAGE is another spec's, from its records"
                if any(series.source for series in figure.series)
                else ""
            )
            + ".",
        ]
        if test:
            lines += ["", figure_values(context, dataset, figure)]
    lines += [
        "",
        f"![training curves]({spec.name}/{dataset.name}-curves.png)",
        "",
        f"*Training curves of the selected settings*: validation {spec.metric} and training "
        "loss per epoch, one line per seed.",
    ]
    return "\n".join(lines)


def figure_values(context: Context, dataset: Dataset, figure: Figure) -> str:
    """The values a figure draws, one row per metric and setting group, one column per x."""
    rows: dict[tuple[str, str], dict[Any, float]] = {}
    xs: set[Any] = set()
    for metric in figure.metrics:
        for series in figure.series:
            found = series_points(context, dataset, figure, series, metric)
            for label, points in (found.lines if found else {}).items():
                rows[metric, label] = {x: value for x, value, _ in points}
                xs.update(rows[metric, label])
    ticks = sorted(xs)
    name = figure.x.rsplit(".", 1)[-1]
    headers = ["metric", "", *(f"{name} = {format_value(x)}" for x in ticks)]
    body = [
        [metric, label, *(f"{values[x]:.4f}" if x in values else "" for x in ticks)]
        for (metric, label), values in rows.items()
    ]
    lines = {m: reference_value(context, dataset, figure, m) for m in figure.metrics}
    if any(value is not None for value in lines.values()):  # the dashed line: a column
        headers.append("dashed line")
        body = [row + [""] for row in body]
        body += [
            [m, f"best of {figure.reference} on validation", *[""] * len(ticks), f"{value:.4f}"]
            for m, value in lines.items()
            if value is not None
        ]
    return table(headers, body, align="ll" + "r" * (len(headers) - 2))


# -- plots ------------------------------------------------------------------------------------


def draw_dataset(context: Context, dataset: Dataset, folder: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SpecError(
            "plots need matplotlib: pip install 'famerec[experiments]' (or pass --no-plots)"
        ) from None
    for figure in context.spec.figures:
        fig = draw_figure(plt, context, dataset, figure)
        save(plt, fig, folder / f"{dataset.name}-{figure.name}.png")
    save(plt, draw_curves(plt, context, dataset), folder / f"{dataset.name}-curves.png")


def save(plt, fig, path: Path) -> None:
    fig.savefig(path, dpi=72, metadata={"Software": None})
    plt.close(fig)


def pruned_value(context: Context, run: Run, rung: int, metric: str) -> float | None:
    """A pruned trial's validation `metric` at its best epoch (on the spec's metric) up to the
    rung where it stopped: what pruning compared it on."""
    epochs = logged_up_to(context.store.log(run.id), rung)
    if not epochs:
        return None
    return float(max(epochs, key=lambda e: e[SPLIT][context.spec.metric])[SPLIT][metric])


@dataclass
class SeriesPoints:
    """One series of a figure on one dataset, for one metric: each setting group's finished
    trials as (x, value, run), sorted by x, and its pruned trials as (x, value) where pruning
    compared them (validation figures only)."""

    plan: EntryPlan
    store: Store
    lines: dict[str, list[tuple[Any, float, Run]]]
    pruned: dict[str, list[tuple[Any, float]]]


def series_points(
    context: Context, dataset: Dataset, figure: Figure, series: Series, metric: str
) -> SeriesPoints | None:
    """The points `figure` draws of `series` on `dataset`; None where the series' spec has no
    such dataset. A test figure draws finished trials only: a pruned trial was never tested."""
    source = context.of(series)
    plan, store = source.plan, source.store
    if (dataset.name, series.entry) not in plan.entries:
        return None
    entry_plan = plan.entries[dataset.name, series.entry]
    verdict = plan.verdicts.get((dataset.name, series.entry, series.stage))
    points = SeriesPoints(entry_plan, store, {}, {})
    for run in entry_plan.trials:
        if run.stage != series.stage or run.state not in (DONE, PRUNED) or run.id is None:
            continue
        others = {k: v for k, v in run.names.items() if k != figure.x}
        label = f"{entry_plan.entry.label} {describe_settings(others)}".strip()
        if series.source:
            label += f" ({series.source})"
        x = store.config(run.id)[figure.x]
        if run.state == DONE:
            value = store.metrics(run.id)[figure.split][metric]
            points.lines.setdefault(label, []).append((x, value, run))
        elif figure.split == "valid" and verdict is not None and run.id in verdict.pruned:
            value = pruned_value(source, run, verdict.pruned[run.id][0], metric)
            if value is not None:
                points.pruned.setdefault(label, []).append((x, value))
                points.lines.setdefault(label, [])
    for line in points.lines.values():
        line.sort(key=lambda p: p[0])
    for line in points.pruned.values():
        line.sort(key=lambda p: p[0])
    return points


def reference_value(
    context: Context, dataset: Dataset, figure: Figure, metric: str
) -> float | None:
    """The figure's dashed line: `metric` on its split of the reference stage's best finished
    trial (best on validation, as selection reads); None without one."""
    reference = figure.reference
    if reference is None:
        return None
    source = context.of(reference)
    if (dataset.name, reference.entry) not in source.plan.entries:
        return None
    trials = source.plan.entries[dataset.name, reference.entry].trials
    done = [r for r in trials if r.stage == reference.stage and r.state == DONE]
    if not done:
        return None
    return source.store.metrics(source.plan.best(done).id)[figure.split][metric]


def draw_figure(plt, context: Context, dataset: Dataset, figure: Figure):
    width, height = 3.2 * len(figure.metrics), 3.6
    fig, axes = plt.subplots(1, len(figure.metrics), figsize=(width, height), layout="constrained")
    axes = np.atleast_1d(axes)
    xs: set[float] = set()
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes, figure.metrics):
        drawn = 0  # setting groups so far: the same colours in the same order on every panel
        for series in figure.series:
            found = series_points(context, dataset, figure, series, metric)
            if found is None:
                continue  # the other spec has no such dataset
            entry_plan, store, lines, pruned = found.plan, found.store, found.lines, found.pruned
            xs.update(p[0] for line in lines.values() for p in line)
            xs.update(p[0] for line in pruned.values() for p in line)
            selected = finished_selection(entry_plan)
            for label, points in lines.items():
                color = palette[drawn % len(palette)]
                drawn += 1
                if points:
                    xy = ([p[0] for p in points], [p[1] for p in points])
                    ax.plot(*xy, marker="o", color=color, label=label)
                if label in pruned:
                    px, py = zip(*pruned[label])
                    ax.plot(px, py, "o", mfc="none", color=color, label=f"{label}: pruned")
                if selected and any(p[2] is entry_plan.selected for p in points):
                    star = statistics.mean(store.metrics(r.id)["test"][metric] for r in selected)
                    x = store.config(entry_plan.selected.id)[figure.x]
                    ax.plot([x], [star], "*", ms=12, color=color, label=f"{label}: test, selected")
        value = reference_value(context, dataset, figure, metric)
        if value is not None:
            label = f"best of {figure.reference}"
            label += " (on validation)" if figure.split == "test" else ""
            ax.axhline(value, ls="--", color="red", lw=1, label=label)
        ax.set_xlabel(figure.x.rsplit(".", 1)[-1])
        ax.set_ylabel(f"{figure.split} {metric}")
        ax.grid(alpha=0.3)
    ticks = sorted(xs)
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in ticks)
    for ax in axes:
        if numeric and len(ticks) > 1 and all(x > 0 for x in ticks):
            ax.set_xscale("log", base=2)
        if numeric and ticks:
            ax.set_xticks(ticks, [format_value(x) for x in ticks])
            ax.minorticks_off()
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        ncols = 3 if len(figure.metrics) > 2 else 2
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=6)
    title = f"{dataset.name}: {figure.title}"
    fig.suptitle(textwrap.fill(title, width=int(15 * width)), fontsize=9)  # ~15 letters an inch
    return fig


def draw_curves(plt, context: Context, dataset: Dataset):
    spec, plan, store = context.spec, context.plan, context.store
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 2.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, entry in enumerate(spec.run_order()):
        runs = finished_selection(plan.entries[dataset.name, entry.name])
        color = colors[index % len(colors)]
        for position, run in enumerate(runs):
            log = store.read(run.id, "log.jsonl")
            epochs = [r["epoch"] for r in log]
            label = f"{entry.label} ({plural(len(runs), 'seed')})" if position == 0 else None
            left.plot(
                epochs, [r["valid"][spec.metric] for r in log], color=color, lw=1, label=label
            )
            right.plot(epochs, [r["train_loss"] for r in log], color=color, lw=1)
    left.xaxis.get_major_locator().set_params(integer=True)
    right.xaxis.get_major_locator().set_params(integer=True)
    left.set_xlabel("epoch")
    left.set_ylabel(f"valid {spec.metric}")
    right.set_xlabel("epoch")
    right.set_ylabel("train loss")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    if left.lines:
        left.legend(fontsize=6)
    fig.suptitle(f"{dataset.name}: training curves of the selected settings", fontsize=9)
    fig.tight_layout()
    return fig
