"""Which rungs keep the winner? Successive halving replayed, from committed records alone (their
validation logs), on the stages whose every trial trained to its end.

    python studies/rungs.py experiments/fig5_sasrec_init.toml experiments/figs56_init.toml \
        --schedules 3,9 5,15 6,12 3 5 9 12

A stage counts when every trial of it finished (none pruned or paused): there the unpruned
winner, the trial with the best validation NDCG@10 at its own early stop, is known. For each
schedule of rungs the runner's own rule is replayed on the trials' logs
(`famerec.experiments.pruning.decide`: at each rung the trials still searched are ranked on
their best validation score up to it and the best 1/reduction train on). Per stage and
schedule the first table says whether the winner survived, how far the selection then ends
below the winner (regret, % of the winner's validation score) and the epochs trained, as a
share of training every trial to its end. The second table is the rank correlation (Spearman)
between the trials' best score up to an epoch and their final score, per stage: how early the
ranking a rung reads is the ranking at the end. Validation only: nothing here reads test.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from scipy import stats

from famerec.experiments.plan import Plan, Store
from famerec.experiments.pruning import decide, reached, rung_score
from famerec.experiments.spec import Pruning, load_spec
from famerec.tables import table

METRIC = "NDCG@10"


@dataclass
class Stage:
    """The trials of one complete stage: their logs and final validation scores."""

    name: str  # spec/dataset/entry/stage
    logs: dict[str, list[dict]]  # run id -> log.jsonl entries
    final: dict[str, float]  # run id -> the validation score selection reads

    @property
    def winner(self) -> str:
        return max(self.final, key=lambda run_id: (self.final[run_id], run_id))

    def score(self, run_id: str, rung: int) -> float:
        return rung_score(self.logs[run_id], rung, METRIC, finished=True)


def complete_stages(spec_file: Path) -> list[Stage]:
    """Every stage of `spec_file` whose trials all finished (records with metrics.json)."""
    spec = load_spec(spec_file)
    store = Store(spec.records_dir)
    stages = []
    for (dataset, entry), entry_plan in Plan(spec, store).entries.items():
        by_stage: dict[str, list[str | None]] = defaultdict(list)
        for run in entry_plan.trials:
            by_stage[run.stage].append(run.id)
        for stage, ids in by_stage.items():
            if len(ids) < 2 or any(i is None or not store.finished(i) for i in ids):
                continue
            logs = {i: store.log(i) for i in ids}
            final = {i: float(store.metrics(i)["valid"][METRIC]) for i in ids}
            stages.append(Stage(f"{spec.name}/{dataset}/{entry}/{stage}", logs, final))
    return stages


def replay(stage: Stage, rungs: tuple[int, ...], reduction: int) -> tuple[bool, float, float]:
    """(winner kept, regret in %, epochs trained as a share of all trials to their end)."""
    verdict = decide(list(stage.logs), Pruning(rungs, reduction), stage.score)
    selected = max(verdict.alive, key=lambda run_id: (stage.final[run_id], run_id))
    best = stage.final[stage.winner]
    regret = 100 * (best - stage.final[selected]) / best
    full = {run_id: reached(log) for run_id, log in stage.logs.items()}
    trained = sum(
        min(verdict.pruned[run_id][0], epochs) if run_id in verdict.pruned else epochs
        for run_id, epochs in full.items()
    )
    return stage.winner in verdict.alive, regret, trained / sum(full.values())


def spearman(x: list[float], y: list[float]) -> float:
    return float(stats.spearmanr(x, y).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", type=Path, nargs="+")
    parser.add_argument(
        "--schedules",
        nargs="+",
        default=["3,9", "5,15", "6,12", "3", "5", "9", "12"],
        help="rung schedules to replay, each a comma-separated list of epochs",
    )
    parser.add_argument("--reduction", type=int, default=3)
    parser.add_argument("--epochs", default="1,2,3,5,7,9,12,15", help="epochs of the second table")
    args = parser.parse_args()

    stages = [stage for spec in args.specs for stage in complete_stages(spec)]
    if not stages:
        parser.error("no stage of these specs has every trial finished")
    schedules = [tuple(int(e) for e in s.split(",")) for s in args.schedules]

    rows, summary = [], []
    for rungs in schedules:
        results = [replay(stage, rungs, args.reduction) for stage in stages]
        for stage, (kept, regret, share) in zip(stages, results):
            rows.append(
                [
                    ",".join(map(str, rungs)),
                    stage.name,
                    str(len(stage.logs)),
                    "yes" if kept else "no",
                    f"{regret:.2f}",
                    f"{share:.2f}",
                ]
            )
        summary.append(
            [
                ",".join(map(str, rungs)),
                f"{sum(kept for kept, _, _ in results)} of {len(results)}",
                f"{statistics.mean(r for _, r, _ in results):.2f}",
                f"{max(r for _, r, _ in results):.2f}",
                f"{statistics.mean(s for _, _, s in results):.2f}",
            ]
        )
    header = ["rungs", "stage", "trials", "winner kept", "regret %", "epochs share"]
    print(table(header, rows, align="llrlrr"))
    print()
    header = ["rungs", "winner kept", "mean regret %", "max regret %", "mean epochs share"]
    print(table(header, summary, align="lrrrr"))

    epochs = [int(e) for e in args.epochs.split(",")]
    rows = []
    for stage in stages:
        finals = [stage.final[run_id] for run_id in stage.logs]
        rows.append(
            [stage.name]
            + [f"{spearman([stage.score(r, e) for r in stage.logs], finals):.2f}" for e in epochs]
        )
    print()
    print(table(["stage (Spearman: best up to epoch e against final)", *map(str, epochs)], rows))


if __name__ == "__main__":
    main()
