"""Server-rendered pages for people: the review page, the review list and the dashboard.

Every value that came from an event, a tag, a policy or a person is escaped on its way into HTML, so
a tag holding ``<script>`` shows as text.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from controlplane.domain.incidents import Incident
from controlplane.domain.ledger import Decision, Outcome
from controlplane.domain.reviews import Review, ReviewKind, ReviewState
from controlplane.domain.rollout import Rollout
from controlplane.domain.signals import Signals
from controlplane.web.charts import bar_chart, distribution_chart, line_chart
from controlplane.web.studio import endpoint_url, job_url, model_url, registry_model_url

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:64rem;color:#1b1b1b;
padding:0 1rem}h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;padding:.35rem .6rem;
border-bottom:1px solid #ddd;vertical-align:top}th{background:#f4f4f4}.state{font-weight:600;padding:.1rem .5rem;
border-radius:.3rem}.open{background:#fff4ce}.approved{background:#dff6dd}.rejected{background:#fde7e9}
.expired{background:#eee}.pass{color:#107c10}.fail{color:#a4262c}.muted{color:#666}
textarea{width:100%;min-height:4rem}button{font-size:1rem;padding:.4rem 1.2rem;margin-right:.5rem}
pre{background:#f6f6f6;padding:.6rem;overflow:auto;max-height:20rem}
svg{max-width:100%;height:auto}table{display:block;overflow-x:auto}figure{margin:1rem 0}
p,li{overflow-wrap:anywhere}
@media (max-width:40rem){body{margin:1rem auto}th,td{padding:.3rem .4rem}}
"""


# Reads the token from the link's fragment (``#token=``), which never reaches a server or a log, drops it from
# the address bar and posts it, so the page comes back with the approver's form. Without JavaScript the
# approver pastes the token into the same form.
OPEN_SCRIPT = ("var m=location.hash.match(/^#token=([^&]+)$/);if(m){history.replaceState(null,'',"
               "location.pathname+location.search);var f=document.getElementById('open');"
               "f.elements.token.value=decodeURIComponent(m[1]);f.submit();}")
OPEN_SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(OPEN_SCRIPT.encode()).digest()).decode()


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_STYLE}</style></head>"
            f"<body>{body}</body></html>")


def _state(state: ReviewState) -> str:
    return f"<span class='state {state.value}' data-state='{state.value}'>{escape(state.value)}</span>"


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    # tabindex: a table wider than a phone scrolls sideways, and the keyboard must reach it to scroll it
    return f"<table tabindex='0'>{f'<thead><tr>{head}</tr></thead>' if head else ''}<tbody>{body}</tbody></table>"


def _number(value: Any) -> str:
    return escape(f"{value:g}") if isinstance(value, (int, float)) else escape(str(value if value is not None else "-"))


def metrics_table(evidence: Mapping[str, Any]) -> str:
    """Candidate against champion, one row per gate metric, with the gate's verdict."""
    gates = evidence.get("gates") or [{"metric": m, "value": v, "gate": "", "passed": None}
                                      for m, v in (evidence.get("metrics") or {}).items()]
    if not gates:
        return "<p class='muted'>No metrics recorded.</p>"
    champion = evidence.get("champion_metrics") or {}
    rows = [[escape(str(gate["metric"])), _number(gate.get("value")), _number(champion.get(gate["metric"])),
             escape(str(gate.get("gate", ""))), _verdict(gate.get("passed"))] for gate in gates]
    return _table(["metric", "candidate", f"champion {evidence.get('champion') or ''}".strip(), "gate", "result"],
                  rows)


def _verdict(passed: Any) -> str:
    """A gate's verdict in the page's pass/fail colours; ``-`` when it was not judged."""
    if passed is True:
        return "<span class='pass'>pass</span>"
    return "<span class='fail'>fail</span>" if passed is False else "<span class='muted'>-</span>"


