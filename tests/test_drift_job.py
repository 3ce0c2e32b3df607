"""The drift-check job (``python -m controlplane.drift.job``): a window too big for the function, checked in full
over the telemetry Event Hubs Capture wrote, with the function's own engine; and the Azure ML YAML that runs it."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from tests.support import ROOT

# Capture's Avro schema, as `avro-tools getschema` prints it for a captured file (Event Hubs Capture overview).
CAPTURE_SCHEMA = {
    "type": "record", "name": "EventData", "namespace": "Microsoft.ServiceBus.Messaging",
    "fields": [
        {"name": "SequenceNumber", "type": "long"},
        {"name": "Offset", "type": "string"},
        {"name": "EnqueuedTimeUtc", "type": "string"},
        {"name": "SystemProperties", "type": {"type": "map", "values": ["long", "double", "string", "bytes"]}},
        {"name": "Properties", "type": {"type": "map", "values": ["long", "double", "string", "bytes"]}},
        {"name": "Body", "type": ["null", "bytes"]},
    ],
}
COLUMNS = {"age": "numerical", "plan": "categorical", "outputs.score": "numerical"}
SETTINGS = {"columns": COLUMNS, "min_rows": 50, "alpha": 0.05, "correction": "holm"}
PLANS, PLAN_SHARES = ["basic", "plus", "pro"], [0.5, 0.3, 0.2]
HOUR = datetime(2026, 12, 4, 10, tzinfo=UTC)  # window A: [10:00, 11:00); window B, shifted: [11:00, 12:00)
WINDOW = 300
TAGS = ("dataset_drift", "inconclusive", "drifted", "share", "rows", "data_quality", "reason")


def people(rng, n, shift=0.0, shares=PLAN_SHARES):
    return (rng.normal(40 + shift, 10, n).round(1), rng.choice(PLANS, n, p=shares), rng.uniform(0, 1, n).round(4))


def record(model, deployment, moment, age, plan, score, request_id):
    return {"model": model, "version": "3", "endpoint": "churn-ep", "deployment": deployment,
            "request_id": request_id, "timestamp": moment.isoformat().replace("+00:00", "Z"),
            "inputs": {"age": float(age), "plan": str(plan)}, "outputs": {"score": float(score)}}


def window_records(rng, model, deployment, start, n, shift=0.0, shares=PLAN_SHARES):
    ages, plans, scores = people(rng, n, shift, shares)
    step = timedelta(hours=1) / n
    return [record(model, deployment, start + i * step, ages[i], plans[i], scores[i], f"{model}-{start:%H}-{i}")
            for i in range(n)]


def chunks(records, size):
    return [json.dumps(records[i:i + size]).encode() for i in range(0, len(records), size)]


def captured(body, sequence, encoding=None):
    """One event as Capture stores it: gzip'd bodies carry the Content-Encoding property, as the sender sets it."""
    properties = {} if encoding is None else {"Content-Encoding": encoding, "producer": "controlplane-telemetry"}
    if encoding is not None and body is not None:
        body = gzip.compress(body)
    return {"SequenceNumber": sequence, "Offset": str(sequence * 512), "EnqueuedTimeUtc": "12/4/2026 10:05:03 AM",
            "SystemProperties": {"x-opt-sequence-number": sequence, "x-opt-offset": str(sequence * 512),
                                 "x-opt-enqueued-time": 1796378703000, "x-opt-partition-key": "churn/green"},
            "Properties": properties, "Body": body}


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """A Capture folder (`{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro`)
    holding window A (300 records like the reference), window B (300 records, older customers, more `pro`), records
    of another model and another deployment, one just before A, and bad events; a damaged file beside; and the
    reference (1,000 rows)."""
    from fastavro import parse_schema, writer

    rng = np.random.default_rng(20261204)
    root = tmp_path_factory.mktemp("capture")
    ages, plans, scores = people(rng, 1000)
    reference = root / "reference.csv"
    rows = "".join(f"{a},{p},{s}\n" for a, p, s in zip(ages, plans, scores, strict=True))
    reference.write_text("age,plan,outputs.score\n" + rows)

    bodies = (chunks(window_records(rng, "churn", "green", HOUR, WINDOW), 50)
              + chunks(window_records(rng, "churn", "green", HOUR + timedelta(hours=1), WINDOW, shift=8,
                                      shares=[0.3, 0.3, 0.4]), 50)
              + chunks(window_records(rng, "fraud", "green", HOUR, 40), 20)
              + chunks(window_records(rng, "churn", "blue", HOUR, 20), 20)
              + [json.dumps(record("churn", "green", HOUR - timedelta(seconds=1), 40, "basic", 0.5, "early")).encode()])
    events = [captured(body, i, encoding=[None, "gzip", b"gzip"][i % 3]) for i, body in enumerate(bodies)]
    good = [record("churn", "green", HOUR, 40, "basic", 0.5, f"ok-{i}") for i in range(2)]
    events += [
        captured(b"not json at all", 900),
        captured(json.dumps({"model": "churn"}).encode(), 901, encoding="gzip"),  # a record without its fields
        captured(json.dumps([*good, {**good[0], "timestamp": "yesterday"}]).encode(), 902),  # one bad of three
        captured(json.dumps(good[0]).encode(), 903) | {"Properties": {"Content-Encoding": "gzip"}},  # not gzip
        captured(None, 904),  # no body
    ]
    schema = parse_schema(CAPTURE_SCHEMA)
    hub = root / "capture" / "evhns-cp" / "telemetry"
    files = [hub / "0/2026/12/04/10/05/00.avro", hub / "0/2026/12/04/10/35/00.avro",
             hub / "1/2026/12/04/10/05/00.avro", hub / "1/2026/12/04/11/20/00.avro"]
    for index, path in enumerate(files):
        path.parent.mkdir(parents=True)
        with path.open("wb") as handle:
            writer(handle, schema, events[index::len(files)], codec="deflate" if index % 2 else "null")
    (hub / "1/2026/12/04/11/21").mkdir(parents=True)
    (hub / "1/2026/12/04/11/21/00.avro").write_bytes(b"Obj\x01 cut short")  # damaged
    (hub / "README.txt").write_text("not telemetry")
    return {"telemetry": root / "capture", "reference": reference, "events": len(events)}


