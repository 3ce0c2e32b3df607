"""What a real local host writes and answers: a full approval flow leaves no approval token in any log line or
answer but the approver's own page, and a mistyped secret setting is named, never shown."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT, load_event, local_host, request
from tests.test_browser import registered_in_workspace

KEY = "s" * 64


def link(host, review_id, approver):
    done = subprocess.run([sys.executable, "-m", "controlplane", "reviews", "link", review_id, "--approver", approver],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=host.full_env())
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout.strip()


def pieces(token):
    """The token, and each of its halves: none may be written anywhere."""
    payload, signature = token.split(".")
    return [token, payload, signature]


def form(**fields):
    from urllib.parse import urlencode

    return urlencode(fields), {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"}


def test_a_full_approval_flow_writes_no_token_to_any_log_line_or_answer(tmp_path):
    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db", "APPROVAL_SIGNING_KEY": KEY}
    registered_in_workspace(tmp_path, "churn", "4", "dan@contoso.com")
    answers, own_pages, tokens = [], [], []
    with local_host(env, tmp_path) as host:
        host.env["CONTROLPLANE_PUBLIC_URL"] = host.url
        event = load_event("eg_model_registered_sdk.json")
        event["data"]["modelTags"].update(auc="0.9")
        assert host.post_events([event]).status == 202
        [review] = request("GET", f"{host.url}/api/reviews?state=open").json()["reviews"]
        base = f"{host.url}/api/reviews/{review['id']}"

        for n, approver in enumerate(("ana@contoso.com", "bo@contoso.com")):
            url = link(host, review["id"], approver)
            page_url, _, fragment = url.partition("#")
            assert page_url == base and fragment.startswith("token=")
            token = fragment.removeprefix("token=")
            tokens.append(token)
            answers.append(request("GET", page_url, headers={"Accept": "text/html"}))  # what the browser asks
            answers.append(request("GET", page_url, headers={"Accept": "application/json"}))
            own = request("POST", page_url, *form(token=token))  # the page's script posts the fragment's token
            assert own.status == 200 and b"id='approve'" in own.body
            own_pages.append(own)
            if n == 0:  # the page's form
                voted = request("POST", f"{base}/decision", *form(token=token, decision="approve", comment="ok"))
            else:  # a tool's JSON
                voted = request("POST", f"{base}/decision", json.dumps({"decision": "approve", "token": token}),
                                {"Content-Type": "application/json"})
            assert voted.status == 200, voted.body
            answers.append(voted)
            replayed = request("POST", f"{base}/decision", *form(token=token, decision="approve"))
            assert replayed.status == 409
            answers.append(replayed)
        # an old link with the token in its query, and a function key the way Azure takes it: neither is logged
        answers.append(request("GET", f"{base}?token={tokens[0]}&code=FunctionKeySecret31"))
        assert request("GET", base, headers={"Accept": "application/json"}).json()["review"]["state"] == "approved"
        answers.append(request("POST", f"{host.url}/admin/functions/sweep", '{"input": ""}'))
        for path in ("/api/decisions?limit=100", "/api/reviews", "/api/ui", "/api/health", base.removeprefix(host.url)):
            answers.append(request("GET", f"{host.url}{path}"))
    log = host.log.read_text(encoding="utf-8", errors="replace")
    assert f"/api/reviews/{review['id']}" in log  # the access log was written
    assert "FunctionKeySecret31" not in log and "token=<redacted>" in log
    for token in tokens:
        for piece in pieces(token):
            assert piece not in log
            for answer in answers:
                assert piece.encode() not in answer.body and piece not in json.dumps(answer.headers)
    for own, token in zip(own_pages, tokens, strict=True):
        assert token.encode() in own.body and token not in json.dumps(own.headers)  # only the approver's page


SECRETS = [  # the setting, its mistyped value, the part of it that is the secret
    ("NOTIFY_SLACK_WEBHOOK_URL", "hooks.slack.com/services/T0SECRET1/B0SECRET2/xoxbSecretValue42", "xoxbSecretValue42"),
    ("NOTIFY_TEAMS_WEBHOOK_URL", "contoso.webhook.office.com/webhookb2/SecretGuid77/IncomingWebhook/SecretKey88",
     "SecretKey88"),
    ("CONTROLPLANE_STORE", "DefaultEndpointsProtocol=https;AccountName=cp;AccountKey=SecretAccountKey99==",
     "SecretAccountKey99"),
    ("EVENTGRID_TOPIC_ENDPOINT", "topic.westeurope-1.eventgrid.azure.net/api/events?key=SecretTopicKey66",
     "SecretTopicKey66"),
    ("CONTROLPLANE_DISPATCH", "SecretPastedIntoTheWrongSetting55", "SecretPastedIntoTheWrongSetting55"),
]


@pytest.mark.parametrize("setting, value, secret", SECRETS)
def test_a_mistyped_secret_setting_is_named_and_never_shown(tmp_path, setting, value, secret):
    env = {"CONTROLPLANE_STORE": f"sqlite:///{tmp_path}/cp.db", "APPROVAL_SIGNING_KEY": KEY, setting: value}
    with local_host(env, tmp_path) as host:
        health = request("GET", f"{host.url}/api/health")
        answers = [health, request("GET", f"{host.url}/api/decisions"), request("GET", f"{host.url}/api/ui"),
                   request("GET", f"{host.url}/api/reviews/0123", headers={"Accept": "application/json"}),
                   request("POST", f"{host.url}/api/reviews/0123", *form(token="x.y")),
                   request("POST", f"{host.url}/api/alerts", b"{}"),
                   host.post_events([load_event("eg_model_registered_sdk.json")]),
                   request("POST", f"{host.url}/admin/functions/sweep", '{"input": ""}')]
    assert health.status == 503 and setting in health.body.decode()
    log = host.log.read_text(encoding="utf-8", errors="replace")
    assert secret not in log
    for answer in answers:
        assert secret.encode() not in answer.body and secret not in json.dumps(answer.headers)


@pytest.mark.parametrize("error", [
    "policy $: cannot read /home/site/wwwroot/policy.yaml: No such file or directory",
    "sqlite /srv/state/controlplane.db: unable to open database file",
    "artifact reports/x.html: C:\\home\\site\\artifacts\\reports\\x.html: File name too long",
])
def test_health_names_what_failed_without_server_paths(error):
    from controlplane.domain.errors import PolicyError, StoreUnavailable
    from controlplane.handlers.health import check_health

    def build():
        where, reason = error.split(": ", 1)
        raise PolicyError("$", reason) if where == "policy $" else StoreUnavailable(where, reason)

    [reason] = check_health(build).checks.values()
    assert "<path>" in reason and "/home" not in reason and "/srv" not in reason and "\\home" not in reason
    assert reason.split(" ")[0] in ("policy", "sqlite", "artifact")
