"""Server-rendered pages for people: the review page, the review list and the dashboard.

Every value that came from an event, a tag, a policy or a person is escaped on its way into HTML, so
a tag holding ``<script>`` shows as text.
"""
from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

from controlplane.domain.incidents import Incident
from controlplane.domain.ledger import Decision
from controlplane.domain.reviews import Review, ReviewKind, ReviewState
from controlplane.domain.signals import Signals
from controlplane.web.charts import line_chart

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:64rem;color:#1b1b1b;
padding:0 1rem}h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;padding:.35rem .6rem;
border-bottom:1px solid #ddd;vertical-align:top}th{background:#f4f4f4}.state{font-weight:600;padding:.1rem .5rem;
border-radius:.3rem}.open{background:#fff4ce}.approved{background:#dff6dd}.rejected{background:#fde7e9}
.expired{background:#eee}.pass{color:#107c10}.fail{color:#a4262c}.muted{color:#666}
textarea{width:100%;min-height:4rem}button{font-size:1rem;padding:.4rem 1.2rem;margin-right:.5rem}
pre{background:#f6f6f6;padding:.6rem;overflow:auto;max-height:20rem}
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
    return f"<table>{f'<thead><tr>{head}</tr></thead>' if head else ''}<tbody>{body}</tbody></table>"


def _number(value: Any) -> str:
    return escape(f"{value:g}") if isinstance(value, (int, float)) else escape(str(value if value is not None else "-"))


def metrics_table(evidence: Mapping[str, Any]) -> str:
    """Candidate against champion, one row per gate metric, with the gate's verdict."""
    gates = evidence.get("gates") or [{"metric": m, "value": v, "gate": "", "passed": None}
                                      for m, v in (evidence.get("metrics") or {}).items()]
    if not gates:
        return "<p class='muted'>No metrics recorded.</p>"
    champion = evidence.get("champion_metrics") or {}
    rows = []
    for gate in gates:
        verdict = {True: "<span class='pass'>pass</span>", False: "<span class='fail'>fail</span>"}.get(
            gate.get("passed"), "<span class='muted'>-</span>")
        rows.append([escape(str(gate["metric"])), _number(gate.get("value")), _number(champion.get(gate["metric"])),
                     escape(str(gate.get("gate", ""))), verdict])
    return _table(["metric", "candidate", f"champion {evidence.get('champion') or ''}".strip(), "gate", "result"],
                  rows)


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
                signals: Signals | None = None) -> str:
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
    signal = evidence.get("signal")
    signal_html = f"<h2>Signal</h2><pre>{escape(json.dumps(signal, indent=2, default=str))}</pre>" if signal else ""
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
    details = (alert_section(evidence, signals) if review.kind is ReviewKind.ALERT
               else f"<h2>Metrics</h2>{metrics_table(evidence)}")
    body = (f"<h1>{escape(title)}</h1>{notice}{facts}{details}"
            + (f"<h2>Evidence</h2><ul>{''.join(links)}</ul>" if links else "")
            + (f"<h2>Tags</h2>{tag_table}" if tag_table else "") + signal_html
            + f"<h2>Votes</h2>{votes}{form}")
    return _page(title, body)


def reviews_page(reviews: Iterable[Review], decisions: Iterable[Decision] = (), title: str = "Reviews",
                 incidents: Iterable[Incident] = ()) -> str:
    review_rows = [[f"<a href='{_review_href(r)}'>{escape(r.id)}</a>", escape(r.kind.value),
                    escape(f"{r.model or '-'}:{r.version or '-'}"), _state(r.state),
                    escape(f"{len(r.approvals)}/{r.quorum}"), escape(r.expires_at.isoformat(timespec="minutes"))]
                   for r in reviews]
    body = f"<h1>{escape(title)}</h1><h2>Reviews</h2>"
    body += _table(["review", "kind", "model", "state", "approvals", "expires"], review_rows) if review_rows else (
        "<p class='muted'>No reviews.</p>")
    incident_rows = [[escape(i.id), escape(i.rule), escape(i.target), escape(i.severity), escape(str(i.fired)),
                      escape(i.opened_at.isoformat(timespec="minutes"))] for i in incidents]
    if incident_rows:
        body += "<h2>Open incidents</h2>" + _table(["incident", "alert rule", "target", "severity", "alerts",
                                                    "opened"], incident_rows)
    decision_rows = [[escape(d.decided_at.isoformat(timespec="seconds")),
                      escape(d.event_type.removeprefix("Microsoft.MachineLearningServices.")),
                      escape(f"{d.model or '-'}:{d.version or '-'}"), escape(d.outcome.value), escape(d.reason)]
                     for d in decisions]
    if decision_rows:
        body += "<h2>Recent decisions</h2>" + _table(["decided", "event", "model", "outcome", "reason"],
                                                      decision_rows)
    return _page(title, body)


def _review_href(review: Review) -> str:
    return f"reviews/{escape(review.id)}"