def run_job(capture, out, start=HOUR, settings=SETTINGS, env=None, reference=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AZUREML_"))}
    settings = settings if isinstance(settings, str) else json.dumps(settings)
    command = [sys.executable, "-m", "controlplane.drift.job", "--telemetry", str(capture["telemetry"]),
               "--reference", str(reference or capture["reference"]), "--settings", settings,
               "--model", "churn", "--deployment", "green", "--start", start.isoformat(),
               "--end", (start + timedelta(hours=1)).isoformat(), "--out", str(out)]
    return subprocess.run(command, cwd=ROOT, env={**environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
                          capture_output=True, text=True, timeout=120)


def result_of(out):
    return json.loads((out / "result.json").read_text(encoding="utf-8"))


def test_the_window_like_the_reference_does_not_drift_and_only_its_records_are_counted(capture, tmp_path):
    done = run_job(capture, tmp_path / "out")
    assert done.returncode == 0, done.stderr

    result = result_of(tmp_path / "out")
    assert result["rows"] == WINDOW and result["evidence"]["rows"] == WINDOW  # every record: no sample bound
    assert result["evidence"]["sampled_from"] is None and result["evidence"]["reference_rows"] == 1000
    assert result["dataset_drift"] is False and result["inconclusive"] is False and result["drifted"] == []
    assert result["share"] == 0.0 and result["data_quality"] is False
    assert result["reason"].startswith("no dataset drift: 0 of 3 columns drifted at alpha 0.05")
    assert {score["column"] for score in result["evidence"]["columns"]} == set(COLUMNS)
    assert result["skipped"] == {"unreadable_files": 1, "invalid_events": 5, "invalid_records": 4,
                                 "other_deployments": 60, "outside_window": WINDOW + 1}
    assert result["read"] == {"files": 5, "events": capture["events"]}
    [summary] = done.stdout.splitlines()
    assert summary.startswith("drift check churn/green [2026-12-04T10:00:00+00:00, 2026-12-04T11:00:00+00:00): "
                              f"300 records from {capture['events']} events in 5 files; no dataset drift")
    assert "not tagged" in summary
    # AND the first problems of each kind are described, where they are
    assert f"{capture['telemetry']}/evhns-cp/telemetry/1/2026/12/04/11/21/00.avro: ValueError" in done.stderr
    assert "00.avro, sequence number 904: $: the event has no body" in done.stderr
    assert "00.avro, sequence number 900: $: malformed JSON" in done.stderr


def test_the_shifted_window_drifts(capture, tmp_path):
    done = run_job(capture, tmp_path / "out", start=HOUR + timedelta(hours=1))
    assert done.returncode == 0, done.stderr

    result = result_of(tmp_path / "out")
    assert result["rows"] == WINDOW
    assert result["dataset_drift"] is True and result["inconclusive"] is False
    assert set(result["drifted"]) == {"age", "plan"} and result["share"] == pytest.approx(2 / 3)
    assert result["evidence"]["drifted"] == result["drifted"]
    assert result["reason"].startswith("dataset drift: 2 of 3 columns drifted at alpha 0.05")
    assert result["skipped"]["outside_window"] == WINDOW + 1 and result["skipped"]["other_deployments"] == 60


MLFLOW = """
import json, os


def _log(run, tags):
    with open(os.environ["FAKE_MLFLOW_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"run": run, "tags": tags}) + "\\n")


class _Run:
    class info:
        run_id = "drift-step-run"

    class data:
        tags = {"mlflow.parentRunId": "drift-churn-0a1b2c3d4e5f"}


def set_tags(tags):
    _log(_Run.info.run_id, dict(tags))


def active_run():
    return _Run()


class MlflowClient:
    def get_run(self, run_id):
        assert run_id == _Run.info.run_id
        return _Run()

    def set_tag(self, run_id, key, value):
        _log(run_id, {key: value})
"""


def test_with_mlflow_the_verdict_is_tagged_on_the_step_run_and_on_the_pipeline_run(capture, tmp_path):
    site = tmp_path / "site" / "mlflow"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text(MLFLOW, encoding="utf-8")
    log = tmp_path / "mlflow.jsonl"
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)]), "FAKE_MLFLOW_LOG": str(log),
           "MLFLOW_TRACKING_URI": "azureml://example"}

    done = run_job(capture, tmp_path / "out", start=HOUR + timedelta(hours=1), env=env)
    assert done.returncode == 0, done.stderr

    tagged: dict[str, dict[str, str]] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        tagged.setdefault(entry["run"], {}).update(entry["tags"])
    result = result_of(tmp_path / "out")
    expected = {"controlplane.drift.dataset_drift": "true", "controlplane.drift.inconclusive": "false",
                "controlplane.drift.drifted": ",".join(result["drifted"]),
                "controlplane.drift.share": f"{2 / 3:.4f}", "controlplane.drift.rows": "300",
                "controlplane.drift.data_quality": "false", "controlplane.drift.reason": result["reason"]}
    assert tagged == {"drift-step-run": expected, "drift-churn-0a1b2c3d4e5f": expected}
    assert done.stdout.rstrip().endswith("tagged on run drift-step-run, drift-churn-0a1b2c3d4e5f")


