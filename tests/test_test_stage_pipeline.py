"""The test-stage pipeline (pipelines/test-stage.yml): it loads as Azure ML loads it with the five steps wired as
pipelines/README.md documents, the control plane's adapter accepts it with a test stage's inputs, and each step
runs locally, on the shipped sample as held-out data, with a model trained by the retraining steps."""
from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from tests.support import ROOT
from tests.test_pipelines import MLFLOW_STAND_IN, TRAINING_CSV, run_step, step_env

PIPELINE = ROOT / "pipelines" / "test-stage.yml"
SRC = ROOT / "pipelines" / "src"
STEPS = {"evaluate_holdout", "data_quality", "fairness", "load_test", "report"}
FEATURES = ["age", "tenure_months", "monthly_charges", "plan"]
# The gates of the policy block pipelines/README.md documents, and what a test stage passes to the pipeline.
GATES = {"auc", "demographic_parity_difference", "missing_rate_max", "p95_latency_ms", "error_rate"}
STAGE_INPUTS = {"model": "azureml://registries/mlops-registry/models/churn/versions/7", "endpoint": "churn-ep",
                "deployment": "churn-7", "test_data": "azureml:churn-holdout@latest"}
LOOPBACK = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def step_results(folder: Path, name: str) -> dict:
    return json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))


# -- the YAML, as Azure ML reads it ---------------------------------------------------------------------------


def test_the_pipeline_loads_offline_with_five_steps_wired_as_documented():
    from azure.ai.ml import load_job
    from azure.ai.ml.entities import CommandComponent, PipelineJob

    # WHEN azure-ai-ml loads the file (no workspace, no network)
    job = load_job(source=PIPELINE)

    # THEN it is a valid pipeline job of five command steps, each a component of components/ running its script
    assert isinstance(job, PipelineJob) and job._validate().passed
    assert set(job.jobs) == STEPS
    for name, step in job.jobs.items():
        component = step.component
        assert isinstance(component, CommandComponent), name
        assert f"python {name}.py " in component.command
        assert Path(component.base_path, component.code).resolve() == SRC and (SRC / f"{name}.py").is_file()
        assert component.environment.image.startswith("mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04")
    # AND it declares the inputs of the documented policy block, with the documented types and defaults
    inputs = {name: value.result() for name, value in job.inputs.items()}
    assert set(inputs) == set(STAGE_INPUTS) | {"training_data", "sensitive_feature", "requests"}
    assert inputs["model"]["type"] == "mlflow_model"
    assert (inputs["test_data"]["type"], inputs["test_data"]["path"]) == ("uri_file", "churn-holdout@latest")
    assert (inputs["training_data"]["type"], inputs["training_data"]["path"]) == ("uri_file", "churn-training@latest")
    assert (inputs["sensitive_feature"], inputs["requests"]) == ("plan", 50)
    assert job.experiment_name == "churn-test-stage" and job.settings.default_compute == "cpu-cluster"
    # AND the steps feed each other: fairness judges evaluate_holdout's predictions, report reads every step
    binding = {(name, key): str(value._data) for name, step in job.jobs.items() for key, value in step.inputs.items()}
    assert binding[("evaluate_holdout", "model")] == "${{parent.inputs.model}}"
    assert binding[("fairness", "scored")] == "${{parent.jobs.evaluate_holdout.outputs.scored}}"
    assert binding[("fairness", "sensitive_feature")] == "${{parent.inputs.sensitive_feature}}"
    assert binding[("data_quality", "training_data")] == "${{parent.inputs.training_data}}"
    assert {binding[("load_test", key)] for key in ("endpoint", "deployment", "requests")} == {
        "${{parent.inputs.endpoint}}", "${{parent.inputs.deployment}}", "${{parent.inputs.requests}}"}
    assert {key: binding[("report", key)] for key in ("holdout", "quality", "fairness", "load")} == {
        "holdout": "${{parent.jobs.evaluate_holdout.outputs.metrics}}",
        "quality": "${{parent.jobs.data_quality.outputs.quality}}",
        "fairness": "${{parent.jobs.fairness.outputs.fairness}}",
        "load": "${{parent.jobs.load_test.outputs.load}}"}
    # AND the steps with effects outside their outputs run on every pipeline run, never reused
    assert {name for name, step in job.jobs.items() if step.component.is_deterministic is False} == {
        "load_test", "report"}


