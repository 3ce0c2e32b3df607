"""Register step: register the trained model in the workspace with its evaluation metrics as tags.

The control plane's promotion gates read ``accuracy`` and ``auc`` from the tags of the ModelRegistered event
(numbers written as text), so every score of ``metrics.json`` becomes a tag. Lineage goes with them: the
training data the pipeline was given (``training_data``), this step's run (``run_id``, from
``AZUREML_RUN_ID``) and the pipeline job (``pipeline_job``, from ``AZUREML_ROOT_RUN_ID``; for a retraining
the control plane dispatched, its ``retrain-<model>-<digest>`` name). No ``created_by`` tag is written: the
control plane takes the registrant from the workspace's own record of who created the model, and separation
of duties must not rest on a tag anyone may write.

With ``--dry-run`` nothing is sent: the model entity that would be registered (name, path, type, description,
tags, properties) is written to ``<out>/model.json``. Otherwise the model is registered with azure-ai-ml in
the workspace the job runs in, as the job's identity, and ``model.json`` also gets the registered version.
"""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from churn_common import metrics_file, write_json

SCORES = ("accuracy", "auc", "precision", "recall", "f1", "log_loss")
GATED = ("accuracy", "auc")  # what the shipped policy's promotion gates need
LINEAGE = {"run_id": "AZUREML_RUN_ID", "pipeline_job": "AZUREML_ROOT_RUN_ID"}
WORKSPACE = ("AZUREML_ARM_SUBSCRIPTION", "AZUREML_ARM_RESOURCEGROUP", "AZUREML_ARM_WORKSPACE_NAME")


def model_entity(model: Path, metrics: Mapping[str, Any], name: str, training_data: str,
                 environ: Mapping[str, str]) -> dict[str, Any]:
    """The model to register, as the keyword arguments of ``azure.ai.ml.entities.Model``."""
    missing = [score for score in GATED if score not in metrics]
    if missing:
        raise SystemExit(f"error: the metrics have no {', '.join(missing)}; the promotion gates need them")
    tags = {score: f"{float(metrics[score]):.4f}" for score in SCORES if score in metrics}
    tags["training_data"] = training_data
    tags.update({tag: environ[variable] for tag, variable in LINEAGE.items() if environ.get(variable)})
    mlflow = (model / "MLmodel").is_file()
    properties = {"framework": "scikit-learn", "test_rows": str(metrics.get("test_rows", "")),
                  "threshold": str(metrics.get("threshold", ""))}
    description = (f"Churn classifier retrained by the retrain-churn pipeline on {training_data}: accuracy "
                   f"{tags['accuracy']}, AUC {tags['auc']} on {metrics.get('test_rows', '?')} held-out rows.")
    return {"name": name, "path": str(model.resolve()), "type": "mlflow_model" if mlflow else "custom_model",
            "description": description, "tags": tags, "properties": properties}


def credential(environ: Mapping[str, str]):
    """The job's identity: the submitting user's when the job runs with it, else the compute's managed identity."""
    if environ.get("OBO_ENDPOINT"):
        from azure.ai.ml.identity import AzureMLOnBehalfOfCredential

        return AzureMLOnBehalfOfCredential()
    from azure.identity import DefaultAzureCredential

    # A compute with a user-assigned identity names it in DEFAULT_IDENTITY_CLIENT_ID.
    return DefaultAzureCredential(managed_identity_client_id=environ.get("DEFAULT_IDENTITY_CLIENT_ID"))


def register(entity: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    missing = [variable for variable in WORKSPACE if not environ.get(variable)]
    if missing:
        raise SystemExit(f"error: {', '.join(missing)} not set: run this step in an Azure ML job, or use --dry-run")
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Model

    client = MLClient(credential(environ), *(environ[variable] for variable in WORKSPACE))
    created = client.models.create_or_update(Model(**entity))
    return {**entity, "version": str(created.version), "id": created.id}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the train step's model folder")
    parser.add_argument("--metrics", type=Path, required=True, help="the evaluate step's folder (or metrics.json)")
    parser.add_argument("--model-name", default="churn")
    parser.add_argument("--training-data", required=True, help="the training data reference, kept as lineage")
    parser.add_argument("--out", type=Path, required=True, help="folder for model.json")
    parser.add_argument("--dry-run", action="store_true", help="write the model entity instead of registering it")
    args = parser.parse_args(argv)

    metrics = json.loads(metrics_file(args.metrics).read_text(encoding="utf-8"))
    entity = model_entity(args.model, metrics, args.model_name, args.training_data, os.environ)
    if args.dry_run:
        write_json(args.out / "model.json", entity)
        print(f"register (dry run): would register {entity['name']} ({entity['type']}) with tags "
              + ", ".join(f"{k}={v}" for k, v in entity["tags"].items()) + f"; entity in {args.out / 'model.json'}")
        return 0
    registered = register(entity, os.environ)
    write_json(args.out / "model.json", registered)
    print(f"register: {registered['name']}:{registered['version']} ({entity['type']}) with tags "
          + ", ".join(f"{k}={v}" for k, v in entity["tags"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
