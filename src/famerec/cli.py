"""The `famerec` command. Config flags are generated from `famerec.config`, not written out."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from famerec.config import PRESETS, config_options
from famerec.errors import FamerecError

log = logging.getLogger("famerec")


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors as one line and exit code 2, like every other input error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "famerec: warning: " if record.levelno >= logging.WARNING else "famerec: "
        return prefix + record.getMessage()


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field; only flags given on the command line become overrides."""
    groups = {}
    for key, flag, field, kind in config_options():
        section = key.split(".", 1)[0]
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} options")
        help_text = field.metadata.get("help", "")
        default = field.default
        kwargs = {"dest": key, "default": argparse.SUPPRESS}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            help_text += f" (default: {'on' if default else 'off'})"
        else:
            kwargs["type"] = kind
            kwargs["metavar"] = field.name.upper()
            if field.metadata.get("choices"):
                help_text += f"; one of {', '.join(field.metadata['choices'])}"
            if default is not None:
                help_text += f" (default: {default})"
        groups[section].add_argument(flag, help=help_text, **kwargs)


def _overrides(args: argparse.Namespace) -> dict:
    return {key: value for key, value in vars(args).items() if "." in key}


# -- commands --------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from famerec.report import metrics_table
    from famerec.training import resolve_config, train_run

    config = resolve_config(args.out, _overrides(args), preset=args.preset, resume=args.resume)
    metrics = train_run(
        config,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(metrics_table(metrics))
    print(f"run directory: {args.out}")
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from famerec.data import BUNDLED, load_bundled
    from famerec.report import table

    rows = []
    for name, description in BUNDLED.items():
        stats = load_bundled(name).stats()
        rows.append(
            [name, stats["users"], stats["items"], stats["actions"], f"{stats['avg_length']:.3f}",
             description]
        )
    headers = ["name", "users", "items", "actions", "avg length", "source"]
    print(table(headers, rows, align="lrrrrl"))
    return 0


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="famerec",
        description="Sequential recommendation with FAME and SASRec: train, evaluate, explain, serve.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only results and errors")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=ArgumentParser
    )

    train = commands.add_parser(
        "train",
        help="train and evaluate a model",
        description="Train a model with early stopping on validation NDCG@10, then test once.",
    )
    train.add_argument("--out", required=True, help="run directory to write")
    train.add_argument("--preset", choices=sorted(PRESETS), help="named bundle of settings")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.add_argument(
        "--overwrite", action="store_true", help="replace a run already in --out"
    )
    add_config_flags(train)
    train.set_defaults(handler=cmd_train)

    data = commands.add_parser("data", help="bundled datasets")
    data_commands = data.add_subparsers(
        dest="data_command", metavar="SUBCOMMAND", required=True, parser_class=ArgumentParser
    )
    data_list = data_commands.add_parser("list", help="users, items and actions of each dataset")
    data_list.set_defaults(handler=cmd_data_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # usage errors (code 2) and --help (code 0)
        return int(stop.code or 0)
    _setup_logging(args.quiet)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except FamerecError as error:
        print(f"famerec: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("famerec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