def test_the_control_plane_adapter_sets_a_test_stages_inputs(monkeypatch):
    from controlplane.adapters.azureml import AzureMLGateway
    from controlplane.ports.gateway import PipelineRequest

    # GIVEN the inputs of the documented policy block, with {model}, {endpoint} and {deployment} substituted
    request = PipelineRequest(name="test-churn-0123456789ab", experiment="churn-test-stage",
                              source="pipelines/test-stage.yml", inputs=STAGE_INPUTS, compute="cpu-cluster")

    # WHEN the adapter builds the job from the YAML, from the app's root as in Azure (no network)
    monkeypatch.chdir(ROOT)
    job = AzureMLGateway._pipeline_from_yaml(request)

    # THEN what would be submitted: the registry model an mlflow_model input, the data an uri_file, names literals
    inputs = {name: value.as_dict() for name, value in job._to_rest_object().properties.inputs.items()}
    assert inputs["model"] == {"jobInputType": "mlflow_model", "uri": STAGE_INPUTS["model"]}
    assert inputs["test_data"] == {"jobInputType": "uri_file", "uri": "churn-holdout@latest"}
    assert inputs["endpoint"] == {"jobInputType": "literal", "value": "churn-ep"}
    assert inputs["deployment"] == {"jobInputType": "literal", "value": "churn-7"}
    assert inputs["requests"] == {"jobInputType": "literal", "value": "50"}


# -- the steps, run locally -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def holdout(tmp_path_factory) -> Path:
    """evaluate_holdout on the shipped sample, with a model trained by the retraining's prep and train steps (as
    tests/test_pipelines.py runs them)."""
    work = tmp_path_factory.mktemp("test-stage")
    for script, *args in [
            ("prep.py", "--data", str(TRAINING_CSV), "--train-out", "train", "--test-out", "test"),
            ("train.py", "--train", "train", "--model-out", "model"),
            ("evaluate_holdout.py", "--model", "model", "--test-data", str(TRAINING_CSV), "--metrics-out", "holdout",
             "--scored-out", "scored")]:
        done = run_step(script, *args, cwd=work, env=step_env())
        assert done.returncode == 0, f"{script}: {done.stderr}"
    return work


def test_evaluate_holdout_scores_the_model_and_keeps_its_predictions(holdout):
    report = step_results(holdout / "holdout", "evaluate_holdout")
    scored = pd.read_csv(holdout / "scored" / "scored.csv")

    assert set(report["results"]) == {"auc", "accuracy"}
    assert 0.85 <= report["results"]["auc"] <= 1 and 0.80 <= report["results"]["accuracy"] <= 1
    assert report["scored_rows"] == report["rows"] == len(scored) == 3000
    assert set(scored["predicted"]) == {0, 1}
    assert ((scored["probability"] >= 0.5).astype(int) == scored["predicted"]).all()
    assert (scored["predicted"] == scored["churned"]).mean() == pytest.approx(report["results"]["accuracy"], abs=1e-4)


def test_evaluate_holdout_loads_an_mlflow_model_a_level_down_and_leaves_incomplete_rows_out(holdout, tmp_path):
    # GIVEN the same model as an MLflow model folder below the mounted input (mlflow is the stand-in the
    # retraining tests use), and held-out rows of which two lack a feature or the label
    package = tmp_path / "site" / "mlflow"
    package.mkdir(parents=True)
    for name, text in MLFLOW_STAND_IN.items():
        (package / name).write_text(text.lstrip(), encoding="utf-8")
    folder = tmp_path / "mounted" / "churn"
    folder.mkdir(parents=True)
    (folder / "MLmodel").write_text("flavors:\n  sklearn: {}\n", encoding="utf-8")
    shutil.copy(holdout / "model" / "model.joblib", folder / "model.pkl")
    rows = pd.read_csv(TRAINING_CSV).head(400)
    rows.loc[3, "age"] = None
    rows.loc[7, "churned"] = None
    rows.to_csv(tmp_path / "holdout.csv", index=False)

    # WHEN evaluate_holdout is given the mounted folder
    done = run_step("evaluate_holdout.py", "--model", "mounted", "--test-data", "holdout.csv", "--metrics-out", "m",
                    "--scored-out", "s", cwd=tmp_path, env=step_env(PYTHONPATH=str(tmp_path / "site")))

    # THEN it scores the 398 complete rows with the MLflow model
    assert done.returncode == 0, done.stderr
    report = step_results(tmp_path / "m", "evaluate_holdout")
    assert (report["rows"], report["scored_rows"]) == (400, 398) and report["results"]["auc"] > 0.85
    assert "398 of 400 rows" in done.stdout