def _p_value(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return "&lt; 0.001" if value < 0.001 else escape(f"{value:.3g}")


def _facts(rows: Iterable[tuple[str, Any]]) -> str:
    return _table([], [[escape(name), escape(str(value))] for name, value in rows if value not in (None, "")])


def promotion_section(evidence: Mapping[str, Any], context: Mapping[str, Any] | None = None, *,
                      model: str | None = None, version: str | None = None) -> str:
    """Candidate against champion, metric by metric, each gate's verdict, the gain the policy asks for, who
    registered the candidate; then, when the evidence or ``context`` (``handlers.reviews.promotion_context``: what
    the workspaces say now) has them, its route, the staging deployment, the test stage's results, the rollout plan
    and links to Azure ML studio."""
    parts = ["<h2>Candidate against champion</h2>", metrics_table(evidence)]
    candidate, champion = evidence.get("metrics") or {}, evidence.get("champion_metrics") or {}
    bars = [(f"{metric} {side}", values.get(metric)) for metric in candidate
            for side, values in (("candidate", candidate), ("champion", champion)) if side == "candidate" or champion]
    if bars:
        parts.append(f"<figure>{bar_chart('Metrics', bars)}</figure>")
    gain = evidence.get("improvement")
    if gain:
        enough = gain["gain"] >= gain["required"]
        parts.append(f"<p id='improvement' class='{'pass' if enough else 'fail'}'>{escape(str(gain['metric']))}: "
                     f"gain {_number(gain['gain'])} over the champion, {_number(gain['required'])} required "
                     f"({'enough' if enough else 'not enough'})</p>")
    registrant = evidence.get("registrant") or "unknown"
    source = {"workspace": "Azure ML's record", "tags": "the created_by tag"}.get(evidence.get("registrant_source"))
    registered_by = f"{registrant} (from {source})" if source else registrant
    parts.append("<h2>Candidate</h2>" + _facts([
        ("endpoint", evidence.get("endpoint")), ("champion now", evidence.get("champion") or "none"),
        ("registered by", registered_by),
        ("metrics read from the workspace", "yes" if evidence.get("metrics_from_gateway") else None),
        ("policy rule", evidence.get("rule"))]))
    links = _studio_links(evidence, context or {}, model, version)
    parts += [lineage_section(evidence, (context or {}).get("workspaces") or {}, registered_by),
              route_section(evidence), staging_section(evidence, context),
              test_stage_section(evidence, (links.get("job") or ("", None))[1]), rollout_section(evidence, context),
              links_section(links, context)]
    return "".join(parts)


_JOB_FROM = {"azureml.runId": "Azure ML's azureml.runId property", "pipeline_job": "the pipeline_job tag"}


def lineage_section(evidence: Mapping[str, Any], workspaces: Mapping[str, Any], registered_by: str) -> str:
    """Where the candidate came from (the evidence's ``lineage``): the job that trained it, linked to studio in the
    workspace it was registered in when that workspace's resource id is known, the data it was trained on, and who
    registered it. What the model does not record is said, not left blank."""
    lineage = evidence.get("lineage")
    if not isinstance(lineage, Mapping):
        return ""
    job, where = lineage.get("job"), workspaces.get("source")
    if job:
        named = (f"<a href='{escape(job_url(str(job), where))}' rel='noopener noreferrer'>{escape(str(job))}</a>"
                 if where else escape(str(job)))
        told = f" (from {_JOB_FROM.get(lineage.get('job_from'), str(lineage.get('job_from') or 'the model'))})"
        trained = (f"<span id='lineage-job'>{named}{escape(told)}</span>" + ("" if where else (
            "<br><span class='muted'>No studio link: the workspace has no Azure resource id here.</span>")))
    else:
        trained = ("<span class='muted'>not recorded: the model has no azureml.runId property and no pipeline_job "
                   "tag</span>")
    data = lineage.get("training_data")
    rows = [["trained by job", trained],
            ["training data", escape(str(data)) if data else
             "<span class='muted'>not recorded: the model has no training_data tag</span>"],
            ["registered by", escape(registered_by)]]
    return "<h2>Lineage</h2>" + _table([], rows)


def _place(environment: Any) -> str:
    """An environment's workspace in words: its name, or the home workspace when it has none."""
    return str(environment) if environment else "the home workspace"


def route_section(evidence: Mapping[str, Any]) -> str:
    """Where the candidate goes (registered in, staged in, production in, the registry between them) and which of
    those stages this review approves."""
    route, stage = evidence.get("route"), evidence.get("stage")
    parts = []
    if isinstance(route, Mapping):
        path = (f"registered in {_place(route.get('source'))} → staged in {_place(route.get('staging'))} → "
                f"production in {_place(route.get('production'))}")
        via = f", through registry {route['registry']}" if route.get("registry") else ""
        parts.append(f"<p id='route'>{escape(path + via)}</p>")
    approves = {"staging": "approval deploys the candidate to staging; production is asked for later",
                "production": "approval puts the candidate in production"}.get(stage)
    if approves:
        parts.append(f"<p id='stage'>This review approves <strong>{escape(stage)}</strong>: {escape(approves)}.</p>")
    return "<h2>Route</h2>" + "".join(parts) if parts else ""


def _live_state(state: Mapping[str, Any] | None) -> str:
    """The staging deployment's state as its workspace reported it when the page was asked for."""
    if state is None:
        return "<p id='staging-state' class='muted'>Live state: not read.</p>"
    if state.get("state") == "found":
        provisioning = str(state.get("provisioning_state") or "unknown")
        size = f"{state.get('instance_type')} × {state.get('instance_count')}" if state.get("instance_type") else (
            f"{state.get('instance_count')} instance(s)")
        error = f"; {state['error']}" if state.get("error") else ""
        tone = {"Succeeded": " class='pass'", "Failed": " class='fail'", "Canceled": " class='fail'"}.get(
            provisioning, "")
        return f"<p id='staging-state'{tone}>Live state: {escape(f'{provisioning}, {size}{error}')}</p>"
    if state.get("state") == "missing":
        return f"<p id='staging-state' class='muted'>Live state: {escape(str(state.get('reason')))}.</p>"
    return f"<p id='staging-state' class='muted'>Live state unknown: {escape(str(state.get('reason')))}</p>"


def staging_section(evidence: Mapping[str, Any], context: Mapping[str, Any] | None) -> str:
    """The candidate's staging deployment (from the evidence) and its live state (from ``context``)."""
    staging = evidence.get("staging")
    if not isinstance(staging, Mapping):
        return ""
    target = "batch endpoint" if staging.get("target") == "batch" else "online endpoint, 0% traffic"
    return ("<h2>Staging</h2>" + _facts([
        ("endpoint", f"{staging.get('endpoint')} ({target})"), ("deployment", staging.get("deployment")),
        ("workspace", _place(staging.get("environment")))])
        + _live_state(context.get("staging_state") if context else None))


_TEST_KINDS = {"pipeline": "pipeline job", "batch_scoring": "batch scoring job on the staging deployment"}


def _test_status(stage: Mapping[str, Any]) -> tuple[str, str]:
    """The test stage's outcome in words, and its tone (a page class)."""
    status, gates = stage.get("status"), stage.get("gates") or []
    if status is None:
        return "No result yet.", "muted"
    if status == "":
        return ("No result came in time: the test job reported nothing before its deadline, so people decide "
                "without it."), "fail"
    if status in ("Failed", "Canceled"):
        return f"The test job {status.lower()}: its results are missing or incomplete.", "fail"
    if status != "Completed":
        return f"The test job is {status}.", "muted"
    missing = [str(g.get("metric")) for g in gates if g.get("value") is None]
    failed = [g for g in gates if g.get("passed") is False and g.get("value") is not None]
    if missing:
        return f"Completed without reporting {', '.join(missing)}.", "fail"
    if failed:
        return f"Completed; {len(failed)} of {len(gates)} gates failed.", "fail"
    return (f"Completed; all {len(gates)} gates passed." if gates else "Completed; no gates to pass."), "pass"


def test_stage_section(evidence: Mapping[str, Any], job_link: str | None = None) -> str:
    """The test stage's outcome, its job (linked to studio when ``job_link``), and per result its value, gate and
    verdict, as a table and a chart."""
    stage = evidence.get("test_stage")
    if not isinstance(stage, Mapping):
        return ""
    words, tone = _test_status(stage)
    job = str(stage.get("job") or "-")
    job_cell = f"<a href='{escape(job_link)}'>{escape(job)}</a>" if job_link else escape(job)
    facts = [["status", escape(str(stage.get("status")) if stage.get("status") else "no result")], ["job", job_cell]]
    facts += [[name, escape(str(value))] for name, value in (
        ("kind", _TEST_KINDS.get(stage.get("kind"), stage.get("kind"))), ("experiment", stage.get("experiment")),
        ("workspace", _place(stage.get("environment")))) if value]
    parts = ["<h2>Test stage</h2>", f"<p id='test-stage-status' class='{tone}'>{escape(words)}</p>",
             _table([], facts)]
    gates = [g for g in stage.get("gates") or [] if isinstance(g, Mapping)]
    results = stage.get("results") if isinstance(stage.get("results"), Mapping) else {}
    gated = {g.get("metric") for g in gates}
    rows = [[escape(str(g.get("metric"))), _number(g.get("value")) if g.get("value") is not None else "not reported",
             escape(str(g.get("gate", ""))), _verdict(g.get("passed"))] for g in gates]
    rows += [[escape(str(name)), _number(value), "-", _verdict(None)] for name, value in results.items()
             if name not in gated]
    if rows:
        parts.append(_table(["result", "value", "gate", "pass/fail"], rows))
    bars = [(str(name), float(value)) for name, value in results.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)]
    # Scores and shares (0 to 1) beside counts or milliseconds would draw as nothing: each scale gets its chart.
    scores, others = [b for b in bars if abs(b[1]) <= 1], [b for b in bars if abs(b[1]) > 1]
    for title, group in (("Test-stage results", scores if others else bars),
                         ("Test-stage results, other scales", others if scores else [])):
        if group:
            parts.append(f"<figure>{bar_chart(title, group)}</figure>")
    return "".join(parts)


