"""Test stage, data_quality step: check the held-out data against the training sample's schema and ranges.

The schema is the churn data's (``churn_common``): the four features and the 0/1 label, the numbers numeric, and
the ranges are what the training sample holds (each number's minimum and maximum, ``plan``'s categories, the
label's 0 and 1). Results:

- ``schema_violations``: expected columns absent, plus numeric columns holding values that are not numbers;
- ``missing_rate_max``: the largest share of missing values in an expected column (an absent column counts as
  all missing);
- ``out_of_range_share``: the share of rows with a present value outside what the training sample holds (a
  number beyond its range, a category it never saw, text in a numeric column, a label other than 0 or 1).

Columns the schema does not name are listed, never counted: production extracts often carry ids and dates.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from churn_common import CATEGORICAL, FEATURES, LABEL, NUMERICAL, read_table
from stage_results import read_csv, write_step


def training_domain(training) -> dict[str, dict[str, Any]]:
    """What the training sample holds, per column: a numeric range or a set of values."""
    domain: dict[str, dict[str, Any]] = {
        column: {"min": float(training[column].min()), "max": float(training[column].max())} for column in NUMERICAL}
    domain.update({column: {"values": sorted(str(v) for v in training[column].dropna().unique())}
                   for column in CATEGORICAL})
    domain[LABEL] = {"values": ["0", "1"]}
    return domain


def check(table, domain: dict[str, dict[str, Any]]) -> tuple[dict[str, float], dict[str, Any]]:
    """The results and, per column, what was found."""
    import pandas as pd

    if table.empty:
        raise SystemExit("error: the test data has no rows")
    columns: dict[str, Any] = {}
    violations = 0
    outside = pd.Series(False, index=table.index)
    for column in [*FEATURES, LABEL]:
        if column not in table.columns:
            violations += 1
            columns[column] = {"present": False, "missing_rate": 1.0}
            continue
        values = table[column]
        present = values.notna()
        found: dict[str, Any] = {"present": True, "missing_rate": round(float((~present).mean()), 4)}
        if "min" in domain[column]:
            numbers = pd.to_numeric(values, errors="coerce")
            not_numbers = present & numbers.isna()
            if not_numbers.any():
                violations += 1
                found["not_numeric"] = int(not_numbers.sum())
            bad = not_numbers | (numbers < domain[column]["min"]) | (numbers > domain[column]["max"])
        else:
            known = set(domain[column]["values"])
            as_text = values.map(lambda v: str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))
            bad = present & ~as_text.isin(known)
        found["out_of_range"] = int(bad.sum())
        outside |= bad
        columns[column] = found
    results = {"schema_violations": float(violations),
               "missing_rate_max": max(checked["missing_rate"] for checked in columns.values()),
               "out_of_range_share": round(float(outside.mean()), 4)}
    return results, columns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-data", type=Path, required=True, help="the held-out CSV (or its folder)")
    parser.add_argument("--training-data", type=Path, required=True, help="the training sample (or its folder)")
    parser.add_argument("--out", type=Path, required=True, help="folder for data_quality.json")
    args = parser.parse_args(argv)

    domain = training_domain(read_table(args.training_data))
    table = read_csv(args.test_data)
    results, columns = check(table, domain)
    extra = [column for column in table.columns if column not in [*FEATURES, LABEL]]
    write_step(args.out, "data_quality", results, rows=len(table), columns=columns, training_domain=domain,
               unexpected_columns=extra)
    print(f"data_quality: {int(results['schema_violations'])} schema violations, largest missing rate "
          f"{results['missing_rate_max']:.4f}, {results['out_of_range_share']:.2%} of {len(table)} rows out of the "
          "training range")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