def test_fairness_measures_the_gaps_of_a_known_example(tmp_path):
    # GIVEN predictions whose rates per group are known:
    #   a: 2 of 4 predicted positive (0.5); 2 of the 3 churners caught (TPR 2/3)
    #   b: 4 of 4 predicted positive (1.0); its one churner caught (TPR 1)
    #   c: 0 of 2 predicted positive (0.0); no churner, so no TPR
    #   and one row without a plan, left out
    scored = pd.DataFrame({
        "plan": ["a", "a", "a", "a", "b", "b", "b", "b", "c", "c", None],
        "churned": [1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1],
        "predicted": [1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1],
    })
    scored.to_csv(tmp_path / "scored.csv", index=False)

    # WHEN the fairness step compares the plans
    done = run_step("fairness.py", "--scored", "scored.csv", "--sensitive-feature", "plan", "--out", "fairness",
                    cwd=tmp_path, env=step_env())

    # THEN parity differs by 1.0 - 0.0 and the TPR by 1 - 2/3 (c has none)
    assert done.returncode == 0, done.stderr
    report = step_results(tmp_path / "fairness", "fairness")
    assert report["results"] == {"demographic_parity_difference": 1.0, "tpr_gap": 0.3333}
    assert report["groups"]["c"]["tpr"] is None and report["groups"]["a"]["positive_rate"] == 0.5
    assert report["fpr_gap"] == 1.0 and report["rows_without_feature"] == 1


@pytest.fixture(scope="module")
def sample_checks(holdout) -> Path:
    """data_quality and fairness on the shipped sample, as the pipeline runs them after evaluate_holdout."""
    for script, *args in [
            ("data_quality.py", "--test-data", str(TRAINING_CSV), "--training-data", str(TRAINING_CSV),
             "--out", "quality"),
            ("fairness.py", "--scored", "scored", "--out", "fairness")]:
        done = run_step(script, *args, cwd=holdout, env=step_env())
        assert done.returncode == 0, f"{script}: {done.stderr}"
    return holdout


def test_fairness_on_the_sample_reads_the_scored_rows(sample_checks):
    report = step_results(sample_checks / "fairness", "fairness")

    assert report["sensitive_feature"] == "plan" and set(report["groups"]) == {"basic", "pro", "enterprise"}
    assert sum(group["rows"] for group in report["groups"].values()) == 3000
    rates = [group["positive_rate"] for group in report["groups"].values()]
    assert report["results"]["demographic_parity_difference"] == pytest.approx(max(rates) - min(rates), abs=1e-4)


def run_quality(tmp_path: Path, table: pd.DataFrame) -> dict:
    table.to_csv(tmp_path / "holdout.csv", index=False)
    done = run_step("data_quality.py", "--test-data", "holdout.csv", "--training-data", str(TRAINING_CSV),
                    "--out", "quality", cwd=tmp_path, env=step_env())
    assert done.returncode == 0, done.stderr
    return step_results(tmp_path / "quality", "data_quality")


def test_data_quality_passes_the_training_sample_itself(sample_checks):
    report = step_results(sample_checks / "quality", "data_quality")

    assert report["results"] == {"schema_violations": 0.0, "missing_rate_max": 0.0, "out_of_range_share": 0.0}
    assert report["rows"] == 3000 and report["unexpected_columns"] == []


def test_data_quality_flags_injected_missing_and_out_of_range_values(tmp_path):
    # GIVEN 100 rows: age missing in 10, and 10 other rows out of the training range (5 bills ten times the
    # largest, 5 on a plan the training sample never had), plus a column the schema does not know
    table = pd.read_csv(TRAINING_CSV).head(100)
    table.loc[0:9, "age"] = None
    table.loc[10:14, "monthly_charges"] = table["monthly_charges"].max() * 10
    table.loc[15:19, "plan"] = "platinum"
    table["customer_id"] = range(100)

    report = run_quality(tmp_path, table)

    # THEN the missing rate and the out-of-range share say so, and the schema holds
    assert report["results"] == {"schema_violations": 0.0, "missing_rate_max": 0.1, "out_of_range_share": 0.1}
    assert report["columns"]["monthly_charges"]["out_of_range"] == 5 and report["columns"]["plan"]["out_of_range"] == 5
    assert report["unexpected_columns"] == ["customer_id"]


