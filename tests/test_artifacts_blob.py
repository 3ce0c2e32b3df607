"""The blob artifact store (drift reports, labelling exports, kept signals) on Azurite's Blob service, through
the real SDK: what is saved is served back byte for byte with its content type, a missing artifact reads as
none, bad names never reach the service, and the service's refusals are transient failures."""
from __future__ import annotations

import uuid
from dataclasses import replace

import azure.functions as func
import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.storage.blob import BlobServiceClient

from controlplane import bootstrap
from controlplane.adapters.artifacts import BlobArtifacts, artifacts_for
from controlplane.domain.errors import PermanentError, TransientError
from tests.support import AZURITE_KEY, AzuriteBlob

ACCOUNT = "devstoreaccount1"


@pytest.fixture(scope="module")
def blob_service():
    server = AzuriteBlob().start()
    yield server
    server.close()


@pytest.fixture
def container(blob_service):
    """A fresh container; its URL is what CONTROLPLANE_ARTIFACTS names in Azure."""
    name = f"artifacts{uuid.uuid4().hex[:12]}"
    client = BlobServiceClient(blob_service.account_url, credential=AzureNamedKeyCredential(ACCOUNT, AZURITE_KEY))
    client.create_container(name)
    return client.get_container_client(name)


@pytest.fixture
def artifacts(container):
    return BlobArtifacts(container.url + "/", credential=AzureNamedKeyCredential(ACCOUNT, AZURITE_KEY))


def test_a_saved_artifact_is_served_back_byte_for_byte_with_its_content_type(artifacts, container):
    report = b"<html>drift of age</html>" + bytes(range(256))
    url = artifacts.save("reports/churn-green-491234.0.html", report, "text/html")

    assert url == f"{container.url}/reports/churn-green-491234.0.html"
    assert artifacts.load("reports/churn-green-491234.0.html") == report
    properties = container.get_blob_client("reports/churn-green-491234.0.html").get_blob_properties()
    assert properties.content_settings.content_type == "text/html" and properties.size == len(report)


def test_saving_again_replaces_the_artifact(artifacts):
    artifacts.save("exports/defect-detector/rows.csv", b"a,b\n1,2\n", "text/csv")
    artifacts.save("exports/defect-detector/rows.csv", b"a,b\n3,4\n", "text/csv")
    assert artifacts.load("exports/defect-detector/rows.csv") == b"a,b\n3,4\n"


def test_a_missing_artifact_reads_as_none(artifacts):
    artifacts.save("reports/present.html", b"x", "text/html")
    assert artifacts.load("reports/absent.html") is None
    assert artifacts.load("present.html") is None  # names are whole paths, not suffixes


@pytest.mark.parametrize("name", ["../secrets", "reports/../../x", "/etc/passwd", "a//b", ".hidden", "a b", ""])
def test_a_name_that_is_not_a_plain_relative_path_never_reaches_the_service(container, name):
    refusing = BlobArtifacts(container.url, credential=AzureNamedKeyCredential(ACCOUNT, "bm90LXRoZS1rZXk="))
    for attempt in (lambda: refusing.save(name, b"x", "text/plain"), lambda: refusing.load(name)):
        with pytest.raises(PermanentError):  # a wrong key would answer 403: the name is refused before
            attempt()
    assert list(container.list_blobs()) == []


def test_a_refusal_of_the_service_is_a_transient_failure_naming_the_artifact(container):
    wrong_key = BlobArtifacts(container.url, credential=AzureNamedKeyCredential(ACCOUNT, "bm90LXRoZS1rZXk="))
    with pytest.raises(TransientError) as saving:
        wrong_key.save("reports/r.html", b"x", "text/html")
    with pytest.raises(TransientError) as loading:
        wrong_key.load("reports/r.html")
    assert "reports/r.html" in str(saving.value) and "reports/r.html" in str(loading.value)
    assert list(container.list_blobs()) == []


def test_an_https_location_is_a_blob_container_and_anything_else_a_directory(tmp_path):
    kept = artifacts_for("https://stmlops.blob.core.windows.net/artifacts/")
    assert isinstance(kept, BlobArtifacts) and kept.container_url == "https://stmlops.blob.core.windows.net/artifacts"
    assert not isinstance(artifacts_for(str(tmp_path)), BlobArtifacts)


def test_the_reviewer_is_served_a_drift_report_kept_in_blob_storage(artifacts, services, fn):
    from datetime import timedelta

    from controlplane.domain.ledger import Outcome, ReviewDraft, Source, Verdict, record
    from controlplane.domain.reviews import ReviewKind
    from controlplane.handlers.reviews import approval_link

    name = "defect-detector-blue-2026112210.0-0123456789abcdef"
    artifacts.save(f"reports/{name}.html", b"<html>production inputs</html>", "text/html")
    wired = replace(services, artifacts=artifacts, approval_key=b"b" * 32, public_url="https://cp.example")
    draft = ReviewDraft(kind=ReviewKind.DRIFT, approvers=("vision-reviewers@contoso.com",), quorum=1,
                        ttl=timedelta(days=7), separation_of_duties=False, evidence={"report": name})
    now = wired.clock.now()
    decision = record(Verdict(Outcome.REVIEW, "drift", model="defect-detector", reviews=(draft,)), key="window:b",
                      event_id="b", source=Source.TELEMETRY, event_type="drift.window", policy_version="p",
                      received_at=now, decided_at=now)
    wired.store.append(decision)
    [review] = decision.reviews
    token = approval_link(wired, review.id, "vision-reviewers@contoso.com").split("#token=", 1)[1]
    bootstrap.reset(wired)
    try:
        served = fn["review_report"](func.HttpRequest(
            "POST", f"/api/reviews/{review.id}/report", body=f"token={token}".encode(), route_params={"id": review.id},
            headers={"Content-Type": "application/x-www-form-urlencoded"}))
    finally:
        bootstrap.reset()
    assert served.status_code == 200 and served.get_body() == b"<html>production inputs</html>"
