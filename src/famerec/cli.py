"""The `famerec` command. Config flags are generated from `famerec.config`, not written out."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from famerec.config import SECTIONS
from famerec.errors import PAUSED, FamerecError, printable
from famerec.runconfig import PRESETS, RunConfig, config_options

log = logging.getLogger("famerec")


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors as one line and exit code 2, like every other input error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "famerec: warning: " if record.levelno >= logging.WARNING else "famerec: "
        return prefix + record.getMessage()


class _StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is at each message, not as it was when the command started
    (tests and tools swap it; an old stream may be closed by then)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(quiet: bool) -> None:
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def add_config_flags(parser: argparse.ArgumentParser, model: str) -> None:
    """One flag per shared config field and per field of `model`'s own section; only flags
    given on the command line become overrides."""
    from famerec.models import MODELS

    own_defaults = MODELS[model].own_defaults() if model in MODELS else {}
    groups = {}
    for key, flag, field, kind in config_options(model):
        section = key.split(".", 1)[0]
        if section not in groups:
            title = f"{section} options" if section in SECTIONS else f"{section} model options"
            groups[section] = parser.add_argument_group(title)
        help_text = field.metadata.get("help", "") + registry_help(key)
        default = own_defaults.get(key, field.default)  # e.g. GRU4Rec's own --layers 1
        kwargs = {"dest": key, "default": argparse.SUPPRESS}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            help_text += f" (default: {'on' if default else 'off'})"
        else:
            kwargs["type"] = kind
            kwargs["metavar"] = field.name.upper()
            choices = field.metadata.get("choices") or (
                sorted(MODELS) if key == "model.name" else ()
            )
            if choices:
                help_text += f"; one of {', '.join(choices)}"
            if default is not None:
                help_text += f" (default: {default})"
        groups[section].add_argument(flag, help=help_text, **kwargs)


def registry_help(key: str) -> str:
    """What the registry says of each model about setting `key`, for its help: the runs
    `--init-from` accepts (`starts_from`) and the model `--pretrain` trains (`pretrain`)."""
    from famerec.models import MODELS

    if key == "train.init_from":
        said = {
            name: f"a {' or '.join(spec.starts_from)} run"
            for name, spec in MODELS.items()
            if spec.starts_from
        }
    elif key == "train.pretrain":
        said = {name: spec.pretrain for name, spec in MODELS.items() if spec.pretrain}
    else:
        return ""
    return " (" + "; ".join(f"{name}: {said[name]}" for name in sorted(said)) + ")"


def _overrides(args: argparse.Namespace) -> dict:
    return {key: value for key, value in vars(args).items() if "." in key}


# -- commands --------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from famerec.runs.dir import RunDir
    from famerec.tables import metrics_table
    from famerec.training import resolve_config, train_run
    from famerec.training.distributed import environment_rank
    from famerec.training.memory import keep_freed_memory
    from famerec.training.rundata import with_data_of_source

    keep_freed_memory()  # up to 1.37x less CPU per batch (benchmarks/RESULTS.md); same results
    overrides = with_data_of_source(_overrides(args), args.out, args.resume)  # --init-from
    config = resolve_config(args.out, overrides, preset=args.preset, resume=args.resume)
    metrics = train_run(
        config,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet and sys.stderr.isatty(),
        time_limit=args.time_limit,
        stop_after=args.stop_after_epoch,
    )
    if metrics is None:  # paused between epochs at --time-limit or --stop-after-epoch
        why = "--time-limit" if args.stop_after_epoch is None else "--stop-after-epoch"
        if environment_rank() == 0:
            again = (
                "the same command and --resume"  # its config.json comes after its first stage
                if RunDir(args.out).in_first_stage
                else f"famerec train --out {args.out} --resume"
            )
            print(
                f"paused at {why} after {RunDir(args.out).reached()}; continue with: {again}",
                file=sys.stderr,
            )
        return PAUSED
    if environment_rank() == 0:  # under torchrun, process 0 speaks for the job
        print(metrics_table(metrics))
        print(f"run directory: {args.out}")
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from famerec.data import BUNDLED, load_bundled
    from famerec.tables import table

    rows = []
    for name, description in BUNDLED.items():
        stats = load_bundled(name).stats()
        rows.append(
            [
                name,
                stats["users"],
                stats["items"],
                stats["actions"],
                f"{stats['avg_length']:.3f}",
                description,
            ]
        )
    headers = ["name", "users", "items", "actions", "avg length", "source"]
    print(table(headers, rows, align="lrrrrl"))
    return 0


def _print_json(payload) -> None:
    print(json.dumps(payload, indent=2, default=str))


def _ranked_table(headers: list[str], columns: list[list[str]]) -> str:
    from famerec.tables import table

    depth = max((len(c) for c in columns), default=0)
    rows = [
        [rank + 1] + [c[rank] if rank < len(c) else "" for c in columns] for rank in range(depth)
    ]
    return table(["rank", *headers], rows, align="r" + "l" * len(headers))


def cmd_recommend(args: argparse.Namespace) -> int:
    from famerec.serving.recommender import load

    rec = load(args.run, device=args.device)
    if args.user is not None:
        items = rec.user_history(args.user)
    else:
        items = args.items.replace(",", " ").split()
    result = rec.recommend(items, k=args.k, exclude_seen=not args.keep_seen, strict=args.strict)
    if result.unknown:
        log.warning(
            "skipped %d unknown item ids: %s",
            len(result.unknown),
            " ".join(map(str, result.unknown[:10])),
        )
    if args.json:
        _print_json(result.to_dict())
        return 0
    cells = [f"{item}" for item in result.items]
    scores = [f"{score:.4f}" for score in result.scores]
    if result.names is None:
        print(_ranked_table(["item", "score"], [cells, scores]))
    else:  # the run's item table (--items) names them
        names = [_short_name(name) for name in result.names]
        print(_ranked_table(["item", "score", "name"], [cells, scores, names]))
    return 0


def _short_name(name: str | None, width: int = 40) -> str:
    """An item's name for a table cell: printable, one line, at most `width` characters."""
    if name is None:
        return ""
    shown = printable(name, limit=None)
    return shown if len(shown) <= width else shown[: width - 3] + "..."


