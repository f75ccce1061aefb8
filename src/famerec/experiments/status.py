"""`famerec experiment status`: where a spec stands, per dataset, model and stage."""

from __future__ import annotations

from pathlib import Path

from famerec.experiments.plan import (
    DONE,
    PRUNED,
    READY,
    WAITING,
    Plan,
    Run,
    Store,
    describe_settings,
)
from famerec.experiments.runner import format_seconds, grid_summary
from famerec.experiments.spec import Spec
from famerec.runs.dir import PRETRAIN, RunDir, logged_seconds
from famerec.tables import table


def status(spec: Spec, runs_dir: str | Path | None = None) -> str:
    store = Store(spec.records_dir, runs_dir or spec.runs_dir)
    plan = Plan(spec, store)
    rows = []
    for dataset in spec.datasets:
        for entry in spec.run_order():
            entry_plan = plan.entries[dataset.name, entry.name]
            for stage in dict.fromkeys(run.stage for run in entry_plan.runs):
                runs = [run for run in entry_plan.runs if run.stage == stage]
                done = [run for run in runs if run.state == DONE]
                best = ""
                if stage in entry.select_from and done:
                    top = plan.best(done)
                    best = f"{describe_settings(top.names)} ({plan.score(top):.4f})"
                rows.append(
                    [
                        dataset.name,
                        entry.name,
                        stage,
                        f"{len(done)}/{len(runs)}",
                        sum(run.state == READY for run in runs),
                        sum(run.state == WAITING for run in runs),
                        best,
                        entry_plan.screened_out
                        or "; ".join(sorted({r.reason for r in runs if r.state == WAITING})),
                    ]
                )
    headers = [
        "dataset",
        "model",
        "stage",
        "done",
        "ready",
        "waiting",
        f"best valid {spec.metric} so far",
        "waiting for (or why not)",
    ]
    lines = [grid_summary(spec, plan), "", table(headers, rows, align="lllrrrll")]
    selected = [
        f"  {dataset}/{name}: {describe_settings(p.selected.names) or 'its one setting'}"
        for (dataset, name), p in plan.entries.items()
        if p.selected is not None and not p.entry.control
    ]
    if selected:
        lines += ["", f"selected on validation {spec.metric}:", *selected]
    started = [
        row
        for run in plan.runs
        if run.state == READY and (row := progress(store, run, spec.metric))
    ]
    if started:
        headers = [
            "run",
            "epochs",
            f"best valid {spec.metric} (epoch)",
            "since best / patience",
            "time",
        ]
        lines += [
            "",
            "started, not finished (they resume):",
            table(headers, started, align="lrlrr"),
        ]
    lines += rung_lines(spec, plan)
    unrecorded = [r.id for r in plan.runs if r.state == DONE and not store.has_record(r.id)]
    if unrecorded:
        lines += [
            "",
            f"{len(unrecorded)} runs finished here but not recorded yet; "
            "`famerec experiment run` records them",
        ]
    return "\n".join(lines)


def progress(store: Store, run: Run, metric: str) -> list | None:
    """An unfinished run's epochs so far, from its run directory's log; None if it has none
    (long runs such as MiaSRec's span sittings: this says how far they got)."""
    if store.runs_dir is None or run.id is None:
        return None
    run_dir = RunDir(store.run_dir(run.id))
    suffix = ""
    if run_dir.in_first_stage:  # a --pretrain run paused in its SASRec stage: that stage's log
        run_dir, suffix = RunDir(run_dir / PRETRAIN), " (SASRec stage)"
    try:
        epochs = run_dir.read_log()
    except OSError:
        return None
    epochs = [e for e in epochs if metric in e.get("valid", {})]
    if not epochs:
        return None
    best = max(epochs, key=lambda e: e["valid"][metric])
    stopping = epochs[-1].get("stopping", {})
    since = f"{stopping.get('epochs_without_best', '')} / {stopping.get('patience', '')}"
    seconds = logged_seconds(epochs)
    return [
        run.id + suffix,
        epochs[-1]["epoch"],
        f"{best['valid'][metric]:.4f} ({best['epoch']})",
        since if stopping else "",
        format_seconds(seconds),
    ]


def rung_lines(spec: Spec, plan: Plan) -> list[str]:
    """Pruned search: per stage, the rung its trials train to and how many reached it, or that
    its rungs are decided; then the pruned trials with their validation score at their rung."""
    if spec.pruning is None or not plan.verdicts:
        return []
    lines = ["", f"pruned search (rungs at epochs {', '.join(map(str, spec.pruning.rungs))}):"]
    for (dataset, entry, stage), verdict in plan.verdicts.items():
        where = f"  {dataset}/{entry}/{stage}: "
        if verdict.rung is None:
            lines.append(where + f"rungs decided, {len(verdict.alive)} trained on to the end")
            continue
        reached = sum(value is not None for value in verdict.scores.values())
        lines.append(
            where + f"rung {verdict.rung}: {reached}/{len(verdict.alive)} reached it, "
            f"{len(verdict.pruned)} pruned so far"
        )
    pruned = [run for run in plan.runs if run.state == PRUNED]
    if pruned:
        lines += ["pruned trials:", *(f"  {run.id}: {run.rung}" for run in pruned)]
    return lines