def test_tags_are_cut_to_whole_column_names_and_the_reason_to_4000_characters():
    from controlplane.drift.job import tags

    columns = [f"column_{i:04d}" for i in range(400)]  # 11 characters each, 4,799 with the commas
    found = {"dataset_drift": True, "inconclusive": False, "drifted": columns, "share": 1.0, "rows": 12,
             "data_quality": True, "reason": "x" * 5000}
    values = tags(found)
    drifted = values["controlplane.drift.drifted"]
    assert len(drifted) <= 4000 and drifted.split(",") == columns[:len(drifted.split(","))]
    assert len(drifted.split(",")) == 333  # 333 names and 332 commas: 3,995 characters
    assert values["controlplane.drift.reason"] == "x" * 4000
    assert set(values) == {f"controlplane.drift.{name}" for name in TAGS}


def test_an_unreadable_reference_makes_the_window_inconclusive_without_reading_the_telemetry(capture, tmp_path):
    done = run_job(capture, tmp_path / "out", reference=tmp_path / "missing.csv")
    assert done.returncode == 0, done.stderr

    result = result_of(tmp_path / "out")
    assert result["inconclusive"] is True and result["dataset_drift"] is False and result["rows"] is None
    assert result["reason"].startswith("drift check impossible: ") and "missing.csv" in result["reason"]
    assert result["evidence"] == {"error": result["reason"].removeprefix("drift check impossible: ")}
    assert result["read"] == {"files": 0, "events": 0}


