"""The retraining pipeline the policy names (pipelines/retrain-churn.yml): it loads as Azure ML loads it, the
control plane's adapter accepts it with the inputs a retraining task passes, and its steps run locally on the
shipped training sample into a registration that the promotion gates accept."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, load_event

PIPELINES = ROOT / "pipelines"
SRC = PIPELINES / "src"
TRAINING_CSV = PIPELINES / "data" / "churn-training.csv"
STEPS = {"prep", "train", "evaluate", "register"}
LINEAGE_ENV = {"AZUREML_RUN_ID": "churn_register_7f3c1a", "AZUREML_ROOT_RUN_ID": "retrain-churn-0123456789ab"}


def churn_retraining(policy):
    rule = policy.rule_for("churn")
    assert rule is not None and rule.retraining is not None
    return rule.retraining


def task_inputs(policy) -> dict[str, str]:
    """What a churn retraining task passes to the pipeline (controlplane.handlers.actions.retrain)."""
    return {"model_name": "churn", **churn_retraining(policy).inputs}


def run_step(script: str, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SRC / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def step_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AZUREML_", "OBO_"))}
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", **extra}


# -- the YAML, as Azure ML reads it ---------------------------------------------------------------------------


def test_the_policy_names_the_shipped_pipeline_and_it_loads_offline_with_four_steps(policy):
    from azure.ai.ml import load_job
    from azure.ai.ml.entities import CommandComponent, PipelineJob

    # GIVEN the churn rule's retraining pipeline, as the policy names it
    retraining = churn_retraining(policy)
    assert (ROOT / retraining.pipeline).is_file()

    # WHEN azure-ai-ml loads it (no workspace, no network)
    job = load_job(source=ROOT / retraining.pipeline)

    # THEN it is a valid pipeline job of four command steps, each with its component loaded from components/
    assert isinstance(job, PipelineJob)
    assert job._validate().passed
    assert set(job.jobs) == STEPS
    for name, step in job.jobs.items():
        component = step.component
        assert isinstance(component, CommandComponent), name
        assert f"python {name}.py " in component.command
        assert (SRC / f"{name}.py").is_file()
        assert Path(component.base_path, component.code).resolve() == SRC
        assert component.environment.image.startswith("mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04")
        assert "python=3.11" in component.environment.conda_file["dependencies"]
    # AND it declares exactly the inputs the control plane passes, with the policy's experiment and compute
    assert set(job.inputs) == set(task_inputs(policy))
    assert job.inputs["training_data"].result().type == "uri_file"
    assert job.inputs["model_name"].result() == "churn"
    assert job.experiment_name == retraining.experiment
    assert job.settings.default_compute == retraining.compute
    # AND registration happens on every run: Azure ML never reuses an earlier register step
    assert job.jobs["register"].component.is_deterministic is False
    assert job.jobs["register"].inputs["training_data"]._data["mode"] == "direct"


def test_the_control_plane_adapter_accepts_the_pipeline_with_a_retraining_tasks_inputs(services, monkeypatch):
    from azure.ai.ml import Input

    from controlplane.adapters.azureml import AzureMLGateway
    from controlplane.adapters.clock import SystemClock
    from controlplane.handlers.dispatch_azureml import AzureMLDispatcher
    from controlplane.handlers.registry import receive_registry_event
    from tests.fakes import FakeWorkspace

    # GIVEN the retraining task a churn monitor breach opens under the shipped policy
    [task] = receive_registry_event(services, load_event("eg_monitor_breach.json")[0]).tasks
    workspace = FakeWorkspace()
    AzureMLDispatcher(workspace, SystemClock()).dispatch(task)
    [(_, request)] = workspace.called("submit_pipeline")
    assert dict(request.inputs) == task_inputs(services.policy)

    # WHEN the Azure ML adapter builds the job from the YAML, from the app's root as in Azure (no network)
    monkeypatch.chdir(ROOT)
    loaded = AzureMLGateway._pipeline_from_yaml(request)
    job = AzureMLGateway("subscription", "rg", "workspace")._pipeline(None, request)

    # THEN every input is set: the data asset as a uri_file Input, the model name as a literal
    for built in (loaded, job):
        training_data = built.inputs["training_data"].result()
        assert isinstance(training_data, Input)
        assert (training_data.type, training_data.path) == ("uri_file", "churn-training@latest")
        assert built.inputs["model_name"].result() == "churn"
    # AND the job carries the task's name, experiment, compute and tags
    assert job.name == request.name and job.name.startswith("retrain-churn-")
    assert job.experiment_name == request.experiment == "churn-retraining"
    assert job.settings.default_compute == request.compute == "cpu-cluster"
    assert job.tags["controlplane.idempotency_key"] == request.tags["controlplane.idempotency_key"]


# -- the training sample --------------------------------------------------------------------------------------


def test_the_training_sample_is_what_its_seeded_script_writes(tmp_path):
    # WHEN the documented script writes the sample again
    done = subprocess.run([sys.executable, str(PIPELINES / "data" / "make_churn_training.py"),
                           "--out", str(tmp_path / "again.csv")], capture_output=True, text=True, timeout=60)

    # THEN it is the shipped file, byte for byte: the reference's four columns plus a 0/1 label
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "again.csv").read_bytes() == TRAINING_CSV.read_bytes()
    lines = TRAINING_CSV.read_text(encoding="utf-8").splitlines()
    reference = (ROOT / "data" / "reference" / "churn.csv").read_text(encoding="utf-8").splitlines()[0]
    assert lines[0] == reference + ",churned"
    assert len(lines) == 3001 and {line.rsplit(",", 1)[1] for line in lines[1:]} == {"0", "1"}


# -- the steps, run locally -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory) -> Path:
    """The four steps chained as the pipeline chains them, in a scratch folder, with a job's lineage variables."""
    work = tmp_path_factory.mktemp("retrain-churn")
    env = step_env(**LINEAGE_ENV)
    commands = [
        ("prep.py", "--data", str(TRAINING_CSV), "--train-out", "train", "--test-out", "test"),
        ("train.py", "--train", "train", "--model-out", "model"),
        ("evaluate.py", "--model", "model", "--test", "test", "--metrics-out", "metrics"),
        ("register.py", "--model", "model", "--metrics", "metrics", "--model-name", "churn",
         "--training-data", "azureml:churn-training@latest", "--out", "registration", "--dry-run"),
    ]
    for script, *args in commands:
        done = run_step(script, *args, cwd=work, env=env)
        assert done.returncode == 0, f"{script}: {done.stderr}"
        (work / f"{script}.out").write_text(done.stdout, encoding="utf-8")
    return work