_NO_DATA = {"pause": "pause the rollout and notify people"}
_OLD_DEPLOYMENT = {"keep": "the old deployment is kept", "scale_down": "the old deployment is scaled down to one "
                   "instance", "delete": "the old deployment is deleted"}


def _health_words(health: Mapping[str, Any]) -> str:
    limits = [f"at least {health.get('min_requests')} requests on the new deployment"]
    if health.get("max_p95_latency_ms") is not None:
        limits.append(f"p95 latency at most {health['max_p95_latency_ms']:g} ms")
    if health.get("max_latency_ratio") is not None:
        limits.append(f"p95 latency at most {health['max_latency_ratio']:g}× the old deployment's")
    if health.get("max_error_rate") is not None:
        limits.append(f"5xx share at most {health['max_error_rate'] * 100:g}%")
    if health.get("max_error_rate_increase") is not None:
        limits.append(f"5xx share at most {health['max_error_rate_increase'] * 100:g} points above the old one's")
    return "; ".join(limits)


def rollout_section(evidence: Mapping[str, Any], context: Mapping[str, Any] | None) -> str:
    """What approving production does: a batch endpoint's default switch, or an online endpoint's progressive
    rollout under its policy (``context["plan"]``, a ``RolloutPolicy``'s fields)."""
    staging, route = evidence.get("staging") or {}, evidence.get("route") or {}
    endpoint, production = staging.get("endpoint") or evidence.get("endpoint"), _place(route.get("production"))
    later = ("<p class='muted'>This review approves staging; production follows this plan once it is approved."
             "</p>" if evidence.get("stage") == "staging" else "")
    if staging.get("target") == "batch":
        words = (f"Approval deploys it in {production} and makes it the default deployment of {endpoint}; a "
                 "rollback switches the default back.")
        return f"<h2>Rollout plan</h2>{later}<p id='rollout-plan'>{escape(words)}</p>"
    plan = (context or {}).get("plan")
    if not isinstance(plan, Mapping) or not endpoint:
        return ""
    mirror = plan.get("mirror_percent")
    waits = f"wait up to {plan.get('max_waits')} more interval(s), then pause and notify people"
    return ("<h2>Rollout plan</h2>" + later
            + f"<p id='rollout-plan'>{escape(f'A progressive rollout on {endpoint} in {production}:')}</p>"
            + _facts([
                ("new deployment", f"{plan.get('instance_type')} × {plan.get('instance_count')}"),
                ("first", f"mirror {mirror}% of requests to it (copies; their answers are discarded)" if mirror
                 else "no mirroring"),
                ("live traffic steps", " → ".join(f"{step}%" for step in plan.get("steps") or [])),
                ("each step watched for", f"{plan.get('interval_minutes'):g} minutes"),
                ("a step is healthy with", _health_words(plan.get("health") or {})),
                ("an unhealthy step", "rolls back: live traffic returns to the old deployment and a review is "
                 "opened"),
                ("too little traffic to judge", _NO_DATA.get(plan.get("when_no_data"), waits)),
                ("after 100%", _OLD_DEPLOYMENT.get(plan.get("old_deployment"), plan.get("old_deployment")))]))


