"""What the churn pipeline's steps share: the columns of the data and how step folders are read and written."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NUMERICAL = ["age", "tenure_months", "monthly_charges"]
CATEGORICAL = ["plan"]
FEATURES = NUMERICAL + CATEGORICAL
LABEL = "churned"


def read_table(path: Path, name: str | None = None):
    """A CSV given as a file, or as a step's folder holding ``name`` (or its only CSV)."""
    import pandas as pd

    if path.is_dir():
        candidates = [path / name] if name else sorted(path.glob("*.csv"))
        if len(candidates) != 1 or not candidates[0].is_file():
            raise SystemExit(f"error: expected {'the file ' + name if name else 'one CSV file'} in {path}")
        path = candidates[0]
    table = pd.read_csv(path)
    missing = [column for column in [*FEATURES, LABEL] if column not in table.columns]
    if missing:
        raise SystemExit(f"error: {path} has no column {', '.join(missing)}")
    return table


def metrics_file(path: Path) -> Path:
    """The metrics JSON: the file itself, or metrics.json in the evaluate step's folder."""
    return path / "metrics.json" if path.is_dir() else path


def write_json(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
