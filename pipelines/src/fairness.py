"""Test stage, fairness step: how differently the candidate treats the groups of a sensitive feature.

It reads the predictions evaluate_holdout made (``scored.csv``: the label, ``predicted`` and the feature) and
computes, across the feature's groups:

- ``demographic_parity_difference``: the largest gap in positive-prediction rate, P(predicted = 1 | group);
- ``tpr_gap``: the largest gap in true-positive rate, P(predicted = 1 | churned = 1, group), the half of
  equalized odds that asks whether customers who do churn are caught equally often (the false-positive rates are
  reported in the details). Groups without a positive label have no true-positive rate and are left out of it.

Rows without a value for the feature are left out and counted. These are fairlearn's
``demographic_parity_difference`` and the TPR part of its ``equalized_odds_difference``, without the dependency.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from churn_common import LABEL
from stage_results import read_csv, write_step


def group_rates(scored, feature: str) -> dict[str, dict[str, Any]]:
    """Per group of ``feature``: its rows, positive-prediction rate, and true- and false-positive rates."""
    rates = {}
    for group, rows in scored.dropna(subset=[feature]).groupby(feature, sort=True):
        positives, negatives = rows[rows[LABEL] == 1], rows[rows[LABEL] == 0]
        rates[str(group)] = {
            "rows": len(rows),
            "positive_rate": float(rows["predicted"].mean()),
            "tpr": float(positives["predicted"].mean()) if len(positives) else None,
            "fpr": float(negatives["predicted"].mean()) if len(negatives) else None,
        }
    return rates


def gap(values: list[float | None]) -> float:
    known = [value for value in values if value is not None]
    return max(known) - min(known) if known else 0.0


def fairness(scored, feature: str) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    missing = [column for column in (feature, LABEL, "predicted") if column not in scored.columns]
    if missing:
        raise SystemExit(f"error: the scored data has no column {', '.join(missing)}")
    rates = group_rates(scored, feature)
    if not rates:
        raise SystemExit(f"error: no row has a value for {feature}")
    results = {"demographic_parity_difference": round(gap([r["positive_rate"] for r in rates.values()]), 4),
               "tpr_gap": round(gap([r["tpr"] for r in rates.values()]), 4)}
    return results, rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scored", type=Path, required=True, help="evaluate_holdout's scored.csv (or its folder)")
    parser.add_argument("--sensitive-feature", default="plan", help="the column whose groups are compared")
    parser.add_argument("--out", type=Path, required=True, help="folder for fairness.json")
    args = parser.parse_args(argv)

    scored = read_csv(args.scored)
    results, rates = fairness(scored, args.sensitive_feature)
    write_step(args.out, "fairness", results, sensitive_feature=args.sensitive_feature, groups=rates,
               fpr_gap=round(gap([r["fpr"] for r in rates.values()]), 4),
               rows_without_feature=int(scored[args.sensitive_feature].isna().sum()))
    print(f"fairness: across {len(rates)} groups of {args.sensitive_feature}, demographic parity difference "
          f"{results['demographic_parity_difference']:.4f}, TPR gap {results['tpr_gap']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
