"""The demo's MLOps v2 chapter: models moving between the dev, staging and prod workspaces of the shipped policy
through its registry, each workspace (and the registry) simulated in a file of its own next to the demo's store.

An online model is registered in dev, shared to the registry, deployed and tested in staging, approved by two
people and rolled out in prod; a batch model is tried on a sample in staging and made prod's default deployment on
approval; a retraining that fails reaches its data scientists. Azure ML's events are posted to the same webhook
Event Grid calls, from the workspace that would send them.
"""
from __future__ import annotations

import uuid
from typing import Any

TOPIC = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-ml/providers/"
         "Microsoft.MachineLearningServices/workspaces/{}")
WEBHOOK = "/runtime/webhooks/EventGrid?functionName=on_registry_event"
SWEEP = ("the sweep timer drains the outbox", "/admin/functions/sweep", {"input": ""})
# What the test stage's pipeline reports on its run (pipelines/test-stage.yml, report step).
RESULTS = {"auc": "0.8412", "accuracy": "0.8650", "tpr_gap": "0.1200", "missing_rate_max": "0.0000",
           "p95_latency_ms": "182.0000", "error_rate": "0.0000"}


def event(workspace: str, event_type: str, subject: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    from controlplane.dev.demo import grid

    return [{**grid(event_type, subject, data), "topic": TOPIC.format(workspace)}]


def run_ended(workspace: str, job: str, experiment: str, status: str, **marks: dict[str, str]) -> list[dict]:
    """A job's end as its workspace's subscription delivers it: RunCompleted, or RunStatusChanged when it failed."""
    kind = "RunCompleted" if status == "Completed" else "RunStatusChanged"
    return event(workspace, kind, f"experiments/{uuid.uuid4()}/runs/{job}", {
        "ExperimentName": experiment, "RunId": job, "RunType": "azureml.PipelineRun", "RunStatus": status,
        "RunTags": marks.get("tags", {}), "RunProperties": marks.get("properties", {})})


class Chapter:
    """Numbered steps over HTTP, as the rest of the demo prints them."""

    def __init__(self, base: str, public: str, first: int) -> None:
        from controlplane import bootstrap

        self.base, self.public, self.step = base, public, first
        self.services = bootstrap.services()

    def post(self, description: str, path: str, body: Any) -> Any:
        from controlplane.dev.demo import call

        status, reply = call(self.base, "POST", path, body)
        print(f"{self.step:>2}. {description:<50} POST {path.split('?')[0][:40]:<40} -> {status}")
        self.step += 1
        return reply

    def decided(self, model: str, version: str | None = None) -> Any:
        decision = self.services.store.decisions(model=model, limit=1, version=version)[0]
        print(f"    {decision.outcome.value}: {decision.reason}")
        return decision

    def registered_in_dev(self, model: str, version: str, registrant: str, tags: dict[str, str]) -> Any:
        """The version registered in mlw-dev (who registered it kept, as Azure ML keeps it), its event posted and
        decided, then the sweep; the registration's decision."""
        self.workspace("dev").register_model(model, version, registered_by=registrant)
        said = ", ".join(f"{name} {value}" for name, value in tags.items())
        self.post(f"{model}:{version} is registered in mlw-dev ({said})", WEBHOOK, event(
            "mlw-dev", "ModelRegistered", f"models/{model}:{version}",
            {"ModelName": model, "ModelVersion": int(version), "ModelTags": tags}))
        registered = self.decided(model, version)
        self.post(*SWEEP)
        return registered

    def workspace(self, environment: str) -> Any:
        return self.services.workspaces.gateway(environment)

    def approve(self, review_id: str, model: str, *approvers: str) -> None:
        from controlplane.handlers.reviews import approval_link

        for approver in approvers:
            token = approval_link(self.services, review_id, approver).split("#token=", 1)[1]
            self.post(f"{approver} approves {model} for production", f"/api/reviews/{review_id}/decision",
                      {"decision": "approve", "comment": "test stage results look right", "token": token})


def run(base: str, public: str, first: int) -> int:
    """Play the chapter from step ``first``; returns the next step's number."""
    chapter = Chapter(base, public, first)
    print("\nMLOps v2 across workspaces: dev -> registry mlops-registry -> staging (test stage) -> prod")
    online(chapter)
    batch(chapter)
    failed_retraining(chapter)
    return chapter.step


def online(chapter: Chapter) -> None:
    from controlplane.dev.demo import rollout

    staging = chapter.workspace("staging")
    registered = chapter.registered_in_dev("retention", "7", "alice@contoso.com", {"auc": "0.86"})
    deployment = registered.evidence["test_stage"]["deployment"]
    state = staging.get_endpoint("retention-ep")
    served = next(d.model for d in state.deployments if d.name == deployment)
    print(f"    registry mlops-registry holds retention:7, shared from mlw-dev; mlw-staging: {deployment} on "
          f"retention-ep at {state.traffic[deployment]}% from {served}")
    job = staging.get_job(registered.evidence["test_stage"]["job"])
    print(f"    mlw-staging: test stage job {job.name} submitted ({job.experiment})")
    staging.set_job_status(job.name, "Completed")
    chapter.post("the test stage completes in mlw-staging", WEBHOOK, run_ended(
        "mlw-staging", job.name, job.experiment, "Completed", tags={**job.tags, **RESULTS}))
    tested = chapter.decided("retention", "7")
    gates = tested.evidence["test_stage"].get("gates", [])
    print("    results: " + "; ".join(f"{g['metric']} {g['value']:g} {'passes' if g['passed'] else 'fails'} "
                                      f"{g['gate']}" for g in gates))
    [review] = tested.reviews
    print(f"    production review, with the test results: {chapter.public}/api/reviews/{review.id}")
    chapter.approve(review.id, "retention:7", "ana@contoso.com", "bo@contoso.com")
    chapter.services.gateway.seed_endpoint("retention-ep", "retention-v6", "azureml:retention:6")
    print("    (mlw-prod, the home workspace: retention-ep serves retention:6 from 'retention-v6' at 100%)")
    chapter.post(*SWEEP)
    rollout(chapter.base, healthy_until=99, version="7", endpoint="retention-ep", model="retention")


def batch(chapter: Chapter) -> None:
    from controlplane.ports.gateway import BatchDeploymentRequest

    prod, staging = chapter.services.gateway, chapter.workspace("staging")
    prod.create_batch_endpoint("demand-batch")
    prod.deploy_batch(BatchDeploymentRequest("demand-batch", "demand-v2", "azureml:demand-forecast:2",
                                             "cpu-cluster"))
    print("    (mlw-prod: batch endpoint demand-batch scores with its default deployment 'demand-v2')")
    registered = chapter.registered_in_dev("demand-forecast", "3", "carla@contoso.com", {"mape": "0.09"})
    job = staging.get_job(registered.evidence["test_stage"]["job"])
    tried = registered.evidence["test_stage"]["deployment"]
    default = staging.get_batch_endpoint("demand-batch").default_deployment
    print(f"    mlw-staging: batch deployment {tried} (staging's default: {default}); scoring job {job.name} "
          "on azureml:demand-sample@latest")
    chapter.post("the scoring job completes in mlw-staging", WEBHOOK, run_ended(
        "mlw-staging", job.name, job.experiment, "Completed", properties=dict(job.properties)))
    tested = chapter.decided("demand-forecast", "3")
    chapter.approve(tested.reviews[0].id, "demand-forecast:3", "ana@contoso.com")
    chapter.post(*SWEEP)
    now = prod.get_batch_endpoint("demand-batch").default_deployment
    print(f"    mlw-prod: demand-batch's default deployment is {now} (was demand-v2, kept for a rollback)")


def failed_retraining(chapter: Chapter) -> None:
    job = next(t for t in chapter.services.store.tasks(limit=200) if t.kind.value == "retraining").request["job"]
    chapter.post(f"retraining job {job['name'][:22]} fails", WEBHOOK, run_ended(
        "mlw-prod", job["name"], "churn-retraining", "Failed", tags=job["tags"]))
    decision = chapter.decided("churn")
    [review] = decision.reviews
    print(f"    data scientists {', '.join(review.approvers)} review it: {chapter.public}/api/reviews/{review.id}")