def test_data_quality_counts_absent_and_mistyped_columns(tmp_path):
    # GIVEN rows without tenure_months and with text in one row's age
    table = pd.read_csv(TRAINING_CSV).head(50).drop(columns=["tenure_months"])
    table["age"] = table["age"].astype(object)
    table.loc[0, "age"] = "forty"

    report = run_quality(tmp_path, table)

    assert report["results"] == {"schema_violations": 2.0, "missing_rate_max": 1.0, "out_of_range_share": 0.02}
    assert report["columns"]["tenure_months"] == {"present": False, "missing_rate": 1.0}
    assert report["columns"]["age"]["not_numeric"] == 1


class ScoringServer:
    """A local stand-in for an online endpoint: answers 500 to rows whose index is a multiple of 5, after 50 ms."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.append(({key.lower(): value for key, value in self.headers.items()}, body))
                threading.Event().wait(0.05)
                failing = body["input_data"]["index"][0] % 5 == 0
                answer = b'{"error": "boom"}' if failing else b"[0]"
                self.send_response(500 if failing else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/score"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def test_load_test_measures_latency_and_counts_server_errors(tmp_path):
    # GIVEN a local scoring server that takes 50 ms and fails the rows at index 0, 5, 10 and 15
    with ScoringServer() as server:
        # WHEN the load test sends 20 requests, the first 20 rows of the sample
        done = run_step("load_test.py", "--test-data", str(TRAINING_CSV), "--endpoint", "churn-ep",
                        "--deployment", "churn-7", "--requests", "20", "--scoring-uri", server.uri, "--out", "load",
                        cwd=tmp_path, env=step_env(SCORING_KEY="local-key", **LOOPBACK))
    assert not server.thread.is_alive()

    # THEN 4 of 20 failed and the 95th percentile is at least the server's 50 ms
    assert done.returncode == 0, done.stderr
    report = step_results(tmp_path / "load", "load_test")
    assert report["results"]["error_rate"] == 0.2
    assert 50 <= report["results"]["p95_latency_ms"] < 5000
    assert report["statuses"] == {"200": 16, "500": 4}
    # AND every request was an online endpoint's request for the deployment, with the key as bearer token
    assert len(server.received) == 20
    sample = pd.read_csv(TRAINING_CSV)
    for headers, body in server.received:
        assert headers["azureml-model-deployment"] == "churn-7"
        assert headers["authorization"] == "Bearer local-key"
        assert headers["content-type"] == "application/json"
        [index] = body["input_data"]["index"]
        assert body["input_data"]["columns"] == FEATURES
        assert body["input_data"]["data"] == [sample.loc[index, FEATURES].tolist()]
    assert sorted(body["input_data"]["index"][0] for _, body in server.received) == list(range(20))


def test_load_test_counts_requests_nobody_answered_as_errors(tmp_path):
    # GIVEN a port nothing listens on any more
    with ScoringServer() as server:
        uri = server.uri

    done = run_step("load_test.py", "--test-data", str(TRAINING_CSV), "--endpoint", "churn-ep", "--deployment",
                    "churn-7", "--requests", "3", "--timeout", "2", "--scoring-uri", uri, "--out", "load",
                    cwd=tmp_path, env=step_env(**LOOPBACK))

    assert done.returncode == 0, done.stderr
    report = step_results(tmp_path / "load", "load_test")
    assert report["results"]["error_rate"] == 1.0 and report["statuses"] == {"0": 3}


def test_load_test_outside_an_azure_ml_job_names_the_missing_workspace_variables(tmp_path):
    done = run_step("load_test.py", "--test-data", str(TRAINING_CSV), "--endpoint", "churn-ep", "--deployment",
                    "churn-7", "--out", "load", cwd=tmp_path, env=step_env())

    assert done.returncode != 0
    assert "AZUREML_ARM_SUBSCRIPTION" in done.stderr and "--scoring-uri" in done.stderr
    assert not (tmp_path / "load").exists()


# -- the report -----------------------------------------------------------------------------------------------

MLFLOW_TRACKING_STAND_IN = """
import json, os

class _Run:
    def __init__(self, tags):
        self.data = type("RunData", (), {"tags": tags})()

