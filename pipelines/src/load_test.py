"""Test stage, load_test step: a short load test of the candidate's deployment on the staging endpoint.

It POSTs ``--requests`` scoring requests, each a row of the test data (features only) in the body an MLflow model
on an online endpoint reads, ``{"input_data": {"columns": [...], "index": [...], "data": [[...]]}}``, with the
header ``azureml-model-deployment: <deployment>``, which routes a request to that deployment whatever its share
of the endpoint's traffic (the candidate's is 0%). Results:

- ``p95_latency_ms``: the 95th percentile of the time from sending a request to its answer (or to its failure);
- ``error_rate``: the share of requests not answered with a 2xx status: 5xx, 4xx (401 or 429 would fail a
  release too), timeouts and refused connections.

The endpoint's scoring URI and credential come from the workspace the job runs in (``AZUREML_ARM_SUBSCRIPTION``,
``AZUREML_ARM_RESOURCEGROUP``, ``AZUREML_ARM_WORKSPACE_NAME``), read with azure-ai-ml as the job's identity (as
register.py does): ``online_endpoints.get(endpoint).scoring_uri``, and ``online_endpoints.get_keys(endpoint)``,
which answers as the endpoint's auth mode asks: its primary key (``key``), an Azure ML token (``aml_token``) or the
identity's own Entra token for ``https://ml.azure.com`` (``aad_token``). Each is sent as ``Authorization: Bearer``.

``--scoring-uri`` skips the workspace and scores that URI, with the token in the ``SCORING_KEY`` environment
variable when it is set: for trying the step against a local server.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from churn_common import FEATURES
from register import WORKSPACE, credential
from stage_results import read_csv, write_step

Send = Callable[[str, bytes, Mapping[str, str], float], int]


def request_bodies(table, count: int) -> list[bytes]:
    """``count`` one-row requests, cycling through the rows that have every feature."""
    rows = table.dropna(subset=FEATURES)
    if rows.empty:
        raise SystemExit("error: no row of the test data has every feature")
    split = json.loads(rows[FEATURES].to_json(orient="split", double_precision=15))
    return [json.dumps({"input_data": {"columns": split["columns"], "index": [split["index"][i % len(rows)]],
                                       "data": [split["data"][i % len(rows)]]}}).encode()
            for i in range(count)]


def post(uri: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """The HTTP status of one scoring request; 0 when none came back (timeout, refused connection)."""
    request = urllib.request.Request(uri, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return 0


def run(send: Send, uri: str, bodies: list[bytes], headers: Mapping[str, str], timeout: float,
        concurrency: int) -> list[tuple[int, float]]:
    """(status, seconds) of every request, ``concurrency`` at a time."""
    def timed(body: bytes) -> tuple[int, float]:
        started = time.perf_counter()
        status = send(uri, body, headers, timeout)
        return status, time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(timed, bodies))


def summarise(outcomes: list[tuple[int, float]]) -> dict[str, float]:
    import numpy as np

    latencies_ms = [seconds * 1000 for _, seconds in outcomes]
    errors = sum(1 for status, _ in outcomes if not 200 <= status < 300)
    return {"p95_latency_ms": round(float(np.percentile(latencies_ms, 95)), 4),
            "error_rate": round(errors / len(outcomes), 4)}


def scoring_target(endpoint: str, environ: Mapping[str, str]) -> tuple[str, str]:
    """The endpoint's scoring URI and bearer token, from the workspace the job runs in."""
    missing = [variable for variable in WORKSPACE if not environ.get(variable)]
    if missing:
        raise SystemExit(f"error: {', '.join(missing)} not set: run this step in an Azure ML job, or give "
                         "--scoring-uri")
    from azure.ai.ml import MLClient

    client = MLClient(credential(environ), *(environ[variable] for variable in WORKSPACE))
    uri = client.online_endpoints.get(endpoint).scoring_uri
    auth = client.online_endpoints.get_keys(endpoint)
    token = getattr(auth, "primary_key", None) or getattr(auth, "access_token", None)
    if not uri or not token:
        raise SystemExit(f"error: endpoint {endpoint} has no scoring URI or credential yet")
    return uri, token


def main(argv: list[str] | None = None, send: Send = post) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-data", type=Path, required=True, help="the held-out CSV (or its folder)")
    parser.add_argument("--endpoint", required=True, help="the staging online endpoint")
    parser.add_argument("--deployment", required=True, help="the candidate's deployment on it")
    parser.add_argument("--requests", type=int, default=50, help="how many scoring requests to send")
    parser.add_argument("--concurrency", type=int, default=4, help="how many requests are in flight at once")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one answer")
    parser.add_argument("--scoring-uri", help="score this URI instead of the endpoint's (token in SCORING_KEY)")
    parser.add_argument("--out", type=Path, required=True, help="folder for load_test.json")
    args = parser.parse_args(argv)
    if not args.endpoint or not args.deployment:
        raise SystemExit("error: name the endpoint and the deployment to test")
    if args.requests < 1 or args.concurrency < 1:
        raise SystemExit("error: --requests and --concurrency must be at least 1")

    if args.scoring_uri:
        uri, token = args.scoring_uri, os.environ.get("SCORING_KEY", "")
    else:
        uri, token = scoring_target(args.endpoint, os.environ)
    bodies = request_bodies(read_csv(args.test_data), args.requests)
    headers = {"Content-Type": "application/json", "azureml-model-deployment": args.deployment}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    outcomes = run(send, uri, bodies, headers, args.timeout, args.concurrency)
    results = summarise(outcomes)
    statuses: dict[str, int] = {}
    for status, _ in outcomes:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    write_step(args.out, "load_test", results, endpoint=args.endpoint, deployment=args.deployment,
               scoring_uri=uri, requests=len(outcomes), concurrency=args.concurrency, statuses=statuses)
    print(f"load_test: {len(outcomes)} requests to {args.endpoint}/{args.deployment}, p95 latency "
          f"{results['p95_latency_ms']:.1f} ms, error rate {results['error_rate']:.2%} (statuses {statuses})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