def test_prep_splits_the_sample_into_a_stratified_train_and_test_set(pipeline_run):
    import pandas as pd

    train = pd.read_csv(pipeline_run / "train" / "train.csv")
    test = pd.read_csv(pipeline_run / "test" / "test.csv")
    assert (len(train), len(test)) == (2400, 600)
    assert list(train.columns) == list(test.columns) == ["age", "tenure_months", "monthly_charges", "plan", "churned"]
    assert abs(train["churned"].mean() - test["churned"].mean()) < 0.01


def test_train_saves_a_model_that_predicts_from_the_four_features(pipeline_run):
    import joblib
    import pandas as pd

    model = joblib.load(pipeline_run / "model" / "model.joblib")
    rows = pd.read_csv(pipeline_run / "test" / "test.csv").head(5)
    probabilities = model.predict_proba(rows[["age", "tenure_months", "monthly_charges", "plan"]])
    assert probabilities.shape == (5, 2)


def test_evaluate_writes_metrics_that_pass_the_policys_gates(pipeline_run, policy):
    metrics = json.loads((pipeline_run / "metrics" / "metrics.json").read_text(encoding="utf-8"))

    assert set(metrics) >= {"accuracy", "auc", "precision", "recall", "f1", "log_loss", "test_rows"}
    assert metrics["test_rows"] == 600
    assert metrics["accuracy"] >= 0.85 and metrics["auc"] >= 0.80
    gates = policy.rule_for("churn").promotion.parsed_gates()
    assert [gate.passes(metrics[gate.metric]) for gate in gates] == [True] * len(gates)
    assert "logged to the job" not in (pipeline_run / "evaluate.py.out").read_text()  # no tracking URI here


def test_register_dry_run_writes_the_model_entity_with_the_metrics_as_tags(pipeline_run):
    from azure.ai.ml.entities import Model

    metrics = json.loads((pipeline_run / "metrics" / "metrics.json").read_text(encoding="utf-8"))
    entity = json.loads((pipeline_run / "registration" / "model.json").read_text(encoding="utf-8"))

    assert set(entity) == {"name", "path", "type", "description", "tags", "properties"}
    assert entity["name"] == "churn" and entity["type"] == "custom_model"
    assert Path(entity["path"]) == (pipeline_run / "model").resolve()
    for score in ("accuracy", "auc", "precision", "recall", "f1", "log_loss"):
        assert entity["tags"][score] == f"{metrics[score]:.4f}"
    assert entity["tags"]["training_data"] == "azureml:churn-training@latest"
    assert entity["tags"]["run_id"] == LINEAGE_ENV["AZUREML_RUN_ID"]
    assert entity["tags"]["pipeline_job"] == LINEAGE_ENV["AZUREML_ROOT_RUN_ID"]
    assert "created_by" not in entity["tags"] and "created_by" not in entity["properties"]
    assert all(isinstance(value, str) for value in [*entity["tags"].values(), *entity["properties"].values()])
    # the entity is what azure-ai-ml would be given
    model = Model(**entity)
    assert (model.name, model.type, model.tags) == ("churn", "custom_model", entity["tags"])