class MlflowClient:
    def get_run(self, run_id):
        assert run_id == os.environ["MLFLOW_RUN_ID"], run_id
        return _Run({"mlflow.parentRunId": "test-churn-0123456789ab", "mlflow.runName": "report"})

    def set_tag(self, run_id, key, value):
        with open(os.environ["STAND_IN_MLFLOW_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps([run_id, key, value]) + "\\n")
"""


@pytest.fixture
def step_outputs(tmp_path) -> list[str]:
    """The four steps' JSON files, as the steps write them."""
    outputs = {"holdout": ("evaluate_holdout", {"auc": 0.88123, "accuracy": 0.9}),
               "quality": ("data_quality", {"missing_rate_max": 0.0, "schema_violations": 0.0,
                                            "out_of_range_share": 0.0123456}),
               "fairness": ("fairness", {"demographic_parity_difference": 0.05, "tpr_gap": 1 / 3}),
               "load": ("load_test", {"p95_latency_ms": 123.456789, "error_rate": 0.0})}
    for folder, (step, results) in outputs.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{step}.json").write_text(json.dumps({"step": step, "results": results}))
    return list(outputs)


EXPECTED = {"auc": "0.8812", "accuracy": "0.9000", "missing_rate_max": "0.0000", "schema_violations": "0.0000",
            "out_of_range_share": "0.0123", "demographic_parity_difference": "0.0500", "tpr_gap": "0.3333",
            "p95_latency_ms": "123.4568", "error_rate": "0.0000"}


def test_report_without_mlflow_tracking_writes_results_json_only(tmp_path, step_outputs):
    done = run_step("report.py", "--results", *step_outputs, "--out", "results", cwd=tmp_path, env=step_env())

    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "results" / "results.json").read_text()) == EXPECTED
    assert "not tagged" in done.stdout and "MLFLOW_TRACKING_URI" in done.stdout


def test_report_tags_the_pipeline_run_with_the_results(tmp_path, step_outputs):
    # GIVEN mlflow importable (a client recording its calls) in a job whose step run is a pipeline run's child
    package = tmp_path / "site" / "mlflow"
    (package / "tracking").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tracking" / "__init__.py").write_text(MLFLOW_TRACKING_STAND_IN.lstrip())
    log = tmp_path / "mlflow-log.jsonl"
    env = step_env(PYTHONPATH=str(tmp_path / "site"), MLFLOW_TRACKING_URI="azureml://example",
                   MLFLOW_RUN_ID="report-step-run", STAND_IN_MLFLOW_LOG=str(log))

    # WHEN the report step runs
    done = run_step("report.py", "--results", *step_outputs, "--out", "results", cwd=tmp_path, env=env)

    # THEN every result is a tag of the parent (pipeline) run, as text with four decimals, and in results.json
    assert done.returncode == 0, done.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert {run for run, _, _ in calls} == {"test-churn-0123456789ab"}
    assert {key: value for _, key, value in calls} == EXPECTED and len(calls) == len(EXPECTED)
    assert json.loads((tmp_path / "results" / "results.json").read_text()) == EXPECTED
    assert "tagged on pipeline run test-churn-0123456789ab" in done.stdout


def test_report_refuses_a_result_two_steps_report(tmp_path, step_outputs):
    (tmp_path / "load" / "load_test.json").write_text(json.dumps({"step": "load_test", "results": {"auc": 0.5}}))

    done = run_step("report.py", "--results", *step_outputs, "--out", "results", cwd=tmp_path, env=step_env())

    assert done.returncode != 0 and "auc" in done.stderr
    assert not (tmp_path / "results").exists()


def test_the_steps_chained_locally_report_every_gated_result(sample_checks, tmp_path):
    # GIVEN the steps run on the sample as the pipeline chains them, the load test against a local server
    with ScoringServer() as server:
        done = run_step("load_test.py", "--test-data", str(TRAINING_CSV), "--endpoint", "churn-ep", "--deployment",
                        "churn-7", "--requests", "4", "--scoring-uri", server.uri, "--out", "load", cwd=tmp_path,
                        env=step_env(**LOOPBACK))
        assert done.returncode == 0, done.stderr

    # WHEN the report step gathers them
    earlier = [str(sample_checks / step) for step in ("holdout", "quality", "fairness")]
    done = run_step("report.py", "--results", *earlier, "load", "--out", "results", cwd=tmp_path, env=step_env())

    # THEN results.json names every result the documented gates read, each with four decimals
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert set(results) >= GATES
    assert all(len(value.split(".")[1]) == 4 for value in results.values())
    assert results["auc"] == f"{step_results(sample_checks / 'holdout', 'evaluate_holdout')['results']['auc']:.4f}"