@pytest.mark.parametrize(("settings", "message"), [
    ({**SETTINGS, "window": 5}, "--settings: drift 'window': unknown drift setting; allowed: alpha, columns"),
    ({"methods": {"age": "ks"}}, "--settings: drift 'columns': is required"),
    ([1, 2], "--settings: drift 'settings': expected a JSON object of drift settings, got list"),
    ("{not json", "--settings: drift 'settings': not JSON: "),
])
def test_bad_settings_are_refused_with_the_setting_named(capture, tmp_path, settings, message):
    done = run_job(capture, tmp_path / "out", settings=settings)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "out").exists()


def test_importing_the_job_loads_no_dataframe_avro_or_mlflow_library():
    code = ("import sys, controlplane.drift.job; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'numpy', 'scipy', 'fastavro', "
            "'mlflow', 'evidently', 'azure', 'pydantic'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- the YAML, as Azure ML reads it ---------------------------------------------------------------------------

INPUTS = {"telemetry": "uri_folder", "reference": "uri_file", "settings": "string", "model": "string",
          "deployment": "string", "start": "string", "end": "string"}


def test_the_component_runs_the_job_from_the_uploaded_package():
    from azure.ai.ml import load_component

    component = load_component(source=ROOT / "pipelines/components/drift_check.yml")
    assert {name: spec.type for name, spec in component.inputs.items()} == INPUTS
    assert {name: spec.type for name, spec in component.outputs.items()} == {"result": "uri_folder"}
    assert Path(component.base_path, component.code).resolve() == ROOT / "controlplane"
    command = " ".join(component.command.split())
    assert command.startswith('mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/controlplane && '
                              "PYTHONPATH=/tmp/pkg python -m controlplane.drift.job ")
    for name in INPUTS:
        assert f"--{name} " in command and "${{inputs." + name + "}}" in command
    assert "--out '${{outputs.result}}'" in command
    assert component.is_deterministic is False  # its tags belong to this run
    assert component.environment.image.startswith("mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04")
    dependencies = component.environment.conda_file["dependencies"]
    assert "python=3.11" in dependencies
    pip = " ".join(next(d for d in dependencies if isinstance(d, dict))["pip"])
    for package in ("pandas>=2.2,<3", "numpy", "scipy", "fastavro", "mlflow", "azureml-mlflow", "pyarrow",
                    "evidently"):
        assert package in pip


def test_the_pipeline_declares_the_inputs_the_control_plane_passes():
    from azure.ai.ml import load_job
    from azure.ai.ml.entities import PipelineJob

    from controlplane.domain.policy import DriftJob

    job = load_job(source=ROOT / "pipelines/drift-check.yml")
    assert isinstance(job, PipelineJob) and job._validate().passed
    assert {name: spec.result().type if hasattr(spec.result(), "type") else "string"
            for name, spec in job.inputs.items()} == INPUTS
    assert list(job.jobs) == ["drift_check"]
    step = job.jobs["drift_check"]
    assert "python -m controlplane.drift.job " in step.component.command
    assert Path(step.component.base_path, step.component.code).resolve() == ROOT / "controlplane"
    assert {name: value._data for name, value in step.inputs.items()} == {
        name: "${{parent.inputs." + name + "}}" for name in INPUTS}
    assert job.experiment_name == DriftJob().experiment and DriftJob().pipeline == "pipelines/drift-check.yml"


def test_a_sample_bound_in_the_settings_is_honoured(capture, tmp_path):
    done = run_job(capture, tmp_path / "out", settings={**SETTINGS, "sample_bound": 120})
    assert done.returncode == 0, done.stderr

    result = result_of(tmp_path / "out")
    assert result["rows"] == WINDOW  # the window's records
    assert result["evidence"]["rows"] == 120 and result["evidence"]["sampled_from"] == WINDOW  # the rows tested