def cmd_explain(args: argparse.Namespace) -> int:
    if args.facets:
        if args.keep_seen:  # the lists it compares are what the model would recommend
            raise FamerecError(
                "--keep-seen applies to --user; --facets always leaves each user's own items out"
            )
        return _explain_facets(args)
    if args.user is None:
        raise FamerecError("name a user with --user USER_ID, or ask for --facets")
    from famerec.serving.recommender import load

    rec = load(args.run, device=args.device)
    _check_explainable(rec.model, args.run)
    sequence = rec.user_history(args.user)
    history, target = sequence[:-1], sequence[-1]
    explained = rec.explain(history, k=args.k, exclude_seen=not args.keep_seen)
    if args.json:
        payload = {"user": args.user, "history": history, "test_item": target}
        if rec.has_names:  # the run's item table (--items): names beside the ids
            payload["history_names"] = rec.item_names(history)
            payload["test_item_name"] = rec.item_name(target)
        payload.update(explained.to_dict())
        _print_json(payload)
        return 0

    def mark(items, scores):
        names = rec.item_names(items) or [None] * len(items)
        return [
            f"{item}{' *' if item == target else ''} ({score:.2f})"
            + (f" {_short_name(name, 24)}" if name else "")
            for item, score, name in zip(items, scores, names)
        ]

    print(f"user {args.user}: history of {len(history)} items, oldest first")
    if rec.has_names:
        for item in history:
            print(f"  {item}  {_short_name(rec.item_name(item), 60)}")
    else:
        print("  " + " ".join(map(str, history)))
    named = f" {_short_name(rec.item_name(target), 60)}" if rec.has_names else ""
    print(f"held-out test item: {target}{named}  (marked * where it appears)")
    if explained.note:
        print(explained.note)
    headers, columns = [], []
    for head in explained.heads:
        experts = " ".join(f"{w:.2f}" for w in head.experts)
        print(f"head {head.head}: gate {head.gate:.3f}, router over experts [{experts}]")
        headers.append(f"head {head.head} (gate {head.gate:.2f})")
        columns.append(mark(head.items, head.scores))
    headers.append("integrated")
    columns.append(mark(explained.recommendation.items, explained.recommendation.scores))
    print(_ranked_table(headers, columns))
    return 0


def _check_explainable(model, run: str) -> None:
    """`model` (a SequentialRecommender) explains its recommendations."""
    if not model.explains:
        raise FamerecError(
            f"explain explains FAME runs (per-head lists, gate, router); {run} is a "
            f"{model.name} run: use `famerec recommend` for its top-k"
        )


