"""Evaluate step: score the held-out test set and write ``metrics.json``; log the metrics to the job with mlflow."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from churn_common import FEATURES, LABEL, read_table, write_json

SCORES = ("accuracy", "auc", "precision", "recall", "f1", "log_loss")


def load_model(folder: Path):
    """The train step's model: an MLflow model (a folder with an MLmodel file) or model.joblib."""
    if (folder / "MLmodel").is_file():
        import mlflow.sklearn

        return mlflow.sklearn.load_model(str(folder))
    import joblib

    return joblib.load(folder / "model.joblib")


def evaluate(model, test, threshold: float = 0.5) -> dict[str, float]:
    from sklearn import metrics

    truth = test[LABEL]
    probability = model.predict_proba(test[FEATURES])[:, 1]
    predicted = (probability >= threshold).astype(int)
    scores = {
        "accuracy": metrics.accuracy_score(truth, predicted),
        "auc": metrics.roc_auc_score(truth, probability),
        "precision": metrics.precision_score(truth, predicted, zero_division=0),
        "recall": metrics.recall_score(truth, predicted, zero_division=0),
        "f1": metrics.f1_score(truth, predicted, zero_division=0),
        "log_loss": metrics.log_loss(truth, probability),
    }
    return {**{name: round(float(value), 4) for name, value in scores.items()},
            "threshold": threshold, "test_rows": len(test), "churn_rate": round(float(truth.mean()), 4)}


def log_to_job(scores: dict[str, float]) -> bool:
    """Log the scores with mlflow when it is installed and has somewhere to log to (Azure ML sets
    MLFLOW_TRACKING_URI in every job; elsewhere mlflow would fill an mlruns folder in the working directory)."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return False
    try:
        import mlflow
    except ImportError:
        return False
    mlflow.log_metrics({name: scores[name] for name in SCORES})
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="the train step's model folder")
    parser.add_argument("--test", type=Path, required=True, help="the prep step's test folder (or a CSV)")
    parser.add_argument("--metrics-out", type=Path, required=True, help="folder for metrics.json")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability from which churn is predicted")
    args = parser.parse_args(argv)

    test = read_table(args.test, "test.csv" if args.test.is_dir() else None)
    scores = evaluate(load_model(args.model), test, args.threshold)
    write_json(args.metrics_out / "metrics.json", scores)
    logged = " (logged to the job with mlflow)" if log_to_job(scores) else ""
    print("evaluate: " + ", ".join(f"{name} {scores[name]:.4f}" for name in SCORES) + f" on {len(test)} rows{logged}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
