"""Train step: fit the churn classifier (one-hot ``plan``, gradient boosting) and save it.

With mlflow installed (the shipped environment) the model is saved as an MLflow model, which Azure ML deploys
to an online endpoint without a scoring script or environment; without it, as ``model.joblib``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from churn_common import CATEGORICAL, FEATURES, LABEL, NUMERICAL, read_table


def classifier(seed: int):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    columns = ColumnTransformer([("plan", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
                                 ("numbers", "passthrough", NUMERICAL)])
    return Pipeline([("columns", columns), ("model", GradientBoostingClassifier(random_state=seed))])


def save(model, features, folder: Path) -> str:
    """Save ``model`` in ``folder``; returns the file or format written."""
    try:
        import mlflow.sklearn
        from mlflow.models import infer_signature
    except ImportError:
        import joblib

        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, folder / "model.joblib")
        return "model.joblib"
    mlflow.sklearn.save_model(model, str(folder), signature=infer_signature(features, model.predict(features)))
    return "MLflow model"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="the prep step's train folder (or a CSV)")
    parser.add_argument("--model-out", type=Path, required=True, help="folder for the saved model")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    train = read_table(args.train, "train.csv" if args.train.is_dir() else None)
    model = classifier(args.seed).fit(train[FEATURES], train[LABEL])
    saved = save(model, train[FEATURES], args.model_out)
    print(f"train: gradient boosting on {len(train)} rows, saved as {saved} in {args.model_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