def _studio_links(evidence: Mapping[str, Any], context: Mapping[str, Any], model: str | None,
                  version: str | None) -> dict[str, tuple[str, str | None]]:
    """By role, each asset the review is about, in words, and its studio address; None where its workspace's
    resource id is unknown (a simulated workspace has none). Only the registry's model needs no workspace."""
    workspaces = context.get("workspaces") or {}
    route, staging, test = (evidence.get(key) or {} for key in ("route", "staging", "test_stage"))
    batch = staging.get("target") == "batch"
    endpoint = staging.get("endpoint") or evidence.get("endpoint")
    links: dict[str, tuple[str, str | None]] = {}
    if model and version:
        source = workspaces.get("source")
        links["model"] = (f"model {model}:{version} in {_place(route.get('source'))}",
                          model_url(model, version, source) if source else None)
        if route.get("registry"):
            links["registry model"] = (f"model {model}:{version} in registry {route['registry']}",
                                       registry_model_url(route["registry"], model, version))
    if test.get("job"):
        where = workspaces.get("test")
        links["job"] = (f"test job {test['job']}", job_url(test["job"], where) if where else None)
    if endpoint:
        where = workspaces.get("production")
        links["endpoint"] = (f"endpoint {endpoint} in {_place(route.get('production'))}",
                             endpoint_url(endpoint, where, batch) if where else None)
    if staging.get("endpoint") and staging.get("deployment"):
        where = workspaces.get("staging")
        links["deployment"] = (f"staging deployment {staging['deployment']} (listed on its endpoint's page in "
                               f"{_place(staging.get('environment'))})",
                               endpoint_url(staging["endpoint"], where, batch) if where else None)
    return links


def links_section(links: Mapping[str, tuple[str, str | None]], context: Mapping[str, Any] | None) -> str:
    """Links to the model version, the test job, the endpoint and the staging deployment in Azure ML studio, and
    which of them cannot be given."""
    if context is None and not any(url for _, url in links.values()):
        return ""
    items = "".join(f"<li><a href='{escape(url)}' rel='noopener noreferrer'>{escape(label)}</a></li>"
                    for label, url in links.values() if url)
    missing = [label for label, url in links.values() if not url]
    parts = ["<h2>Links</h2>"]
    if items:
        parts.append(f"<ul id='studio-links'>{items}</ul>")
    if missing:
        parts.append("<p id='no-studio-links' class='muted'>" + escape(
            f"No Azure ML studio link to the {'; the '.join(missing)}: the workspace has no Azure resource id here "
            "(a simulated workspace has none, or no workspace is configured).") + "</p>")
    elif not links:
        parts.append("<p class='muted'>Nothing to link to in Azure ML studio.</p>")
    return "".join(parts)


