"""MLOps v2 environments: each event is recorded with the environment (an Azure ML workspace) it came from."""
from __future__ import annotations

import copy

from controlplane.handlers.registry import receive_registry_event
from tests.support import load_event
from tests.test_retraining_loop import with_policy


def test_each_event_is_recorded_with_the_environment_whose_workspace_sent_it(services):
    from controlplane.domain.policy import Environment

    services = with_policy(services, "  prod: {workspace: mlw-prod, home: true}\n",
                           "  prod: {workspace: MLW-PROD, resource_group: rg-ml-prod}\n")
    event = load_event("eg_model_registered_docs.json")
    event = copy.deepcopy(event[0] if isinstance(event, list) else event)
    assert receive_registry_event(services, event).evidence["environment"] == "prod"  # names compared as Azure does
    event["id"], event["topic"] = "from-dev", event["topic"].replace("rg-ml-prod", "rg-ml-dev").replace("mlw-prod",
                                                                                                      "mlw-dev")
    assert receive_registry_event(services, event).evidence["environment"] == "dev"
    event["id"], event["topic"] = "from-elsewhere", event["topic"].replace("mlw-dev", "mlw-sandbox")
    assert "environment" not in receive_registry_event(services, event).evidence
    assert not Environment(workspace="mlw-prod", resource_group="rg-other").holds(
        "/subscriptions/s/resourceGroups/rg-ml-prod/providers/Microsoft.MachineLearningServices/workspaces/mlw-prod")
