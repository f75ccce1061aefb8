"""`famerec data prepare`: raw public datasets into files famerec reads (famerec.data.prepare).

Kept apart from famerec.cli so that the command line's main module stays small.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("famerec")


def cmd_prepare(args: argparse.Namespace) -> int:
    from famerec.data import prepare
    from famerec.errors import ConfigError

    if args.kcore < 1:
        raise ConfigError(f"--kcore must be 1 or more, got {args.kcore}")
    prepare.check_out(args.out)  # before reading: a wrong --out costs nothing
    if args.source == "movielens":
        prepared = prepare.prepare_movielens(args.ratings, args.movies, kcore=args.kcore)
    else:
        prepared = prepare.prepare_amazon(args.reviews, args.meta, kcore=args.kcore)
    summary = prepare.write_prepared(prepared, args.out)
    print(
        f"{summary['source']}: {summary['users']:,} users, {summary['items']:,} items, "
        f"{summary['actions']:,} actions ({summary['kcore']}-core of {summary['raw_actions']:,})"
    )
    out = args.out
    print(f"written: {out}/{prepare.INTERACTIONS}, {out}/{prepare.ITEMS}, {out}/attributes/")
    print(
        f"train: famerec train --data {out}/{prepare.INTERACTIONS} --format table "
        f"--items {out}/{prepare.ITEMS} --attribute-cols {','.join(prepared.kinds)} "
        "--out runs/NAME"
    )
    return 0


def add_prepare_command(data_commands) -> None:
    """`famerec data prepare movielens|amazon ...` under `famerec data`."""
    prepare = data_commands.add_parser(
        "prepare",
        help="turn raw MovieLens or Amazon review files into files famerec reads",
        description="Reads the files as they are published (nothing is downloaded) and writes "
        "DIR/interactions.csv (user,item,timestamp; 5-core, each user's items oldest first), "
        "DIR/items.csv (item,name and attribute columns), DIR/attributes/*.json (one "
        "{item_id: [attribute ids]} file per column) and DIR/prepare.json. The preprocessing is "
        "the literature's: see docs/data.md.",
    )
    sources = prepare.add_subparsers(  # the parser class of famerec.cli, as `prepare` has
        dest="source", metavar="SOURCE", required=True, parser_class=type(prepare)
    )
    movielens = sources.add_parser(
        "movielens",
        help="MovieLens 100K (u.data, u.item), 1M/10M (ratings.dat, movies.dat), "
        "20M/25M/32M (ratings.csv, movies.csv)",
        description="Every rating is one action; iterative k-core on users and movies; each "
        "user's movies by timestamp, ties in file order; titles as names, genres as the "
        "attribute column 'genre'.",
    )
    movielens.add_argument("ratings", metavar="RATINGS", help="u.data, ratings.dat or ratings.csv")
    movielens.add_argument(
        "--movies", metavar="FILE", help="u.item, movies.dat or movies.csv: titles and genres"
    )
    amazon = sources.add_parser(
        "amazon",
        help="Amazon reviews of 2014 (reviews_X_5.json.gz), 2018 (X_5.json.gz) or 2023 "
        "(X.jsonl.gz), with their meta file",
        description="S3-Rec's preprocessing: every review is one action; iterative k-core on "
        "users and items; each user's items by review time, ties in file order; titles as "
        "names, brand (2023: store) and the categories below the top-level one as the "
        "attribute columns 'brand' and 'category'.",
    )
    amazon.add_argument("reviews", metavar="REVIEWS", help="JSON lines of reviews (.gz or not)")
    amazon.add_argument(
        "--meta", metavar="FILE", help="meta_X.json.gz (2014, 2018) or meta_X.jsonl.gz (2023)"
    )
    for parser in (movielens, amazon):
        parser.add_argument("--out", required=True, metavar="DIR", help="folder to write (new)")
        parser.add_argument(
            "--kcore", type=int, default=5, help="k of the iterative k-core (default: 5)"
        )
        parser.set_defaults(handler=cmd_prepare)
