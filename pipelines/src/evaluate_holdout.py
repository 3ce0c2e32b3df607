"""Test stage, evaluate_holdout step: score the candidate model on held-out production data with labels.

The model is the pipeline's ``model`` input as Azure ML mounts it: an MLflow model folder (``MLmodel``, what the
train step saves in the shipped environment) or a folder with ``model.joblib``, at its top or one level down.
Rows missing a feature or the label cannot be scored and are left out (data_quality reports them); the results are
``auc`` and ``accuracy`` on the rest. The scored rows go to ``scored.csv`` (the data plus ``probability`` and
``predicted``) for the fairness step, which then judges the very predictions evaluated here.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from churn_common import FEATURES, LABEL
from evaluate import evaluate, load_model
from stage_results import read_csv, write_step

MARKERS = ("MLmodel", "model.joblib")


def model_folder(folder: Path) -> Path:
    """The folder holding the saved model: ``folder`` itself, else the shallowest folder below it with one."""
    found = sorted((path for marker in MARKERS for path in folder.rglob(marker) if path.is_file()),
                   key=lambda path: (len(path.parts), path.name != "MLmodel"))
    if not found:
        raise SystemExit(f"error: no MLflow model (MLmodel) or model.joblib in {folder}")
    return found[0].parent


def scorable(table):
    """The rows with every feature and a 0/1 label."""
    missing = [column for column in [*FEATURES, LABEL] if column not in table.columns]
    if missing:
        raise SystemExit(f"error: the test data has no column {', '.join(missing)}")
    complete = table.dropna(subset=[*FEATURES, LABEL])
    complete = complete[complete[LABEL].isin([0, 1])].copy()
    complete[LABEL] = complete[LABEL].astype(int)
    if complete[LABEL].nunique() < 2:
        raise SystemExit(f"error: the test data needs both labels to compute an AUC; it has {len(complete)} "
                         "scorable rows")
    return complete


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the model folder (MLflow model or model.joblib)")
    parser.add_argument("--test-data", type=Path, required=True, help="the labelled held-out CSV (or its folder)")
    parser.add_argument("--metrics-out", type=Path, required=True, help="folder for evaluate_holdout.json")
    parser.add_argument("--scored-out", type=Path, required=True, help="folder for scored.csv")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability from which churn is predicted")
    args = parser.parse_args(argv)

    table = read_csv(args.test_data)
    rows = scorable(table)
    model = load_model(model_folder(args.model))
    scores = evaluate(model, rows, args.threshold)
    rows["probability"] = model.predict_proba(rows[FEATURES])[:, 1]
    rows["predicted"] = (rows["probability"] >= args.threshold).astype(int)
    args.scored_out.mkdir(parents=True, exist_ok=True)
    rows.to_csv(args.scored_out / "scored.csv", index=False)
    write_step(args.metrics_out, "evaluate_holdout", {"auc": scores["auc"], "accuracy": scores["accuracy"]},
               scores=scores, rows=len(table), scored_rows=len(rows))
    print(f"evaluate_holdout: auc {scores['auc']:.4f}, accuracy {scores['accuracy']:.4f} on {len(rows)} of "
          f"{len(table)} rows ({len(table) - len(rows)} without every feature and a 0/1 label left out)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
