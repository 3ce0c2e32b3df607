"""The test stage of a staged candidate (MLOps v2's staging and test): its job's end decides whether production
is asked.

A staging request with a test stage deploys the candidate in the staging workspace, then starts the stage's
job there: the policy's pipeline, or for a batch endpoint a scoring job on a sample of data. The job is marked
(``controlplane.stage: test``, with the model and version: tags on a pipeline job, properties on a batch job), so
its run events reach ``on_registry_event`` from the staging workspace's subscription and are decided here, once
however often Azure ML reports the end: failing results reject the candidate, passing ones open the production
review (which shows them), missing ones leave it to that review. A stage with no result by its deadline goes to
the same review (the sweep calls ``overdue_test_stages``).
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from controlplane.domain import events as ev
from controlplane.domain.errors import PermanentError
from controlplane.domain.ledger import Decision, Outcome, Source, Verdict
from controlplane.domain.policy import Promotion
from controlplane.domain.promotion import judge_test_stage
from controlplane.domain.requests import STAGE_TAG, VERSION_TAG
from controlplane.handlers.record import decide_once
from controlplane.ports.store import Services

RUN_EVENTS = (ev.RUN_COMPLETED, ev.RUN_STATUS_CHANGED)
OVERDUE = "promotion.test_overdue"
_REGISTERED = (Outcome.PROMOTE, Outcome.REQUEST_APPROVAL, Outcome.INCONCLUSIVE)


def marks(run: ev.RunCompleted | ev.RunStatusChanged) -> dict[str, str]:
    """What the control plane marked a job with: its tags, and its properties (a batch job has no tags)."""
    return {**run.properties, **run.tags}


def is_test_stage(run: ev.RunCompleted | ev.RunStatusChanged) -> bool:
    return marks(run).get(STAGE_TAG) == "test"


def test_stage_ended(services: Services, run: ev.RunCompleted | ev.RunStatusChanged, model: str,
                     status: str) -> Verdict:
    version = marks(run).get(VERSION_TAG, "")
    facts = {"job": run.run_id, "status": status, "experiment": run.experiment_name}
    rule = services.policy.rule_for(model)
    promotion = rule.promotion if rule is not None else None
    if promotion is None or not version:
        return Verdict(Outcome.NO_ACTION, f"test stage job {run.run_id} of {model} {status.lower()}; no promotion "
                       f"rule covers {model} now", model=model, version=version or None, evidence=facts)
    earlier = decided(services, model, run.run_id)
    if earlier is not None:
        return Verdict(Outcome.NO_ACTION, f"test stage job {run.run_id} of {model}:{version} {status.lower()}; "
                       f"already decided as decision {earlier.id}", model=model, version=version, evidence=facts)
    registered = registration(services, model, version)
    if registered is None:
        return Verdict(Outcome.NO_ACTION, f"test stage job {run.run_id} of {model}:{version} {status.lower()}; "
                       "no promotion of that version is recorded", model=model, version=version, evidence=facts)
    deployment = registered.evidence.get("staging", {}).get("deployment", "")
    if run.run_id not in (f"{deployment}-test", f"{deployment}-score"):  # a step of the job, say, carrying its tags
        return Verdict(Outcome.NO_ACTION, f"run {run.run_id} of {model}:{version} {status.lower()}; not the test "
                       f"stage's own job ({deployment}-test)", model=model, version=version, evidence=facts)
    environment = services.policy.environment_of(run.meta.source) or registered.evidence.get(
        "route", {}).get("staging")
    result = {**facts, "environment": environment,
              "results": results(services, run, promotion, environment) if status == "Completed" else {}}
    return judge_test_stage(model, version, promotion, services.policy, registered.idempotency_key,
                            _promotion_evidence(registered), result)


def overdue_test_stages(services: Services) -> list[Decision]:
    """Test stages with no result past their rule's deadline, counted from the decision that staged the candidate:
    each goes to people once (the sweep calls this)."""
    now = services.clock.now()
    rules = [r.promotion for r in services.policy.document.models if r.promotion is not None and r.promotion.tested]
    if not rules:
        return []
    longest = max(promotion.test_timeout_hours for promotion in rules)
    staged = services.store.decision_page(200, outcomes=(Outcome.PROMOTE,),
                                          since=now - timedelta(hours=longest + 24)).items
    decisions = []
    for decision in staged:
        stage, model, version = decision.evidence.get("test_stage"), decision.model, decision.version
        rule = services.policy.rule_for(model) if model else None
        if not isinstance(stage, dict) or not version or rule is None or rule.promotion is None:
            continue
        job, hours = stage.get("job", ""), rule.promotion.test_timeout_hours
        if now < decision.decided_at + timedelta(hours=hours) or decided(services, model, job) is not None:
            continue
        registered = registration(services, model, version)
        if registered is None:
            continue
        result = {"job": job, "status": "", "environment": stage.get("environment"), "results": {}}
        decisions.append(decide_once(
            services, key=f"test:{job}:overdue", event_id=job, source=Source.CONTROLPLANE, event_type=OVERDUE,
            model=model, version=version, received_at=now, correlation_id=decision.correlation_id,
            decide=lambda m=model, v=version, p=rule.promotion, r=registered, s=result: judge_test_stage(
                m, v, p, services.policy, r.idempotency_key, _promotion_evidence(r), s)))
    return decisions


def decided(services: Services, model: str, job: str) -> Decision | None:
    """The decision that judged this test job already, if one did."""
    return next((d for d in services.store.decisions(model=model, limit=50, event_types=(*RUN_EVENTS, OVERDUE))
                 if d.evidence.get("test_stage", {}).get("job") == job), None)


def registration(services: Services, model: str, version: str) -> Decision | None:
    """The promotion verdict on the version's registration: its gates, champion, registrant and route."""
    return next((d for d in services.store.decisions(model=model, version=version, limit=20,
                                                     event_types=(ev.MODEL_REGISTERED,), outcomes=_REGISTERED)
                 if "shadow" not in d.evidence), None)


def results(services: Services, run: ev.RunCompleted | ev.RunStatusChanged, promotion: Promotion,
            environment: str | None) -> dict[str, float]:
    """The test job's reported results the gates name: from the event's run properties and tags, else from the
    job as the staging workspace keeps it."""
    wanted = [gate.metric for gate in promotion.staging.test.parsed_gates()] if promotion.staging.test else []
    found = _numbers(marks(run), wanted)
    gateway = services.gateway_in(environment)
    if len(found) < len(wanted) and gateway is not None:
        try:
            job = gateway.get_job(run.run_id)
        except PermanentError:
            return found
        found = {**_numbers({**job.properties, **job.tags}, wanted), **found}
    return found


def _numbers(values: dict[str, str], wanted: list[str]) -> dict[str, float]:
    found = {}
    for name in wanted:
        try:
            number = float(values[name])
        except (KeyError, TypeError, ValueError):
            continue
        if number == number and abs(number) != float("inf"):
            found[name] = number
    return found


def _promotion_evidence(registered: Decision) -> dict[str, Any]:
    """What the production review shows of the candidate's promotion: the verdict's evidence, less its own stage."""
    return {key: value for key, value in registered.evidence.items() if key not in ("test_stage", "stage")}
