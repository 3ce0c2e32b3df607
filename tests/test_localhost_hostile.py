"""Hostile clients against a real local host process: malformed requests answer 4xx, hostile events among good
ones lose none of the good, 32 clients at once all get answers, and stalled clients do not hold the server."""
from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from controlplane.dev.localhost import Function, LocalHost, make_server
from tests.support import load_event, local_host, request
from tests.test_hostile_input import LITERALS, WEBHOOK

HEALTH = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hostile-host")
    with local_host({"CONTROLPLANE_STORE": f"sqlite:///{workdir}/cp.db"}, workdir) as running:
        yield running


def raw(port: int, data: bytes, *, shutdown: bool = True, timeout: float = 10.0) -> bytes:
    """Send raw bytes on a fresh connection and read the answer until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if not shutdown and b"\r\n\r\n" in answer:
                    break
        except TimeoutError:
            pass
        return answer


def status_of(answer: bytes) -> int | None:
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else None


def deployed(marker: str, index: int) -> dict:
    event = load_event("eg_model_deployed_docs.json")[0]
    event["id"] = f"{marker}-{index}"
    event["data"]["ModelIds"] = f"{marker}:{index}"
    return event


MALFORMED = {
    "content length not a number": b"POST /api/alerts HTTP/1.1\r\nContent-Length: abc\r\n\r\n{}",
    "negative content length": b"POST /api/alerts HTTP/1.1\r\nContent-Length: -1\r\n\r\n{}",
    "content length as a float": b"POST /api/alerts HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n{}",
    "content length with a sign": b"POST /api/alerts HTTP/1.1\r\nContent-Length: +2\r\n\r\n{}",
    "content length past any body": b"POST /api/alerts HTTP/1.1\r\nContent-Length: 999999999999999999999999\r\n\r\n",
    "non-ASCII digits": "POST /api/alerts HTTP/1.1\r\nContent-Length: \u0661\u0662\r\n\r\n{}".encode(),
    "two content lengths": b"POST /api/alerts HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "chunked body": b"POST /api/alerts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "body shorter than declared": b"POST /api/alerts HTTP/1.1\r\nContent-Length: 100\r\n\r\n{}",
    "request line of garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "header line of 70,000 bytes": b"GET /api/health HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    "two hundred headers": b"GET /api/health HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
    "webhook body not JSON": (b"POST " + WEBHOOK.encode() + b" HTTP/1.1\r\naeg-event-type: Notification\r\n"
                              b"Content-Length: 5\r\n\r\n{]]]}"),
    "handshake without a code": (b"POST " + WEBHOOK.encode() + b" HTTP/1.1\r\naeg-event-type: SubscriptionValidation"
                                 b"\r\nContent-Length: 14\r\n\r\n[{\"data\": []}]"),
    "admin body nested 5,000 deep": (b"POST /admin/functions/on_telemetry HTTP/1.1\r\nContent-Length: 10000\r\n\r\n"
                                     + b"[" * 5000 + b"]" * 5000),
    "admin sequence number not a number": (b"POST /admin/functions/on_telemetry HTTP/1.1\r\nContent-Length: 24\r\n"
                                           b"\r\n{\"sequenceNumber\": \"x\"}  "),
    "unknown method": b"BREW /api/health HTTP/1.1\r\n\r\n",
    "TRACE": b"TRACE /api/alerts HTTP/1.1\r\n\r\n",
    "PROPFIND on the webhook": b"PROPFIND " + WEBHOOK.encode() + b" HTTP/1.1\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_request_answers_4xx(host, name):
    answer = raw(host.port, MALFORMED[name])
    assert status_of(answer) is not None and 400 <= status_of(answer) < 500, (name, answer[:300])


def test_head_answers_like_get_without_a_body(host):
    answer = raw(host.port, b"HEAD /api/health HTTP/1.1\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status_of(answer) == 200 and body == b""
    assert int(dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])[b"Content-Length"]) > 0
    assert status_of(raw(host.port, b"HEAD /api/alerts HTTP/1.1\r\n\r\n")) == 405


@pytest.mark.parametrize("family", ["nesting", "numbers", "unicode", "times"])
def test_hostile_events_among_good_ones_over_http(host, family):
    """A family through the process: every delivery is acknowledged, every good event decided, no function
    fails, and the bad bodies at /api/alerts and /admin answer 4xx."""
    marker = f"hx{family}"
    sent = 0
    for index, literal in enumerate(LITERALS[family].values()):
        goods = [deployed(marker, 2 * index), deployed(marker, 2 * index + 1)]
        body = f"[{json.dumps(goods[0])},{literal},{json.dumps(goods[1])}]"
        reply = request("POST", f"{host.url}{WEBHOOK}", body.encode("utf-8", "surrogatepass"),
                        {"aeg-event-type": "Notification", "Content-Type": "application/json"})
        not_an_event = not literal.startswith("{")  # refused with its index; the others are still decided
        assert reply.status == (400 if not_an_event else 202), (literal[:80], reply.body[:300])
        sent += 2
        admin = json.dumps({"input": literal})
        for target, data in (("/api/alerts", literal), ("/admin/functions/on_telemetry", admin)):
            answer = request("POST", f"{host.url}{target}", data.encode("utf-8", "surrogatepass"))
            assert answer.status < 500, (target, literal[:80], answer.body[:300])
    recorded = {(d["model"], d["version"]) for d in host.decisions(model=marker, limit=500)
                if d["outcome"] == "no_action"}
    assert len(recorded) == sent
    assert "Traceback" not in host.log.read_text(encoding="utf-8", errors="replace")


def test_thirty_two_clients_at_once_all_get_answers(host):
    start = threading.Barrier(32)

    def client(index: int) -> int:
        start.wait()
        if index % 2:
            return request("GET", f"{host.url}/api/health", timeout=30).status
        return request("POST", f"{host.url}{WEBHOOK}", json.dumps([deployed("hxburst", index)]),
                       {"aeg-event-type": "Notification"}, timeout=30).status

    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(client, range(32)))
    assert sorted(set(statuses)) == [200, 202], statuses


def test_stalled_clients_do_not_hold_the_server(host):
    stalled = []
    for partial in (b"GET /api/heal", b"POST /api/alerts HTTP/1.1\r\nContent-Length: 100\r\n\r\n{", b""):
        sock = socket.create_connection(("127.0.0.1", host.port))
        sock.sendall(partial)
        stalled.append(sock)
    try:
        began = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda _: status_of(raw(host.port, HEALTH, shutdown=False)), range(32)))
        assert answers == [200] * 32
        assert time.monotonic() - began < 5
    finally:
        for sock in stalled:
            sock.close()


def test_a_stalled_connection_is_answered_408_and_closed_after_the_read_timeout(app_functions):
    server = make_server(LocalHost(functions=map(Function.of, app_functions.values())), port=0, read_timeout=0.5)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    port = server.server_address[1]
    try:
        began = time.monotonic()
        partial_body = raw(port, b"POST /api/alerts HTTP/1.1\r\nContent-Length: 10\r\n\r\n{\"a", shutdown=False)
        assert status_of(partial_body) == 408
        assert raw(port, b"GET /api/he", shutdown=False) == b""  # no request line in time: closed
        assert time.monotonic() - began < 5
        assert server.request_queue_size >= 128
    finally:
        server.shutdown()
        server.server_close()