def _explain_facets(args: argparse.Namespace) -> int:
    from famerec.analysis import attribute_matrix_for, facet_report
    from famerec.runs.load import load_run
    from famerec.tables import table

    run = load_run(args.run)
    _check_explainable(run.model, args.run)
    compare = args.compare
    if compare is None and "init_from" in run.metrics:
        compare = run.metrics["init_from"]["run"]
    compare_run = load_run(compare) if compare else None
    attributes = attribute_matrix_for(run, args.attributes)
    report = facet_report(run, attributes, k=args.k, max_users=args.users, compare=compare_run)
    if args.json:
        _print_json(report)
        return 0
    rows = []
    for row in report["lists"]:
        top = ", ".join(f"{a['attribute']} (x{a['lift']})" for a in row.get("top_attributes", []))
        gate = f"{row['mean_gate']:.3f}" if "mean_gate" in row else ""
        rows.append([row["list"], row["entropy"], row["purity"], gate, top])
    print(
        f"attribute concentration of top-{report['k']} lists over {report['users']:,} test users "
        f"(FAME with {report['heads']} heads x {report['experts']} experts)"
    )
    print(
        table(
            ["list", "entropy", "purity", "mean gate", "over-represented attributes"],
            rows,
            align="lrrrl",
        )
    )
    if report["head_overlap_jaccard"] is not None:
        print(f"mean Jaccard overlap between heads' lists: {report['head_overlap_jaccard']:.3f}")
    print(
        "entropy: of the attributes over the k items (lower = more concentrated); purity: share "
        "of items with the list's most common attribute"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from famerec.serving import serve

    def announce(url: str) -> None:  # only once the model is loaded and the port accepts
        log.info("serving %s on %s (API docs at %s/docs)", args.run, url, url)

    serve(
        args.run,
        host=args.host,
        port=args.port,
        device=args.device,
        max_body_bytes=args.max_body_bytes,
        on_ready=announce,
        batch_wait_ms=args.batch_wait_ms,
        max_batch=args.max_batch,
        max_connections=args.max_connections,
        timeout_keep_alive=args.timeout_keep_alive,
        timeout_request=args.timeout_request,
    )
    return 0


def cmd_experiment_run(args: argparse.Namespace) -> int:
    from famerec.experiments import load_spec
    from famerec.experiments.runner import Runner

    if args.jobs < 1:
        raise FamerecError(f"--jobs must be 1 or more, got {args.jobs}")
    spec = load_spec(args.spec, allow_outside=args.allow_outside)
    runner = Runner(
        spec,
        jobs=args.jobs,
        device=args.device,
        only=args.only,
        runs_dir=args.runs,
        precision=args.precision,
        time_limit=args.time_limit,
        rungs_only=args.rungs_only,
    )
    return runner.run(dry_run=args.dry_run)


def cmd_experiment_status(args: argparse.Namespace) -> int:
    from famerec.experiments import load_spec
    from famerec.experiments.status import status

    print(status(load_spec(args.spec, allow_outside=args.allow_outside), runs_dir=args.runs))
    return 0


def cmd_experiment_report(args: argparse.Namespace) -> int:
    from famerec.experiments import load_spec
    from famerec.experiments.report import write_report

    spec = load_spec(args.spec, allow_outside=args.allow_outside)
    print(write_report(spec, out=args.out, plots=not args.no_plots), end="")
    return 0


# -- parser ----------------------------------------------------------------------------------


def add_query_flags(parser: argparse.ArgumentParser) -> None:
    """The flags shared by the commands that ask a finished run for top-k lists."""
    parser.add_argument("--run", required=True, help="finished run directory")
    parser.add_argument("-k", type=int, default=10, help="list length (default: 10)")
    parser.add_argument("--keep-seen", action="store_true", help="allow items of the input")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")


def add_experiment_commands(commands) -> None:
    experiment = commands.add_parser(
        "experiment",
        help="run, follow and report a frozen experiment spec",
        description="Staged hyperparameter grids of `famerec train` runs from a TOML spec "
        "(see experiments/), selected on validation, with committed records and reports.",
    )
    subcommands = experiment.add_subparsers(
        dest="experiment_command", metavar="SUBCOMMAND", required=True, parser_class=ArgumentParser
    )

    def spec_command(name: str, handler, help: str, description: str, runs: bool = True):
        parser = subcommands.add_parser(name, help=help, description=description)
        parser.add_argument("spec", metavar="FILE", help="experiment spec (TOML)")
        parser.add_argument(
            "--allow-outside",
            action="store_true",
            help="let the spec's runs, records and report keys name folders outside its "
            "repository (the folder above the spec's)",
        )
        if runs:
            parser.add_argument(
                "--runs",
                metavar="DIR",
                help="local run directories (default: runs/<spec name> beside the spec's folder)",
            )
        parser.set_defaults(handler=handler)
        return parser

    run = spec_command(
        "run",
        cmd_experiment_run,
        "run what is not finished yet (resumes interrupted runs)",
        "Run every run of the spec that is not finished, J at a time, each as "
        "`python -m famerec -q train ...`; copies each finished run's record.",
    )
    run.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at a time; each gets cores / jobs threads (default: 1; on a GPU more runs "
        "may share it)",
    )
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), help="--device of every run")
    run.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        help="--precision of every run whose spec does not set it (recorded in each record)",
    )
    run.add_argument(
        "--only",
        metavar="PATTERN",
        action="append",
        help="only run ids matching, e.g. 'beauty/*'; repeat it for several patterns: of the "
        "runs ready, those matching an earlier one start first; a start that only has its "
        "record here is retrained with the runs that need it",
    )
    run.add_argument(
        "--rungs-only",
        action="store_true",
        help="start only the trials of a pruned search that train to their next rung: a short "
        "sitting then ends in rung decisions (pruned trials keep records) rather than in full "
        "runs cut off; survivors of the last rung, survivors that would only retrain to rungs "
        "decided on record, seeds and unpruned entries wait for a run without it",
    )
    run.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    add_time_limit(
        run,
        "runs start only before it, and no epoch that would end after it; they pause between "
        "epochs and the same command continues them",
    )
    spec_command(
        "status",
        cmd_experiment_status,
        "what is done, ready and waiting, per stage",
        "Per dataset, model and stage: runs done, ready and waiting, and the best validation "
        "trial so far. Runs nothing.",
    )
    report = spec_command(
        "report",
        cmd_experiment_report,
        "tables and plots from the committed records alone",
        "Writes <report>/<spec name>.md and <report>/<spec name>/*.png from the records (no "
        "weights needed) and prints the markdown.",
        runs=False,
    )
    report.add_argument("--out", metavar="DIR", help="write here instead of the spec's report dir")
    report.add_argument("--no-plots", action="store_true", help="markdown only")