def test_the_registration_passes_the_promotion_gates_of_the_shipped_policy(pipeline_run, services):
    from controlplane.domain.ledger import Outcome
    from controlplane.handlers.registry import receive_registry_event

    # GIVEN the ModelRegistered event Azure ML sends for the entity the register step writes
    entity = json.loads((pipeline_run / "registration" / "model.json").read_text(encoding="utf-8"))
    event = load_event("eg_model_registered_sdk.json")
    event["subject"] = f"models/{entity['name']}:5"
    event["data"] = {"modelName": entity["name"], "modelVersion": "5", "modelTags": entity["tags"],
                     "modelProperties": entity["properties"]}

    # WHEN the control plane decides it
    decision = receive_registry_event(services, event)

    # THEN its gates read the evaluated metrics and pass, and the registrant is not taken from a tag
    assert decision.outcome is Outcome.REQUEST_APPROVAL, decision.reason
    assert decision.evidence["metrics"] == {"accuracy": float(entity["tags"]["accuracy"]),
                                            "auc": float(entity["tags"]["auc"])}
    assert [gate["passed"] for gate in decision.evidence["gates"]] == [True, True]
    assert decision.evidence["registrant"] == ""


def test_register_refuses_metrics_without_what_the_gates_need(pipeline_run, tmp_path):
    metrics = json.loads((pipeline_run / "metrics" / "metrics.json").read_text(encoding="utf-8"))
    del metrics["auc"]
    (tmp_path / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")

    done = run_step("register.py", "--model", str(pipeline_run / "model"), "--metrics", str(tmp_path / "metrics.json"),
                    "--training-data", "local.csv", "--out", str(tmp_path / "out"), "--dry-run", cwd=tmp_path,
                    env=step_env())

    assert done.returncode != 0 and "auc" in done.stderr
    assert not (tmp_path / "out").exists()


def test_register_outside_an_azure_ml_job_names_the_missing_workspace_variables(pipeline_run, tmp_path):
    done = run_step("register.py", "--model", str(pipeline_run / "model"), "--metrics", str(pipeline_run / "metrics"),
                    "--training-data", "local.csv", "--out", str(tmp_path / "out"), cwd=tmp_path, env=step_env())

    assert done.returncode != 0
    assert "AZUREML_ARM_SUBSCRIPTION" in done.stderr and "--dry-run" in done.stderr


# -- with mlflow, as in the shipped environment ---------------------------------------------------------------

MLFLOW_STAND_IN = {
    "__init__.py": """
import json, os

def log_metrics(metrics):
    with open(os.environ["STAND_IN_MLFLOW_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(metrics) + "\\n")
""",
    "models.py": """
def infer_signature(model_input, model_output=None):
    return {"inputs": list(model_input.columns), "outputs": len(model_output)}
""",
    "sklearn.py": """
import os, pathlib, joblib

def save_model(sk_model, path, signature=None):
    folder = pathlib.Path(path)
    if folder.exists() and any(folder.iterdir()):
        raise RuntimeError(f"Path '{path}' already exists and is not empty")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLmodel").write_text(f"flavors:\\n  sklearn: {{}}\\nsignature: {signature['inputs']}\\n")
    joblib.dump(sk_model, folder / "model.pkl")

def load_model(model_uri):
    return joblib.load(pathlib.Path(model_uri) / "model.pkl")
""",
}


def test_with_mlflow_the_model_is_an_mlflow_model_and_the_metrics_are_logged_to_the_job(pipeline_run, tmp_path):
    # GIVEN mlflow importable (a stand-in with the calls the steps make) and a job's tracking URI
    package = tmp_path / "site" / "mlflow"
    package.mkdir(parents=True)
    for name, text in MLFLOW_STAND_IN.items():
        (package / name).write_text(text.lstrip(), encoding="utf-8")
    log = tmp_path / "mlflow-log.jsonl"
    env = step_env(PYTHONPATH=str(tmp_path / "site"), MLFLOW_TRACKING_URI="azureml://example",
                   STAND_IN_MLFLOW_LOG=str(log))
    (tmp_path / "model").mkdir()  # Azure ML hands a step its output folder already made, and empty

    # WHEN train, evaluate and register run
    for script, *args in [
            ("train.py", "--train", str(pipeline_run / "train"), "--model-out", "model"),
            ("evaluate.py", "--model", "model", "--test", str(pipeline_run / "test"), "--metrics-out", "metrics"),
            ("register.py", "--model", "model", "--metrics", "metrics", "--training-data", "data.csv",
             "--out", "registration", "--dry-run")]:
        done = run_step(script, *args, cwd=tmp_path, env=env)
        assert done.returncode == 0, f"{script}: {done.stderr}"

    # THEN the model is saved as an MLflow model with its signature, the scores are logged once, and the
    # registration is an mlflow_model with the same metrics as the run without mlflow
    assert "age" in (tmp_path / "model" / "MLmodel").read_text()
    [logged] = [json.loads(line) for line in log.read_text().splitlines()]
    assert set(logged) == {"accuracy", "auc", "precision", "recall", "f1", "log_loss"}
    entity = json.loads((tmp_path / "registration" / "model.json").read_text(encoding="utf-8"))
    assert entity["type"] == "mlflow_model"
    expected = json.loads((pipeline_run / "registration" / "model.json").read_text(encoding="utf-8"))
    assert {k: entity["tags"][k] for k in ("accuracy", "auc")} == {k: expected["tags"][k] for k in ("accuracy", "auc")}
