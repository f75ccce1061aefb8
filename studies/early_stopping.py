"""Does early stopping stop too soon? The default rule against a very patient run.

    python studies/early_stopping.py                        # small dense data, real runs
    python studies/early_stopping.py --seed 4 --threads 2
    python studies/early_stopping.py --replay studies/early_stopping_curves.json
    python studies/early_stopping.py --replay RUN [RUN ...] [--steps-per-epoch 88]

The first form generates small dense data (studies/dense_data.py, from a seed), trains
SASRec with default settings under three stopping rules (the patient run, plain patience 10
as before, and the current default) and prints, for each, the best validation NDCG@10 it
found, its epochs and its wall time. Selection is on validation only; the test column is the
one test pass of the chosen weights, for information.

A rule that runs to the --epochs cap is also what every more patient rule runs (same seed,
same trajectory on the CPU), so such runs are not repeated.

`--replay` applies the rules to recorded validation curves instead (the log.jsonl of run
directories, or a JSON file of curves): a run's trajectory does not depend on when it stops,
so one long run shows where every rule would have stopped. early_stopping_curves.json holds
patient SASRec runs (all defaults but --patience 200 and a time limit): small dense data from
seeds 0-2 of two settings (which the default rule was chosen on), Beauty (seeds 42 and 1)
and Toys. An epoch costs about the same all run long, so epochs stand for time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from famerec.config import RunConfig, TrainConfig  # noqa: E402
from famerec.report import table  # noqa: E402
from famerec.training import train_run  # noqa: E402
from famerec.training.stopping import StoppingRule  # noqa: E402
from studies.dense_data import write_dense  # noqa: E402

DEFAULT = TrainConfig()
# From least to most patient; the patient run is the reference.
RULES = {
    "plain patience 10 (before)": {"patience": 10, "min_steps": 0, "patience_growth": 0.0},
    "default": {
        "patience": DEFAULT.patience,
        "min_steps": DEFAULT.min_steps,
        "patience_growth": DEFAULT.patience_growth,
    },
    "patient (--patience 200)": {"patience": 200, "min_steps": 0, "patience_growth": 0.0},
}


def real_runs(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="famerec-early-stopping-"))
    data = workdir / f"dense-seed{args.seed}.txt"
    write_dense(data, seed=args.seed)
    results = {}
    for name, rule in RULES.items():
        previous = next(iter(reversed(results.values())), None)
        if previous is not None and previous[0]["epochs_run"] == args.epochs:
            # the last rule ran to the --epochs cap: a more patient one runs the same epochs
            # with the same seed, which on the CPU is the same run
            results[name] = previous
            continue
        overrides = {
            "data.path": str(data),
            "train.threads": args.threads,
            "train.epochs": args.epochs,
        }
        overrides.update({f"train.{key}": value for key, value in rule.items()})
        config = RunConfig().with_overrides(overrides).validate()
        started = time.perf_counter()
        metrics = train_run(config, workdir / name.split()[0], progress=False)
        results[name] = metrics, time.perf_counter() - started
    patient_best = results[list(RULES)[-1]][0]["valid"]["NDCG@10"]
    rows = []
    for name, (metrics, wall) in results.items():
        best = metrics["valid"]["NDCG@10"]
        rows.append(
            [
                name,
                metrics["epochs_run"],
                metrics["best_epoch"],
                best,
                f"{100 * best / patient_best:.1f} %",
                metrics["test"]["NDCG@10"],
                f"{wall:.1f}",
            ]
        )
    print(
        f"dense data, seed {args.seed}: 1,000 users, ~50 items each; --epochs {args.epochs}, "
        f"{args.threads} thread(s); runs in {workdir}"
    )
    headers = ["rule", "epochs", "best epoch", "best valid NDCG@10", "of patient"]
    print(table([*headers, "test NDCG@10", "wall s"], rows, align="lrrrrrr"))


def recorded_curves(paths: list[str], steps_per_epoch: int | None) -> dict[str, tuple]:
    """name -> (validation NDCG@10 per epoch, optimizer steps per epoch), from run directories
    or from a JSON file of curves (studies/early_stopping_curves.json)."""
    curves = {}
    for path in map(Path, paths):
        if path.is_dir():
            log = [json.loads(line) for line in (path / "log.jsonl").read_text().splitlines()]
            steps = steps_per_epoch or log[0]["stopping"]["steps"]
            curves[path.name] = [r["valid"]["NDCG@10"] for r in log], steps
        else:
            for name, run in json.loads(path.read_text()).items():
                curves[name] = run["valid_ndcg10"], run["steps_per_epoch"]
    return curves


def replay(args: argparse.Namespace) -> None:
    rows = []
    for run, (curve, steps) in recorded_curves(args.replay, args.steps_per_epoch).items():
        patient_best = max(curve[: args.epochs])
        plain_epochs = None
        for name, rule in RULES.items():
            stopping = StoppingRule(rule["patience"], rule["min_steps"], rule["patience_growth"])
            epochs, best_epoch = stopping.replay(curve, steps, args.epochs)
            plain_epochs = plain_epochs or epochs
            best = curve[best_epoch - 1]
            rows.append(
                [
                    run,
                    name,
                    epochs,
                    f"{100 * (epochs / plain_epochs - 1):+.0f} %",
                    best_epoch,
                    best,
                    f"{100 * best / patient_best:.1f} %",
                ]
            )
    headers = ["run", "rule", "epochs", "vs plain", "best epoch", "best valid NDCG@10"]
    print(table([*headers, "of patient"], rows, align="llrrrrr"))
    print("'patient': the whole recorded curve (up to --epochs); 'vs plain': epochs, so time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3, help="dense data seed (0-2 tuned the rule)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--replay", nargs="+", metavar="RUN", help="run directories or curves")
    parser.add_argument("--steps-per-epoch", type=int, help="replay: for logs without it")
    parser.add_argument("--epochs", type=int, default=DEFAULT.epochs, help="the --epochs cap")
    args = parser.parse_args()
    if args.replay:
        replay(args)
    else:
        real_runs(args)


if __name__ == "__main__":
    main()