def model_in(argv: Sequence[str]) -> str:
    """The model a `train` command line is about, so that its own flags can be offered: the
    --model value, else (with --resume) the model of the run in --out, else the default."""
    from famerec.models import MODELS

    def value_of(flag: str) -> str | None:
        for index, arg in enumerate(argv):
            if arg == flag and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
        return None

    name = value_of("--model")
    if name is None and "--resume" in argv and value_of("--out"):
        try:
            name = RunConfig.load(Path(value_of("--out")) / "config.json").model.name
        except FamerecError:
            name = None
    if name is None:
        name = RunConfig().model.name
    return name if name in MODELS else RunConfig().model.name


def duration(text: str) -> float:
    """'90m', '2h30m', '45s' or plain seconds ('5400') -> seconds."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d*)?)s?)?", text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(
            f"give a duration such as 90m, 2h30m or 5400 (seconds), got {text!r}"
        )
    hours, minutes, seconds = (float(part or 0) for part in match.groups())
    return 3600 * hours + 60 * minutes + seconds


def epoch_number(text: str) -> int:
    """An epoch count of 1 or more (`--stop-after-epoch`)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"give an epoch of 1 or more, got {text!r}")
    return value


def add_time_limit(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--time-limit",
        type=duration,
        metavar="DURATION",
        help=f"wall time of this sitting, e.g. 2h30m: {what} (exit {PAUSED})",
    )


