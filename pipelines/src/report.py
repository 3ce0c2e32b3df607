"""Test stage, report step: gather the steps' results and publish them on the pipeline run.

The control plane judges a test stage when Azure ML reports the end of its pipeline job (RunCompleted or
RunStatusChanged): it reads the results by name from the job's tags or properties and compares them with the
policy's ``staging.test.gates``. This step writes each result as a tag of the ROOT pipeline run, the job the
control plane submitted and tagged, with mlflow: ``MlflowClient().set_tag(<parent run id>, name, "0.8812")``,
the value as text with four decimals. The pipeline run is this step's parent: the ``mlflow.parentRunId`` tag of
the step's run (``MLFLOW_RUN_ID``), or ``AZUREML_ROOT_RUN_ID`` if it has none. Tags are written while the
pipeline still runs, so the event of its end carries them.

``results.json`` holds the same name-to-text mapping. Without mlflow, or without ``MLFLOW_TRACKING_URI`` (Azure ML
sets it in every job), only ``results.json`` is written, and the step says so.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from churn_common import write_json
from stage_results import read_step


def collect(paths: list[Path]) -> dict[str, str]:
    """Every step's results, by name, as text with four decimals; a name reported twice is an error."""
    results: dict[str, str] = {}
    for path in paths:
        step = read_step(path)
        for name, value in step["results"].items():
            if name in results:
                raise SystemExit(f"error: {name} reported by more than one step (again by {step.get('step', path)})")
            results[name] = f"{float(value):.4f}"
    return results


def pipeline_run_id(client, environ: Mapping[str, str]) -> str:
    run_id = environ.get("MLFLOW_RUN_ID", "")
    parent = client.get_run(run_id).data.tags.get("mlflow.parentRunId") if run_id else None
    parent = parent or environ.get("AZUREML_ROOT_RUN_ID")
    if not parent:
        raise SystemExit("error: no pipeline run to tag: this step's run has no mlflow.parentRunId tag and "
                         "AZUREML_ROOT_RUN_ID is not set")
    return parent


def publish(results: Mapping[str, str], environ: Mapping[str, str]) -> str | None:
    """Tag the pipeline run with the results; the run's id, or None when there is no mlflow tracking here."""
    if not environ.get("MLFLOW_TRACKING_URI"):
        return None
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        return None
    client = MlflowClient()
    parent = pipeline_run_id(client, environ)
    for name, value in results.items():
        client.set_tag(parent, name, value)
    return parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, nargs="+", required=True,
                        help="the steps' output folders (or their JSON files)")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json")
    args = parser.parse_args(argv)

    results = collect(args.results)
    write_json(args.out / "results.json", results)
    tagged = publish(results, os.environ)
    where = (f"tagged on pipeline run {tagged}" if tagged else
             "not tagged on any run: mlflow or MLFLOW_TRACKING_URI is absent, so results.json only")
    print("report: " + ", ".join(f"{name} {value}" for name, value in results.items()) + f"; {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
