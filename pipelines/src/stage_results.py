"""What the test stage's steps share: reading the held-out data as it comes, and the small JSON each step writes.

Every step writes ``<step>.json`` in its output folder: ``{"step": ..., "results": {name: number}, ...}`` plus
whatever details explain the numbers. ``results`` holds only what the report step publishes on the pipeline run,
where the control plane compares it with the policy's ``staging.test.gates``; the names are the gates' names.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from churn_common import write_json


def read_csv(path: Path):
    """A CSV given as a file, or as a folder holding exactly one; unlike ``churn_common.read_table`` it takes the
    columns as they are, since checking them is part of the test stage."""
    import pandas as pd

    if path.is_dir():
        candidates = sorted(path.glob("*.csv"))
        if len(candidates) != 1:
            raise SystemExit(f"error: expected one CSV file in {path}, found {len(candidates)}")
        path = candidates[0]
    return pd.read_csv(path)


def write_step(folder: Path, step: str, results: dict[str, float], **details: Any) -> Path:
    for name, value in results.items():
        if not math.isfinite(value):
            raise SystemExit(f"error: {step} computed no finite {name} ({value})")
    path = folder / f"{step}.json"
    write_json(path, {"step": step, "results": {name: float(value) for name, value in results.items()}, **details})
    return path


def read_step(path: Path) -> dict[str, Any]:
    """A step's JSON: the file itself, or the only ``*.json`` in the step's output folder."""
    if path.is_dir():
        candidates = sorted(path.glob("*.json"))
        if len(candidates) != 1:
            raise SystemExit(f"error: expected one JSON file in {path}, found {len(candidates)}")
        path = candidates[0]
    content = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(content, dict) or not isinstance(content.get("results"), dict):
        raise SystemExit(f"error: {path} has no results")
    return content
