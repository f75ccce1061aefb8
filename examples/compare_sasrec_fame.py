"""Train SASRec and FAME on a slice of Amazon Beauty from Python, compare them, plot curves.

    python examples/compare_sasrec_fame.py               # about a minute on 2 CPU cores
    python examples/compare_sasrec_fame.py --users 5000 --epochs 30

A small slice and few epochs show the API, not the models' quality: for results, train on the
whole dataset to early stop (`famerec train`, or `famerec.train` without the limits below).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files; no screen needed
import matplotlib.pyplot as plt  # noqa: E402

import famerec  # noqa: E402
from famerec.data import load_bundled  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1500, help="first users of Beauty to use")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default=None, help="folder for the runs and the plot")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads, 0 = all cores")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="famerec-example-"))

    beauty = load_bundled("beauty")
    sequences = {
        int(beauty.user_ids[u]): beauty.item_ids[beauty.sequence(u) - 1].tolist()
        for u in range(args.users)
    }  # user -> items, oldest first: any mapping works, as do DataFrames and files
    common = {"epochs": args.epochs, "hidden": 64, "threads": args.threads, "quiet": True}

    sasrec = famerec.train(model="sasrec", data=sequences, out=out / "sasrec", **common)
    fame = famerec.train(
        model="fame", data=sequences, init_from=sasrec, out=out / "fame", experts=4, **common
    )
    print(sasrec)
    print(fame)
    print(famerec.compare([sasrec, fame]).select("model", "best_epoch", "^test .*$"))

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    sasrec.plot(axes[0])
    fame.plot(axes[1])
    figure.tight_layout()
    figure.savefig(out / "curves.png", dpi=100)
    print(f"training curves: {out / 'curves.png'}")
    print("top-5 for the first user's history:", fame.recommender.recommend_user(1, k=5).items)


if __name__ == "__main__":
    main()