def build_parser(model: str = "sasrec") -> argparse.ArgumentParser:
    """The whole command line; `train` offers the shared flags and `model`'s own."""
    from famerec.models import MODELS

    baselines = len(set(MODELS) - {"fame", "sasrec"})  # counted in the registry
    parser = ArgumentParser(
        prog="famerec",
        description=(
            f"Sequential recommendation with FAME, SASRec and {baselines} baselines: train, "
            "compare, explain, serve."
        ),
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only results and errors")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=ArgumentParser
    )

    train = commands.add_parser(
        "train",
        help="train and evaluate a model",
        description="Train a model with early stopping on validation NDCG@10, then test once. "
        f"Models: {', '.join(sorted(MODELS))}; `famerec train --model NAME --help` lists a "
        f"model's own options. This help shows --model {model}: {MODELS[model].summary}.",
    )
    train.add_argument("--out", required=True, help="run directory to write")
    train.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="named bundle of settings: quick (15 epochs, patience 3), paper (200 epochs, "
        "patience 10), classic (no model recipe: every model's constant-rate training before "
        "schedules, e.g. Adam at 1e-3, batch 256, up to 200 epochs)",
    )
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    add_time_limit(
        train, "no epoch starts that would end after it; the run pauses and --resume continues it"
    )
    train.add_argument(
        "--stop-after-epoch",
        type=epoch_number,
        metavar="N",
        help=f"pause after epoch N, resumable with --resume like --time-limit (exit {PAUSED}); "
        "the experiment runner's pruned search trains trials to a rung with it",
    )
    add_config_flags(train, model)
    train.set_defaults(handler=cmd_train)

    recommend = commands.add_parser(
        "recommend",
        help="top-k items for a sequence or a known user",
        description="Top-k recommendations from a finished run, in the ids of the input data.",
    )
    add_query_flags(recommend)
    who = recommend.add_mutually_exclusive_group(required=True)
    who.add_argument("--items", help='item ids, oldest first: "id1 id2 id3"')
    who.add_argument("--user", help="a user of the training data (uses the whole history)")
    recommend.add_argument("--strict", action="store_true", help="unknown item ids are an error")
    recommend.set_defaults(handler=cmd_recommend)

    explain = commands.add_parser(
        "explain",
        help="what each FAME head recommends and why",
        description="Per-head top-k lists with gate and router weights for one user's held-out "
        "test item (--user), or attribute concentration of every head's lists (--facets).",
    )
    add_query_flags(explain)
    explain.add_argument("--user", help="user id of the input data")
    explain.add_argument(
        "--facets", action="store_true", help="measure whether heads specialize in item attributes"
    )
    explain.add_argument("--users", type=int, help="--facets: sample this many test users")
    explain.add_argument(
        "--attributes",
        help='--facets: JSON {"item_id": [attribute, ...]} (bundled datasets have their own)',
    )
    explain.add_argument(
        "--compare",
        help="--facets: a SASRec run to compare with (default: the run FAME started from)",
    )
    explain.set_defaults(handler=cmd_explain)

    serve = commands.add_parser(
        "serve",
        help="HTTP service for recommendations",
        description="Serve POST /recommend, POST /recommend/batch, GET /healthz and GET /model.",
    )
    serve.add_argument("--run", required=True, help="finished run directory")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=8000, help="port, 0 for any free one (default: 8000)"
    )
    serve.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        help="larger request bodies get 413 Payload Too Large (default: 1 MiB)",
    )
    serve.add_argument(
        "--batch-wait-ms",
        type=float,
        help="score requests together: each waits up to this many milliseconds for others "
        "(default: 0.5; 0: one request at a time)",
    )
    serve.add_argument("--max-batch", type=int, help="most sequences scored together (default: 64)")
    serve.add_argument(
        "--max-connections",
        type=int,
        help="open connections at most: a new one takes the place of the one that has waited "
        "longest for its client, or gets 503 when all are being answered (default: 1000, or "
        "fewer where the limit on open files, ulimit -n, is low)",
    )
    serve.add_argument(
        "--timeout-keep-alive",
        type=float,
        metavar="SECONDS",
        help="close a connection that has no request in progress, new or after an answer, "
        "after this long (default: 5)",
    )
    serve.add_argument(
        "--timeout-request",
        type=float,
        metavar="SECONDS",
        help="a request, headers and body, must arrive within this long of its first byte, "
        "else 408 and the connection is closed; a client that reads nothing of its answer for "
        "this long is dropped (default: 30)",
    )
    serve.set_defaults(handler=cmd_serve)

    add_experiment_commands(commands)

    data = commands.add_parser("data", help="bundled datasets; prepare public ones")
    data_commands = data.add_subparsers(
        dest="data_command", metavar="SUBCOMMAND", required=True, parser_class=ArgumentParser
    )
    data_list = data_commands.add_parser("list", help="users, items and actions of each dataset")
    data_list.set_defaults(handler=cmd_data_list)
    from famerec.cli_prepare import add_prepare_command

    add_prepare_command(data_commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(model_in(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # usage errors (code 2) and --help (code 0)
        return int(stop.code or 0)
    from famerec.training.distributed import environment_rank

    rank = environment_rank()
    _setup_logging(args.quiet)
    if rank > 0:  # under torchrun, process 0 logs for the job; the others only their errors
        log.setLevel(logging.ERROR)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
        return code
    except FamerecError as error:
        where = f" (torchrun process {rank})" if rank else ""
        # one line of printable text, whatever the message quotes (a path, a file's bytes)
        print(f"famerec: error{where}: {printable(error, limit=None)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("famerec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `famerec ... | head` closed our stdout: not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit's flush does not fail again
        return 0


if __name__ == "__main__":
    sys.exit(main())
