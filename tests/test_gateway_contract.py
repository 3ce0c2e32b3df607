"""The Azure ML gateway port's contract, run over each implementation: the in-memory fake of the handler tests,
the dry run's simulated workspace, and the real adapter driven through azure-ai-ml over the HTTP boundary
(``tests.azure_http.AzureMLService``: documented Azure ML REST semantics). What callers rely on holds for all
three; where they differed, the real adapter's behaviour is the one the others follow.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from controlplane.adapters.azureml import AzureMLGateway
from controlplane.adapters.simulated import SimulatedWorkspace
from controlplane.domain.errors import TransientError
from controlplane.ports.gateway import (
    DeploymentInfo,
    DeploymentRequest,
    EndpointState,
    GatewayError,
    JobInfo,
    NotFound,
    PipelineRequest,
)
from tests.azure_http import GROUP, SUBSCRIPTION, WORKSPACE, AzureMLService, FixedCredential, arm_error
from tests.fakes import FakeClock, FakeWorkspace

IMPLEMENTATIONS = ["fake", "simulated", "azureml"]
FAILED_WITH = "ModuleNotFoundError: No module named 'lightgbm'"


@dataclass
class Workspace:
    """One implementation of the port, and how a test puts things in the workspace behind it."""

    kind: str
    gateway: Any
    backend: Any
    clock: FakeClock = field(default_factory=FakeClock)

    def add_model(self, name: str, version: str, tags: dict[str, str], registered_by: str) -> None:
        if self.kind == "fake":
            self.backend.add_model(name, version, tags, created_by=registered_by)
        elif self.kind == "simulated":
            self.backend.register_model(name, version, registered_by, tags)
        else:
            self.backend.add_model(name, version, tags, registered_by=registered_by)

    def add_job(self, name: str, status: str) -> None:
        if self.kind == "fake":
            self.backend.jobs[name] = JobInfo(name, status, "churn-retrain")
        elif self.kind == "simulated":
            self.backend.submit_pipeline(PipelineRequest(name, "churn-retrain", "azureml:train-churn:2"))
            self.backend.set_job_status(name, status)
        else:
            self.backend.add_job(name, status, experiment="churn-retrain")

    def serve(self, endpoint: str, deployments: dict[str, tuple[str, int]], traffic: dict[str, int],
              mirror: dict[str, int] | None = None) -> None:
        """An endpoint whose deployments are provisioned, with that live (and mirror) traffic."""
        if self.kind == "fake":
            self.backend.endpoints[endpoint] = EndpointState(endpoint, dict(traffic), dict(mirror or {}), tuple(
                DeploymentInfo(endpoint, name, model, "Standard_DS3_v2", count, "Succeeded")
                for name, (model, count) in deployments.items()))
        elif self.kind == "simulated":
            self.backend.create_endpoint(endpoint, "key")
            for name, (model, count) in deployments.items():
                self.backend.deploy(DeploymentRequest(endpoint, name, model, "Standard_DS3_v2", count))
            self.backend.set_traffic(endpoint, traffic, mirror or {})
        else:
            self.backend.serve(endpoint, deployments, traffic, mirror)

    def provisioning_takes_time(self, endpoint: str, deployment: str, fail_with: str = "") -> None:
        """The next deployment begun is still ``Creating`` at the next look, and done (``Succeeded``, or
        ``Failed`` with that reason) after ``later()``."""
        outcome = "Failed" if fail_with else "Succeeded"
        if self.kind == "fake":
            self.backend.provision(endpoint, deployment, "Creating", outcome,
                                   error=f"provisioning failed; container log: {fail_with}" if fail_with else "")
        elif self.kind == "simulated":
            self.backend.set_provisioning(10 * 60, fail_with=fail_with)
        else:
            self.backend.provision(endpoint, deployment, "Creating", outcome, log=fail_with)

    def later(self) -> None:
        self.clock.advance(minutes=11)


@pytest.fixture(params=IMPLEMENTATIONS)
def workspace(request, tmp_path) -> Workspace:
    if request.param == "fake":
        fake = FakeWorkspace()
        return Workspace("fake", fake, fake)
    if request.param == "simulated":
        clock = FakeClock()
        simulated = SimulatedWorkspace(tmp_path / "simulated-workspace.json", clock)
        return Workspace("simulated", simulated, simulated, clock)
    clock = FakeClock()
    service = AzureMLService(clock)
    request.addfinalizer(service.close)  # the SDK pollers this test began stop at their next look
    gateway = AzureMLGateway(SUBSCRIPTION, GROUP, WORKSPACE, credential=FixedCredential(),
                             transport=service.transport, retry_total=0)
    return Workspace("azureml", gateway, service, clock)


def deployment(workspace: Workspace, endpoint: str, name: str) -> DeploymentInfo | None:
    return next((d for d in workspace.gateway.get_endpoint(endpoint).deployments if d.name == name), None)


def nonzero(shares) -> dict[str, int]:
    return {name: share for name, share in dict(shares).items() if share}


def staging(name: str = "green", model: str = "azureml:churn:4", count: int = 2) -> DeploymentRequest:
    return DeploymentRequest("churn-ep", name, model, "Standard_DS3_v2", count)


# -- models -----------------------------------------------------------------------------------------------------


def test_a_model_is_read_with_its_tags_and_who_registered_it(workspace):
    workspace.add_model("churn", "4", {"accuracy": "0.91", "auc": "0.88"}, registered_by="alice@contoso.com")

    model = workspace.gateway.get_model("churn", "4")

    assert (model.name, model.version) == ("churn", "4")
    assert model.tags == {"accuracy": "0.91", "auc": "0.88"}
    assert model.registered_by == "alice@contoso.com"
    assert model.created_by == "alice@contoso.com"  # no created_by tag: whoever Azure ML recorded


def test_an_unknown_model_is_not_found(workspace):
    workspace.add_model("churn", "4", {}, registered_by="alice@contoso.com")

    with pytest.raises(NotFound) as raised:
        workspace.gateway.get_model("churn", "5")

    assert isinstance(raised.value, GatewayError) and "404" in str(raised.value)


def test_tagging_a_model_merges_the_tags_and_sets_its_stage(workspace):
    workspace.add_model("churn", "4", {"team": "growth"}, registered_by="alice@contoso.com")

    tagged = workspace.gateway.tag_model("churn", "4", {"controlplane.stage": "production"}, stage="Production")

    again = workspace.gateway.get_model("churn", "4")
    for model in (tagged, again):
        assert model.tags == {"team": "growth", "controlplane.stage": "production"} and model.stage == "Production"


# -- pipeline jobs ------------------------------------------------------------------------------------------------

RETRAIN = PipelineRequest(name="retrain-churn-42", experiment="churn-retrain", source="azureml:train-churn:2",
                          inputs={"model_name": "churn"}, compute="cpu-cluster", tags={"trigger": "drift"})


def test_a_pipeline_is_submitted_once_by_name(workspace):
    first = workspace.gateway.submit_pipeline(RETRAIN)
    second = workspace.gateway.submit_pipeline(RETRAIN)

    assert (first.name, first.created, first.status, first.experiment) == (
        "retrain-churn-42", True, "NotStarted", "churn-retrain")
    assert (second.name, second.created) == ("retrain-churn-42", False)
    assert workspace.gateway.get_job("retrain-churn-42").experiment == "churn-retrain"


def test_a_resubmission_reports_the_job_as_it_is_now(workspace):
    workspace.add_job("retrain-churn-42", "Running")

    info = workspace.gateway.submit_pipeline(RETRAIN)

    assert not info.created and info.status == "Running"
    assert workspace.gateway.get_job("retrain-churn-42").status == "Running"


def test_an_unknown_job_is_not_found(workspace):
    with pytest.raises(NotFound):
        workspace.gateway.get_job("retrain-churn-404")


# -- endpoints and deployments ------------------------------------------------------------------------------------


def test_an_endpoint_is_created_begun_and_found_afterwards_with_no_traffic(workspace):
    begun = workspace.gateway.create_endpoint("churn-ep", "aml_token")

    assert begun.name == "churn-ep" and begun.provisioning_state == "Creating"  # begun, not awaited
    workspace.later()
    found = workspace.gateway.get_endpoint("churn-ep")
    assert found.provisioning_state == "Succeeded"
    assert nonzero(found.traffic) == {} and nonzero(found.mirror_traffic) == {} and found.serving() is None


def test_an_unknown_endpoint_is_not_found(workspace):
    with pytest.raises(NotFound):
        workspace.gateway.get_endpoint("nope-ep")


def test_a_deployment_is_begun_creating_and_read_back_with_its_model_and_size(workspace):
    workspace.serve("churn-ep", {"blue": ("azureml:churn:3", 1)}, {"blue": 100})

    begun = workspace.gateway.deploy(staging())

    assert (begun.endpoint, begun.name, begun.model) == ("churn-ep", "green", "azureml:churn:4")
    assert (begun.instance_type, begun.instance_count, begun.provisioning_state) == ("Standard_DS3_v2", 2, "Creating")
    found = workspace.gateway.get_deployment("churn-ep", "green")
    assert (found.model, found.instance_type, found.instance_count) == ("azureml:churn:4", "Standard_DS3_v2", 2)
    assert found.provisioning_state == "Succeeded" and found.error == ""
    assert deployment(workspace, "churn-ep", "green").model == "azureml:churn:4"
    assert nonzero(workspace.gateway.get_endpoint("churn-ep").traffic) == {"blue": 100}  # no traffic for it


def test_a_deployment_provisioning_is_creating_then_succeeded(workspace):
    workspace.serve("churn-ep", {"blue": ("azureml:churn:3", 1)}, {"blue": 100})
    workspace.provisioning_takes_time("churn-ep", "green")
    workspace.gateway.deploy(staging())

    assert workspace.gateway.get_deployment("churn-ep", "green").provisioning_state == "Creating"
    workspace.later()
    assert workspace.gateway.get_deployment("churn-ep", "green").provisioning_state == "Succeeded"


def test_a_deployment_that_fails_says_why(workspace):
    workspace.serve("churn-ep", {"blue": ("azureml:churn:3", 1)}, {"blue": 100})
    workspace.provisioning_takes_time("churn-ep", "green", fail_with=FAILED_WITH)
    workspace.gateway.deploy(staging())

    assert workspace.gateway.get_deployment("churn-ep", "green").provisioning_state == "Creating"
    workspace.later()
    failed = workspace.gateway.get_deployment("churn-ep", "green")
    assert failed.provisioning_state == "Failed" and "No module named 'lightgbm'" in failed.error


def test_deploying_to_an_endpoint_that_does_not_exist_is_not_found(workspace):
    with pytest.raises(NotFound):
        workspace.gateway.deploy(staging())

    with pytest.raises(NotFound):
        workspace.gateway.get_endpoint("churn-ep")


def test_an_unknown_deployment_is_not_found(workspace):
    workspace.serve("churn-ep", {"blue": ("azureml:churn:3", 1)}, {"blue": 100})

    with pytest.raises(NotFound):
        workspace.gateway.get_deployment("churn-ep", "green")
    with pytest.raises(NotFound):
        workspace.gateway.get_deployment("nope-ep", "blue")


def test_scaling_is_begun_updating_and_keeps_the_model(workspace):
    workspace.serve("churn-ep", {"blue": ("azureml:churn:3", 1)}, {"blue": 100})

    begun = workspace.gateway.scale("churn-ep", "blue", 4)

    assert (begun.name, begun.instance_count, begun.provisioning_state) == ("blue", 4, "Updating")
    workspace.later()
    found = workspace.gateway.get_deployment("churn-ep", "blue")
    assert (found.model, found.instance_count, found.provisioning_state) == ("azureml:churn:3", 4, "Succeeded")


@pytest.mark.parametrize("endpoint", ["churn-ep", "nope-ep"])
def test_scaling_what_does_not_exist_is_not_found(workspace, endpoint):
    workspace.serve("churn-ep", {"blue": ("azureml:churn:3", 1)}, {"blue": 100})

    with pytest.raises(NotFound):
        workspace.gateway.scale(endpoint, "green", 2)


def test_live_and_mirror_traffic_are_set_and_read_back(workspace):
    workspace.serve("churn-ep", {"blue": ("azureml:churn:3", 1), "green": ("azureml:churn:4", 1)}, {"blue": 100})

    begun = workspace.gateway.set_traffic("churn-ep", {"blue": 100, "green": 0}, mirror={"green": 20})

    assert begun.provisioning_state == "Updating"  # begun, not awaited
    assert nonzero(begun.traffic) == {"blue": 100} and nonzero(begun.mirror_traffic) == {"green": 20}
    workspace.later()
    found = workspace.gateway.get_endpoint("churn-ep")
    assert nonzero(found.traffic) == {"blue": 100} and nonzero(found.mirror_traffic) == {"green": 20}
    assert found.serving() == "blue" and found.provisioning_state == "Succeeded"

    workspace.gateway.set_traffic("churn-ep", {"blue": 50, "green": 50}, mirror={})
    found = workspace.gateway.get_endpoint("churn-ep")
    assert nonzero(found.traffic) == {"blue": 50, "green": 50} and nonzero(found.mirror_traffic) == {}


def test_setting_live_traffic_alone_leaves_mirror_traffic_as_it_is(workspace):
    workspace.serve("churn-ep", {"blue": ("azureml:churn:3", 1), "green": ("azureml:churn:4", 1)}, {"blue": 100},
                    mirror={"green": 10})

    begun = workspace.gateway.set_traffic("churn-ep", {"blue": 100})

    assert nonzero(begun.mirror_traffic) == {"green": 10}
    assert nonzero(workspace.gateway.get_endpoint("churn-ep").mirror_traffic) == {"green": 10}


@pytest.mark.parametrize("traffic, mirror, reason", [
    ({"blue": 60}, None, "sum to 100"),
    ({"blue": 100}, {"green": 60}, "between 0 and 50"),
    ({"blue": 90, "green": 10}, {"green": 10}, "while it serves live traffic"),
])
def test_a_traffic_split_azure_would_refuse_is_a_gateway_error_and_changes_nothing(workspace, traffic, mirror,
                                                                                   reason):
    workspace.serve("churn-ep", {"blue": ("azureml:churn:3", 1), "green": ("azureml:churn:4", 1)}, {"blue": 100})

    with pytest.raises(GatewayError, match=reason) as raised:
        workspace.gateway.set_traffic("churn-ep", traffic, mirror=mirror)

    assert not isinstance(raised.value, NotFound)
    found = workspace.gateway.get_endpoint("churn-ep")
    assert nonzero(found.traffic) == {"blue": 100} and nonzero(found.mirror_traffic) == {}


def test_setting_traffic_on_an_endpoint_that_does_not_exist_is_not_found(workspace):
    with pytest.raises(NotFound):
        workspace.gateway.set_traffic("nope-ep", {"blue": 100})


def test_a_deleted_deployment_is_gone_and_deleting_it_again_is_not_an_error(workspace):
    workspace.serve("churn-ep", {"blue": ("azureml:churn:3", 1), "green": ("azureml:churn:4", 1)}, {"blue": 100})

    assert workspace.gateway.delete_deployment("churn-ep", "green") is None
    workspace.later()

    with pytest.raises(NotFound):
        workspace.gateway.get_deployment("churn-ep", "green")
    assert [d.name for d in workspace.gateway.get_endpoint("churn-ep").deployments] == ["blue"]
    assert workspace.gateway.delete_deployment("churn-ep", "green") is None
    assert workspace.gateway.delete_deployment("nope-ep", "green") is None


def test_no_change_waits_for_azure_ml_to_finish_it(workspace):
    workspace.serve("churn-ep", {"blue": ("azureml:churn:3", 1)}, {"blue": 100})
    workspace.provisioning_takes_time("churn-ep", "green")
    gateway = workspace.gateway
    gateway.get_endpoint("churn-ep")  # the client is built before the clock starts

    began = time.perf_counter()
    gateway.deploy(staging())
    gateway.scale("churn-ep", "blue", 2)
    gateway.set_traffic("churn-ep", {"blue": 100}, mirror={"green": 10})
    gateway.delete_deployment("churn-ep", "green")
    took = time.perf_counter() - began

    assert took < 3.0  # the SDK's pollers wait 5 s before their first look: nothing here waited for one


# -- how failures cross the port (the real adapter at the HTTP boundary) -------------------------------------------

CALLS = {
    "get_model": lambda g: g.get_model("churn", "3"),
    "get_job": lambda g: g.get_job("retrain-churn-42"),
    "deploy": lambda g: g.deploy(staging()),
    "scale": lambda g: g.scale("churn-ep", "blue", 2),
    "set_traffic": lambda g: g.set_traffic("churn-ep", {"blue": 100}),
    "get_deployment": lambda g: g.get_deployment("churn-ep", "blue"),
}


@pytest.fixture
def served():
    service = AzureMLService()
    service.serve("churn-ep", {"blue": ("azureml:churn:3", 1)}, {"blue": 100})
    service.add_model("churn", "3", {})
    service.add_job("retrain-churn-42")
    gateway = AzureMLGateway(SUBSCRIPTION, GROUP, WORKSPACE, credential=FixedCredential(),
                             transport=service.transport, retry_total=0)
    yield service, gateway
    service.close()


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("status, code, expected", [
    (429, "TooManyRequests", TransientError), (503, "ServiceUnavailable", TransientError),
    (403, "AuthorizationFailed", GatewayError), (400, "BadRequest", GatewayError),
])
def test_throttling_and_outages_are_transient_refusals_are_permanent(served, call, status, code, expected):
    service, gateway = served
    service.transport.on("PUT", "/.*", (status, arm_error(code, f"{code} from Azure ML")))
    service.transport.on("GET", "/(models|jobs|onlineEndpoints)/.*", (status, arm_error(code, f"{code} from Azure ML")))

    with pytest.raises(expected) as raised:
        CALLS[call](gateway)

    assert type(raised.value) is expected and f"{code} from Azure ML" in str(raised.value)


@pytest.mark.parametrize("call", ["deploy", "scale", "set_traffic"])
def test_a_change_refused_because_another_runs_on_the_endpoint_is_transient(served, call):
    service, gateway = served
    service.transport.on("PUT", "/onlineEndpoints/.*", (409, arm_error("Conflict", "an operation is in progress")))

    with pytest.raises(TransientError, match="an operation is in progress"):
        CALLS[call](gateway)