def rollback_section(evidence: Mapping[str, Any]) -> str:
    """Why a rollout was rolled back, in words, and each deployment's health over the step, as charts."""
    reasons = evidence.get("reasons") or []
    parts = ["<h2>Why it was rolled back</h2>",
             f"<p id='rollback-reason'>{escape('; '.join(reasons) or 'no reason recorded')}</p>",
             _facts([("rollout", evidence.get("rollout")), ("step", evidence.get("step")),
                     ("judged over", " to ".join(evidence.get("window") or [])),
                     ("traffic restored", ", ".join(f"{name} {share}%" for name, share in
                                                    (evidence.get("restored_traffic") or {}).items()))])]
    health = evidence.get("health") or {}
    if health:
        parts.append("<h2>Health during the step</h2>" + _table(
            ["deployment", "requests", "p95 latency (ms)", "5xx share"],
            [[escape(name), _number(h.get("requests")), _number(h.get("p95_latency_ms")),
              escape("-" if h.get("error_rate") is None else f"{h['error_rate']:.1%}")] for name, h in health.items()]))
        for title, key, unit in (("p95 latency", "p95_latency_ms", "ms"), ("5xx share", "error_rate", "")):
            parts.append(f"<figure>{bar_chart(title, [(n, h.get(key)) for n, h in health.items()], unit=unit)}"
                         "</figure>")
    return "".join(parts)


