"""Prep step: split the labelled churn sample into a training set and a stratified, held-out test set."""
from __future__ import annotations

import argparse
from pathlib import Path

from churn_common import FEATURES, LABEL, read_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="the labelled CSV (or a folder holding one)")
    parser.add_argument("--train-out", type=Path, required=True, help="folder for train.csv")
    parser.add_argument("--test-out", type=Path, required=True, help="folder for test.csv")
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    from sklearn.model_selection import train_test_split

    table = read_table(args.data)[[*FEATURES, LABEL]]
    complete = table.dropna()
    if not set(complete[LABEL].unique()) <= {0, 1}:
        raise SystemExit(f"error: {LABEL} must be 0 or 1")
    train, test = train_test_split(complete, test_size=args.test_size, random_state=args.seed,
                                   stratify=complete[LABEL])
    for folder, name, part in ((args.train_out, "train.csv", train), (args.test_out, "test.csv", test)):
        folder.mkdir(parents=True, exist_ok=True)
        part.to_csv(folder / name, index=False)
    print(f"prep: {len(train)} rows to train, {len(test)} held out (churn rate {complete[LABEL].mean():.1%}; "
          f"{len(table) - len(complete)} incomplete rows dropped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
