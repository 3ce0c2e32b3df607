"""Azure ML studio deep links: each asset's page, in its workspace (``wsid``) or its registry, every name quoted."""
from __future__ import annotations

from controlplane.web.studio import endpoint_url, job_url, model_url, registry_model_url

WSID = "/subscriptions/0000-11/resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/mlw-prod"


def test_each_asset_links_to_its_page_in_the_workspace_named_by_its_resource_id():
    assert model_url("churn", "5", WSID) == f"https://ml.azure.com/model/churn:5/details?wsid={WSID}"
    assert job_url("churn-v5-3f2a-test", WSID) == f"https://ml.azure.com/runs/churn-v5-3f2a-test?wsid={WSID}"
    assert endpoint_url("churn-ep", WSID) == f"https://ml.azure.com/endpoints/realtime/churn-ep/detail?wsid={WSID}"
    assert endpoint_url("churn-batch", WSID, batch=True) == (
        f"https://ml.azure.com/endpoints/batch/churn-batch/detail?wsid={WSID}")


def test_a_registry_model_needs_no_workspace():
    assert registry_model_url("mlops-registry", "churn", "5") == (
        "https://ml.azure.com/registries/mlops-registry/models/churn/version/5")


def test_names_are_quoted_so_none_can_change_the_page_or_the_workspace_a_link_opens():
    assert model_url("a/b?c", "1#x", WSID) == f"https://ml.azure.com/model/a%2Fb%3Fc:1%23x/details?wsid={WSID}"
    assert registry_model_url("reg/../x", "m n", "2") == (
        "https://ml.azure.com/registries/reg%2F..%2Fx/models/m%20n/version/2")
    assert job_url("j&wsid=evil", WSID) == f"https://ml.azure.com/runs/j%26wsid%3Devil?wsid={WSID}"
    assert endpoint_url("ep", WSID + "&x=<y>").endswith("?wsid=" + WSID + "%26x%3D%3Cy%3E")