def _stat(value: Any) -> str:
    """A statistic with three significant digits (``0.667``, ``1.24``, ``1,234``), ``-`` when absent."""
    if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _share(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
        return "-"
    return f"{value:.1%}" if 0 < abs(value) < 0.1 else f"{value:.0%}"


def _span(window: Mapping[str, Any]) -> str | None:
    """A window's event-time span, ``2026-11-22 10:00 to 11:00 UTC``."""
    try:
        start, end = (datetime.fromisoformat(window[key]).astimezone(UTC) for key in ("start", "end"))
    except (KeyError, TypeError, ValueError):
        return None
    last = end.strftime("%H:%M") if end.date() == start.date() else end.strftime("%Y-%m-%d %H:%M")
    return f"{start.strftime('%Y-%m-%d %H:%M')} to {last} UTC"


def _rows(count: Any, sampled_from: Any) -> str | None:
    if not isinstance(count, int):
        return None if count is None else str(count)
    return f"{count:,}" + (f" (sampled from {sampled_from:,})" if isinstance(sampled_from, int) else "")


def _quality(issues: Iterable[str], quality: Mapping[str, Any]) -> str:
    """A column's data-quality problems in words, with the missing-value rates when they moved."""
    words = []
    for issue in issues:
        if issue == "missing_rate":
            missing = quality.get("missing") or {}
            words.append(f"missing values {_share(missing.get('reference'))} to {_share(missing.get('current'))}")
        elif issue == "out_of_range":
            words.append(f"{quality.get('out_of_range', 0):,} values out of range")
        elif issue == "unseen_categories":
            words.append(f"unseen categories: {', '.join(map(str, (quality.get('unseen') or [])[:5]))}")
        elif issue == "invalid_values":
            words.append(f"{quality.get('invalid', 0):,} invalid values")
        else:
            words.append(str(issue).replace("_", " "))
    return escape("; ".join(words) or "-")


def _distribution(distribution: Mapping[str, Any]) -> str:
    """A drifted column's reference against current, with what the chart leaves out said below it."""
    caption = ""
    outside = distribution.get("outside") or {}
    if any(sum(outside.get(side) or []) for side in ("reference", "current")):
        caption = ("Beyond the bins (below, above): " + ", ".join(
            f"{side} {' and '.join(f'{n:,}' for n in outside.get(side) or [])}" for side in ("reference", "current")))
    other = distribution.get("other") or {}
    if any(other.get(side) for side in ("reference", "current")):
        caption = f"Other categories: reference {other.get('reference', 0):,}, current {other.get('current', 0):,} rows"
    return (f"<figure>{distribution_chart(distribution)}"
            + (f"<figcaption class='muted'>{escape(caption)}</figcaption>" if caption else "") + "</figure>")


def drift_section(evidence: Mapping[str, Any]) -> str:
    """The window, the verdict in words, and per column: the test, its statistic, p-value, effect size, verdict
    and data-quality problems; then each drifted column's reference against current, as a chart."""
    window, drift = evidence.get("window") or {}, evidence.get("drift") or {}
    columns = drift.get("columns") or []
    drifted = drift.get("drifted") or []
    if drift.get("inconclusive"):
        verdict = f"Inconclusive: {drift.get('reason', '')}"
    else:
        rule = (f"{drift.get('correction')} correction at alpha {_stat(drift.get('alpha'))}"
                if drift.get("correction") not in (None, "none") else f"drift share {_share(drift.get('drift_share'))}")
        verdict = f"{len(drifted)} of {len(columns)} columns drifted ({rule})" + (
            f": {', '.join(drifted)}" if drifted else "")
    closed_by = {"records": "its record count was reached", "count": "its record count was reached",
                 "time": "its time ran out"}.get(window.get("closed_by"), window.get("closed_by"))
    parts = ["<h2>Window</h2>", _facts([
        ("model", window.get("model")), ("deployment", window.get("deployment")),
        ("time span (event time)", _span(window)),
        ("window", f"bucket {window.get('bucket')}, part {window.get('part')}" if window else None),
        ("records", f"{window['records']:,}" if isinstance(window.get("records"), int) else None),
        ("closed when", closed_by),
        ("rows tested", _rows(drift.get("rows"), drift.get("sampled_from"))),
        ("reference rows", _rows(drift.get("reference_rows"), drift.get("reference_sampled_from")))]),
        f"<h2>Drift</h2><p id='drift-verdict'>{escape(verdict)}</p>"]
    quality = {q.get("column"): q for q in drift.get("quality") or []}
    if columns:
        parts.append(_table(["column", "kind", "method", "statistic", "p-value", "effect size", "verdict",
                             "data quality"], [
            [escape(str(c.get("column"))), escape(str(c.get("kind", ""))),
             escape(f"{c.get('method')} ({c['test']})" if c.get("test") else str(c.get("method"))),
             escape(_stat(c.get("value"))) if c.get("statistic") == "distance" else "-",
             _p_value(c.get("adjusted_p_value", c.get("p_value"))), escape(_stat(c.get("effect_size"))),
             "<span class='fail'>drifted</span>" if c.get("drifted") else (
                 "<span class='muted'>below the effect-size floor</span>" if c.get("suppressed") else "stable"),
             _quality((quality.get(c.get("column")) or {}).get("issues") or [], quality.get(c.get("column")) or {})]
            for c in columns]))
        sizes = [(str(c.get("column")), c.get("effect_size")) for c in columns if c.get("effect_size") is not None]
        if sizes:
            parts.append(f"<figure>{bar_chart('Effect size by column', sizes)}</figure>")
    elif evidence.get("signal"):
        parts.append(f"<pre>{escape(json.dumps(evidence['signal'], indent=2, default=str))}</pre>")
    distributions = [d for d in drift.get("distributions") or [] if isinstance(d, Mapping)]
    if distributions:
        parts.append("<h2>Drifted columns, reference against current</h2>"
                     "<p class='muted'>Share of each side's rows.</p>" + "".join(map(_distribution, distributions)))
    return "".join(parts)


def operation_section(evidence: Mapping[str, Any]) -> str:
    """An Azure ML operation that failed or ran past its deadline: what it was and Azure's reason."""
    operation = evidence.get("operation") or {}
    return ("<h2>Failed operation</h2>" + f"<p id='operation-error'>{escape(str(evidence.get('error', '')))}</p>"
            + _facts([("operation", operation.get("kind")), ("endpoint", operation.get("endpoint")),
                      ("deployment", operation.get("deployment")), ("started", operation.get("started_at")),
                      ("deadline", operation.get("deadline")), ("task", evidence.get("task_id"))]))


def _details(review: Review, signals: Signals | None, promotion: Mapping[str, Any] | None) -> str:
    evidence = review.evidence
    if review.kind is ReviewKind.ALERT:
        return alert_section(evidence, signals)
    if review.kind is ReviewKind.DRIFT:
        return drift_section(evidence)
    if review.kind is ReviewKind.OPERATION:
        return operation_section(evidence)
    if "rollout" in evidence:
        return rollback_section(evidence)
    return promotion_section(evidence, promotion, model=review.model, version=review.version)


def alert_section(evidence: Mapping[str, Any], signals: Signals | None) -> str:
    """The alert behind an alert review: its incident and conditions, and its target's recent signals."""
    facts = _table([], [[escape(name), escape(str(evidence.get(key) or "-"))] for name, key in (
        ("alert rule", "rule"), ("severity", "severity"), ("signal", "signal_type"), ("target", "target"),
        ("incident", "incident"), ("owner team", "owner"), ("fired", "fired_at"))])
    conditions = _table(["metric", "operator", "threshold", "value", "dimensions"], [
        [escape(str(c.get("metric", ""))), escape(str(c.get("operator", ""))), _number(c.get("threshold")),
         _number(c.get("value")), escape(", ".join(f"{k}={v}" for k, v in (c.get("dimensions") or {}).items()))]
        for c in evidence.get("conditions") or []])
    if signals is None:
        recent = "<p class='muted'>The target's recent metrics and logs are being read; reload in a minute.</p>"
    else:
        recent = (f"<p id='signals-summary'>{escape(signals.summary)}</p>"
                  + "".join(f"<figure>{line_chart(series)}</figure>" for series in signals.series)
                  + f"<p class='muted'>Source: {escape(signals.source)}</p>")
    return f"<h2>Alert</h2>{facts}<h2>Conditions</h2>{conditions}<h2>Recent signals</h2>{recent}"


def review_page(review: Review, *, token: str = "", approver: str = "", message: str = "",
                signals: Signals | None = None, promotion: Mapping[str, Any] | None = None) -> str:
    """A review's page; ``promotion`` is what ``handlers.reviews.promotion_context`` read for a promotion review."""
    evidence = review.evidence
    title = f"{review.kind.value.title()} review: {review.model or '-'}:{review.version or '-'}"
    facts = _table([], [
        ["model", escape(f"{review.model or '-'}:{review.version or '-'}")],
        ["state", _state(review.state)],
        ["registrant", escape(review.registrant or "-")],
        ["approvers", escape(", ".join(review.approvers))],
        ["quorum", escape(f"{len(review.approvals)} of {review.quorum} approvals")],
        ["opened", escape(review.created_at.isoformat(timespec="seconds"))],
        ["expires", escape(review.expires_at.isoformat(timespec="seconds"))],
        ["decision", f"<a href='../decisions?model={escape(review.model or '')}'>{escape(review.decision_id)}</a>"],
    ])
    links = []
    if evidence.get("report") and token:  # the report is the reviewers': the token goes in the body, never a URL
        links.append(f"<li><form method='post' action='{escape(review.id)}/report'>"
                     f"<input type='hidden' name='token' value='{escape(token)}'>"
                     "<button type='submit' id='report'>drift report</button></form></li>")
    tags = evidence.get("tags") or {}
    tag_table = _table(["tag", "value"], [[escape(str(k)), escape(str(v))] for k, v in tags.items()]) if tags else ""
    votes = _table(["when", "who", "vote", "comment"], [
        [escape(v.at.isoformat(timespec="seconds")), escape(v.approver), escape(v.decision), escape(v.comment)]
        for v in review.votes]) if review.votes else "<p class='muted'>No votes yet.</p>"
    form = ""
    if not token:
        form = (f"<form method='post' action='{escape(review.id)}' id='open'><h2>Approver?</h2>"
                "<p class='muted'>Open your approval link in a browser, or paste the token from it (the text after "
                "<code>#token=</code>):</p><input type='password' name='token' id='token' autocomplete='off'>"
                f" <button type='submit'>Open</button></form><script>{OPEN_SCRIPT}</script>")
    elif review.state is ReviewState.OPEN:
        form = (f"<h2>Your decision{' (' + escape(approver) + ')' if approver else ''}</h2>"
                f"<form method='post' action='{escape(review.id)}/decision'>"
                f"<input type='hidden' name='token' value='{escape(token)}'>"
                "<label for='comment'>Comment</label><textarea id='comment' name='comment'></textarea><p>"
                "<button type='submit' name='decision' value='approve' id='approve'>Approve</button>"
                "<button type='submit' name='decision' value='reject' id='reject'>Reject</button></p></form>")
    notice = f"<p role='status'><strong>{escape(message)}</strong></p>" if message else ""
    body = (f"<main><h1>{escape(title)}</h1>{notice}{facts}{_details(review, signals, promotion)}"
            + (f"<h2>Evidence</h2><ul>{''.join(links)}</ul>" if links else "")
            + (f"<h2>Tags</h2>{tag_table}" if tag_table else "")
            + f"<h2>Votes</h2>{votes}{form}</main>")
    return _page(title, body)


def reviews_page(reviews: Iterable[Review], decisions: Iterable[Decision] = (), title: str = "Reviews",
                 incidents: Iterable[Incident] = (), filters: Mapping[str, str] | None = None,
                 continuation: str | None = None) -> str:
    """The reviews, open incidents and decisions; with ``filters`` (the dashboard), a form filtering the decisions
    by model, outcome and time, and a link to their next page."""
    review_rows = [[f"<a href='{_review_href(r)}'>{escape(r.id)}</a>", escape(r.kind.value), _model_link(r.model,
                    r.version), _state(r.state), escape(f"{len(r.approvals)}/{r.quorum}"), _when(r.expires_at)]
                   for r in reviews]
    # Relative to /api/: the dashboard is served at /api/ui and /api/reviews alike.
    lists = " · ".join(f"<a href='ui/{name}'>{label}</a>" for name, label in
                       (("tasks", "Outbox tasks"), ("rollouts", "Rollouts"), ("incidents", "Incidents"),
                        ("windows", "Telemetry windows")))
    body = f"<h1>{escape(title)}</h1><nav aria-label='Lists'><p>{lists}</p></nav><h2>Reviews</h2>"
    body += _table(["review", "kind", "model", "state", "approvals", "expires"], review_rows) if review_rows else (
        "<p class='muted'>No reviews.</p>")
    incident_rows = [[escape(i.id), escape(i.rule), escape(i.target), escape(i.severity), escape(str(i.fired)),
                      _when(i.opened_at)] for i in incidents]
    if incident_rows:
        body += "<h2>Open incidents</h2>" + _table(["incident", "alert rule", "target", "severity", "alerts",
                                                    "opened"], incident_rows)
    decision_rows = [[_when(d.decided_at), escape(d.event_type.removeprefix("Microsoft.MachineLearningServices.")),
                      _model_link(d.model, d.version), escape(d.outcome.value), escape(d.reason)]
                     for d in decisions]
    if filters is not None:
        body += "<h2>Recent decisions</h2>" + _decision_filters(filters)
        body += _table(["decided", "event", "model", "outcome", "reason"], decision_rows) if decision_rows else (
            "<p class='muted'>No decisions match.</p>")
        if continuation:
            body += (f"<p><a rel='next' href='?{escape(urlencode({**filters, 'continuation': continuation}))}'>"
                     "Older decisions</a></p>")
    elif decision_rows:
        body += "<h2>Recent decisions</h2>" + _table(["decided", "event", "model", "outcome", "reason"],
                                                      decision_rows)
    return _page(title, f"<main>{body}</main>")


_PERIODS = (("", "any time"), ("1", "last hour"), ("24", "last day"), ("168", "last week"), ("720", "last 30 days"))


def _decision_filters(filters: Mapping[str, str]) -> str:
    """A GET form: the model, an outcome and how far back (it works without script)."""
    outcomes = "".join(f"<option value='{o.value}'{' selected' if filters.get('outcome') == o.value else ''}>"
                       f"{o.value}</option>" for o in Outcome)
    periods = "".join(f"<option value='{value}'>{label}</option>" for value, label in _PERIODS)
    since = f"<p class='muted'>Since {_when(filters['since'])}.</p>" if filters.get("since") else ""
    return (f"<form method='get' class='filters'><label for='model'>Model</label> <input id='model' name='model' "
            f"value='{escape(filters.get('model', ''))}'> <label for='outcome'>Outcome</label> <select id='outcome' "
            f"name='outcome'><option value=''>any</option>{outcomes}</select> <label for='hours'>Decided</label> "
            f"<select id='hours' name='hours'>{periods}</select> <button type='submit'>Filter</button></form>{since}")


def _model_link(model: str | None, version: str | None) -> str:
    """``model:version``, linked to the model's page (relative to /api/) when there is a model."""
    text = escape(f"{model or '-'}:{version or '-'}")
    return f"<a href='models/{quote(model, safe='')}'>{text}</a>" if model else text


def _when(moment: Any) -> str:
    """One readable form for every time on a page: ``2026-11-22 10:05 UTC``."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return escape(moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")) if moment else "-"


def model_page(name: str, serving: Iterable[Mapping[str, Any]], decisions: Iterable[Decision],
               reviews: Iterable[Review], rollouts: Iterable[Rollout]) -> str:
    """A model's whole story on one page, newest first: where it serves and since when, every decision with
    its policy version, the reviews and who voted, the rollouts."""
    title = f"Model {name}"
    serving_rows = [[escape(s["endpoint"]), escape(f"{s['model']}:{s['version']}" if s.get("version") else "nothing"),
                     _when(s.get("since")), escape(s.get("decision_id") or "-")] for s in serving]
    body = f"<h1>{escape(title)}</h1><h2>Serving</h2>"
    body += _table(["endpoint", "serving", "since", "decision"], serving_rows) if serving_rows else (
        "<p class='muted'>No endpoint in the policy for this model.</p>")
    timeline = [[_when(d.decided_at), escape(d.version or "-"),
                 escape(d.event_type.removeprefix("Microsoft.MachineLearningServices.")),
                 f"<span data-outcome='{escape(d.outcome.value)}'>{escape(d.outcome.value)}</span>", escape(d.reason),
                 escape(d.policy_version), f"<code id='decision-{escape(d.id)}'>{escape(d.id)}</code>"]
                for d in decisions]
    body += "<h2>Timeline</h2>" + (_table(["when", "version", "event", "outcome", "reason", "policy", "decision"],
                                          timeline) if timeline else "<p class='muted'>No decision yet.</p>")
    review_rows = [[f"<a href='../{_review_href(r)}'>{escape(r.kind.value)}</a>", escape(r.version or "-"),
                    _state(r.state), escape(", ".join(f"{v.approver} ({v.decision})" for v in r.votes) or "-"),
                    _when(r.created_at)] for r in reviews]
    if review_rows:
        body += "<h2>Reviews</h2>" + _table(["review", "version", "state", "votes", "opened"], review_rows)
    rollout_rows = [[escape(r.version or "-"), escape(r.endpoint), escape(r.state.value), escape(str(r.current)),
                     _when(r.created_at)] for r in rollouts]
    if rollout_rows:
        body += "<h2>Rollouts</h2>" + _table(["version", "endpoint", "state", "step", "started"], rollout_rows)
    return _page(title, f"<main>{body}</main>")


def _review_href(review: Review) -> str:
    return f"reviews/{escape(review.id)}"
