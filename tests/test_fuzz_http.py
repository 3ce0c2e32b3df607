"""Property-based fuzzing of every HTTP route through the local host's dispatch: whatever arrives,
the answer is a clear 2xx/4xx with a JSON error naming a field (or a page), never a 500."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROUTES = ["/api/alerts", "/api/decisions", "/api/health", "/api/reviews", "/api/reviews/{id}",
          "/api/reviews/{id}/decision", "/api/ui", "/api/reports/{id}",
          "/runtime/webhooks/EventGrid?functionName=on_registry_event", "/admin/functions/on_telemetry",
          "/admin/functions/sweep"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=15), children, max_size=4),
    max_leaves=15,
)
bodies = st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())
identifiers = st.text(alphabet=st.characters(codec="ascii", exclude_categories=("Cc",)), min_size=1, max_size=20)


@pytest.fixture(scope="module")
def host(in_process_host):
    return in_process_host


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), method=st.sampled_from(["GET", "POST", "PUT", "OPTIONS"]), body=bodies,
       identifier=identifiers, query=st.dictionaries(st.sampled_from(["limit", "model", "state", "token"]),
                                                     st.text(max_size=12), max_size=3),
       headers=st.dictionaries(st.sampled_from(["aeg-event-type", "content-type", "accept"]),
                               st.sampled_from(["Notification", "SubscriptionValidation", "application/json",
                                                "application/x-www-form-urlencoded", "text/html", "x"]), max_size=3))
def test_no_route_answers_500_to_anything(host, route, method, body, identifier, query, headers):
    from urllib.parse import quote, urlencode

    path = route.replace("{id}", quote(identifier, safe=""))
    target = path + ("&" if "?" in path else "?") + urlencode(query) if query else path
    reply = host.handle(method, target, headers, body)
    assert reply.status < 500, (method, target, body[:80], reply.body[:300])
    if reply.status >= 400 and dict(reply.headers).get("Content-Type") == "application/json":
        error = json.loads(reply.body)["error"]
        assert error  # every refusal says what was wrong
