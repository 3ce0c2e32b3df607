"""SecureWebhookValidator against a real JWKS endpoint on loopback, with tokens minted locally."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from controlplane.adapters.secure_webhook import ROLE, SecureWebhookValidator
from controlplane.domain.errors import Forbidden, TransientError, Unauthorized
from tests.support import ROOT

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
AUDIENCE = "api://controlplane-alerts"
V1_ISSUER = f"https://sts.windows.net/{TENANT}/"
V2_ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"
CLOUD_ISSUERS = (V1_ISSUER, V2_ISSUER)  # the local JWKS server stands in for the public cloud's authority
NOW = 1_700_000_000.0
TTL = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Jwks:
    """What the fake Entra endpoint serves, and how often it was asked."""

    def __init__(self) -> None:
        self.keys: list[dict] = []
        self.status = 200
        self.body: bytes | None = None  # overrides the JSON document when set
        self.delay = 0.0  # seconds before answering
        self.hits = 0
        self.paths: list[str] = []
        self.authority = ""
        self.lock = threading.Lock()

    def publish(self, *keys: tuple[str, rsa.RSAPrivateKey]) -> None:
        self.keys = [{**RSAAlgorithm.to_jwk(private.public_key(), as_dict=True), "kid": kid, "use": "sig"}
                     for kid, private in keys]


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]


@pytest.fixture(scope="module")
def jwks_server():
    """One loopback server for the module; each test gets a fresh ``Jwks`` state to serve (``jwks`` fixture)."""
    served: list[Jwks] = [Jwks()]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            state = served[0]
            with state.lock:
                state.hits += 1
                state.paths.append(self.path)
            time.sleep(state.delay)
            body = state.body if state.body is not None else json.dumps({"keys": state.keys}).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.handle_error = lambda request, client_address: None  # a client that timed out and hung up
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def jwks(jwks_server, rsa_keys) -> Jwks:
    served, authority = jwks_server
    state = Jwks()
    state.authority = authority
    state.publish(("kid-1", rsa_keys[0]))
    served[0] = state
    return state


@pytest.fixture
def fake_clock() -> Clock:
    return Clock()


@pytest.fixture
def validator(jwks, fake_clock) -> SecureWebhookValidator:
    return SecureWebhookValidator(TENANT, AUDIENCE, authority=jwks.authority, issuers_of=CLOUD_ISSUERS,
                                  keys_ttl_seconds=TTL, clock=fake_clock, timeout=2.0)


def claims(**overrides) -> dict:
    base = {"iss": V1_ISSUER, "aud": AUDIENCE, "iat": int(NOW) - 10, "nbf": int(NOW) - 10, "exp": int(NOW) + 3600,
            "tid": TENANT, "sub": "action-group-sp", "roles": [ROLE], "ver": "1.0"}
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def mint(private: rsa.RSAPrivateKey, kid: str = "kid-1", **overrides) -> str:
    return jwt.encode(claims(**overrides), private, algorithm="RS256", headers={"kid": kid})


def bearer(token: str) -> str:
    return f"Bearer {token}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, body: dict, sign) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def refused(validator: SecureWebhookValidator, authorization: str | None, status: int = 401) -> str:
    with pytest.raises(Unauthorized) as caught:
        validator.validate(authorization)
    assert isinstance(caught.value, Forbidden) == (status == 403) and caught.value.subject == "Authorization"
    return caught.value.reason


# --- accepted tokens ---------------------------------------------------------------------------------------------

def test_a_valid_v1_token_returns_its_claims(validator, jwks, rsa_keys):
    result = validator.validate(bearer(mint(rsa_keys[0])))
    assert result["iss"] == V1_ISSUER and result["aud"] == AUDIENCE and result["roles"] == [ROLE]
    assert jwks.paths == [f"/{TENANT}/discovery/v2.0/keys"]


def test_a_valid_v2_token_returns_its_claims(validator, rsa_keys):
    result = validator.validate(bearer(mint(rsa_keys[0], iss=V2_ISSUER, ver="2.0", roles=["Other", ROLE])))
    assert result["iss"] == V2_ISSUER and result["ver"] == "2.0"


def test_the_scheme_is_case_insensitive_and_times_get_60_s_of_leeway(validator, rsa_keys):
    token = mint(rsa_keys[0], exp=int(NOW) - 30, nbf=int(NOW) + 30)
    assert validator.validate(f"bearer  {token} ")["exp"] == int(NOW) - 30


# --- refused with 401 --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("authorization", [None, "", "   "])
def test_a_missing_header_is_401(validator, authorization):
    assert "no Authorization header" in refused(validator, authorization)


def test_a_basic_scheme_is_401(validator):
    assert "Bearer scheme (got 'Basic')" in refused(validator, "Basic dXNlcjpwYXNz")


def test_a_token_without_a_scheme_is_401_and_not_echoed(validator, rsa_keys):
    token = mint(rsa_keys[0])
    reason = refused(validator, token)
    assert "Bearer scheme" in reason and token not in reason


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ"])
def test_a_garbage_token_is_401(validator, jwks, token):
    assert refused(validator, bearer(token)) == "bearer token is not a well-formed JWT"
    assert jwks.hits == 0, "a malformed token costs no key fetch"


def test_an_empty_bearer_token_is_401(validator):
    assert "empty Bearer token" in refused(validator, "Bearer ")


def test_a_signature_by_another_key_with_the_same_kid_is_401(validator, rsa_keys):
    token = mint(rsa_keys[1], kid="kid-1")
    reason = refused(validator, bearer(token))
    assert reason == "token signature does not verify with signing key 'kid-1'"
    assert token not in reason


def test_a_tampered_payload_is_401(validator, rsa_keys):
    header, _, signature = mint(rsa_keys[0], roles=["Reader"]).split(".")
    payload = b64(json.dumps(claims()).encode())  # grants the role, keeps the old signature
    assert "signature does not verify" in refused(validator, bearer(f"{header}.{payload}.{signature}"))


def test_an_expired_token_is_401(validator, rsa_keys):
    reason = refused(validator, bearer(mint(rsa_keys[0], exp=int(NOW) - 61)))
    assert reason.startswith("token expired at 2023-11-14T22:12:19Z")


def test_a_token_without_exp_is_401(validator, rsa_keys):
    assert "no numeric expiry" in refused(validator, bearer(mint(rsa_keys[0], exp=None)))


def test_a_token_not_yet_valid_is_401(validator, rsa_keys):
    reason = refused(validator, bearer(mint(rsa_keys[0], nbf=int(NOW) + 120)))
    assert reason.startswith("token is not valid before 2023-11-14T22:15:20Z")


def test_the_injected_clock_decides_expiry(validator, fake_clock, rsa_keys):
    token = bearer(mint(rsa_keys[0], exp=int(NOW) + 600))
    assert validator.validate(token)["exp"] == int(NOW) + 600
    fake_clock.now += 600 + 60
    assert "token expired" in refused(validator, token)


@pytest.mark.parametrize("issuer", [f"https://sts.windows.net/{OTHER_TENANT}/",
                                    f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0",
                                    f"https://login.microsoftonline.com/{TENANT}/v2.0/", None])
def test_a_wrong_issuer_is_401(validator, rsa_keys, issuer):
    reason = refused(validator, bearer(mint(rsa_keys[0], iss=issuer)))
    assert reason.startswith(f"token issuer {issuer!r} is not '{V1_ISSUER}'")


@pytest.mark.parametrize("audience", ["api://someone-else", AUDIENCE.upper(), AUDIENCE + "/", ["api://x"], None])
def test_a_wrong_audience_is_401(validator, rsa_keys, audience):
    reason = refused(validator, bearer(mint(rsa_keys[0], aud=audience)))
    assert reason == f"token audience {audience!r} is not '{AUDIENCE}'"


def test_an_audience_list_holding_ours_is_accepted(validator, rsa_keys):
    assert validator.validate(bearer(mint(rsa_keys[0], aud=["api://x", AUDIENCE])))["aud"] == ["api://x", AUDIENCE]


def test_an_hs256_token_is_401_even_when_keyed_with_the_public_key(validator, jwks, rsa_keys):
    pem = rsa_keys[0].public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    confused = forge({"alg": "HS256", "typ": "JWT", "kid": "kid-1"}, claims(),
                     lambda data: hmac.new(pem, data, hashlib.sha256).digest())
    assert refused(validator, bearer(confused)) == "token algorithm 'HS256' is not RS256"
    shared = jwt.encode(claims(), "s" * 32, algorithm="HS256", headers={"kid": "kid-1"})
    assert refused(validator, bearer(shared)) == "token algorithm 'HS256' is not RS256"
    assert jwks.hits == 0


@pytest.mark.parametrize("alg", ["none", "None", "RS512", "PS256", None])
def test_alg_none_and_other_algorithms_are_401(validator, alg):
    header = {"typ": "JWT", "kid": "kid-1"} | ({} if alg is None else {"alg": alg})
    token = forge(header, claims(), lambda data: b"")
    assert refused(validator, bearer(token)) == f"token algorithm {alg!r} is not RS256"


def test_a_token_without_kid_is_401(validator, rsa_keys):
    token = jwt.encode(claims(), rsa_keys[0], algorithm="RS256")
    assert "no signing key id" in refused(validator, bearer(token))


# --- refused with 403 --------------------------------------------------------------------------------------------

def test_a_valid_token_without_roles_is_403(validator, rsa_keys):
    reason = refused(validator, bearer(mint(rsa_keys[0], roles=None)), status=403)
    assert reason == f"token does not grant the app role '{ROLE}' (roles: None)"


@pytest.mark.parametrize("roles", [["Reader", "Writer"], [], ROLE, [ROLE.lower()], [[ROLE]]])
def test_roles_without_the_webhook_role_are_403(validator, rsa_keys, roles):
    assert ROLE in refused(validator, bearer(mint(rsa_keys[0], roles=roles)), status=403)


def test_authentication_is_checked_before_the_role(validator, rsa_keys):
    refused(validator, bearer(mint(rsa_keys[0], roles=None, aud="api://x")), status=401)


# --- the key cache -----------------------------------------------------------------------------------------------

def test_keys_are_fetched_once_and_cached_for_the_ttl(validator, jwks, fake_clock, rsa_keys):
    token = bearer(mint(rsa_keys[0], exp=int(NOW) + 2 * int(TTL)))
    for _ in range(25):
        validator.validate(token)
    assert jwks.hits == 1
    fake_clock.now += TTL - 1
    validator.validate(token)
    assert jwks.hits == 1
    fake_clock.now += 1
    validator.validate(token)
    assert jwks.hits == 2


def test_concurrent_first_calls_share_one_fetch(validator, jwks, rsa_keys):
    token = bearer(mint(rsa_keys[0]))
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(validator.validate(token))) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert len(results) == 16 and jwks.hits == 1


def test_a_rotated_key_triggers_one_refetch_and_is_accepted(validator, jwks, rsa_keys):
    assert validator.validate(bearer(mint(rsa_keys[0])))
    jwks.publish(("kid-1", rsa_keys[0]), ("kid-2", rsa_keys[1]))
    assert validator.validate(bearer(mint(rsa_keys[1], kid="kid-2")))["aud"] == AUDIENCE
    assert jwks.hits == 2
    assert validator.validate(bearer(mint(rsa_keys[1], kid="kid-2")))
    assert jwks.hits == 2


def test_unknown_kids_refetch_at_most_once_a_minute(validator, jwks, fake_clock, rsa_keys):
    validator.validate(bearer(mint(rsa_keys[0])))
    reason = refused(validator, bearer(mint(rsa_keys[2], "forged-1")))
    assert reason == "token signing key id 'forged-1' is not among the tenant's signing keys"
    assert jwks.hits == 2
    for n in range(20):
        fake_clock.now += 2
        refused(validator, bearer(mint(rsa_keys[2], f"forged-{n + 2}")))
    assert jwks.hits == 2, "a flood of forged kids within 60 s costs one refetch"
    fake_clock.now += 20
    refused(validator, bearer(mint(rsa_keys[2], "forged-late")))
    assert jwks.hits == 3


def test_an_unknown_kid_on_the_first_call_costs_only_the_first_fetch(validator, jwks, rsa_keys):
    refused(validator, bearer(mint(rsa_keys[2], "forged")))
    assert jwks.hits == 1


def test_a_server_that_is_down_with_nothing_cached_is_transient(jwks, fake_clock, rsa_keys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    down = SecureWebhookValidator(TENANT, AUDIENCE, authority=f"http://127.0.0.1:{port}", issuers_of=CLOUD_ISSUERS,
                                  clock=fake_clock, timeout=1.0)
    with pytest.raises(TransientError, match="could not be fetched"):
        down.validate(bearer(mint(rsa_keys[0])))


@pytest.mark.parametrize(("status", "body", "message"), [
    (500, None, "answered HTTP 500"),
    (503, b"busy", "answered HTTP 503"),
    (404, b"{}", "answered HTTP 404"),
    (200, b"<html>not json</html>", "are not JSON"),
    (200, b'{"value": []}', "have no 'keys' list"),
    (200, b'{"keys": [{"kty": "EC", "kid": "kid-1"}, {"kty": "RSA", "kid": "kid-2", "n": "!", "e": "AQAB"}]}',
     "hold no usable RSA signing key"),
])
def test_a_bad_jwks_answer_with_nothing_cached_is_transient(validator, jwks, fake_clock, rsa_keys, status, body,
                                                             message):
    jwks.status, jwks.body = status, body
    token = bearer(mint(rsa_keys[0]))
    with pytest.raises(TransientError, match=message):
        validator.validate(token)
    jwks.status, jwks.body = 200, None
    with pytest.raises(TransientError, match="unavailable"):
        validator.validate(token)  # backs off instead of hammering the endpoint
    assert jwks.hits == 1
    fake_clock.now += 10
    assert validator.validate(token)["aud"] == AUDIENCE
    assert jwks.hits == 2


def test_a_jwks_timeout_is_transient(jwks, fake_clock, rsa_keys):
    jwks.delay = 0.5
    slow = SecureWebhookValidator(TENANT, AUDIENCE, authority=jwks.authority, issuers_of=CLOUD_ISSUERS,
                                  clock=fake_clock, timeout=0.1)
    started = time.monotonic()
    with pytest.raises(TransientError, match="could not be fetched"):
        slow.validate(bearer(mint(rsa_keys[0])))
    assert time.monotonic() - started < 0.45


def test_cached_keys_survive_a_failed_refresh_after_the_ttl(validator, jwks, fake_clock, rsa_keys):
    token = bearer(mint(rsa_keys[0], exp=int(NOW) + 3 * int(TTL)))
    validator.validate(token)
    jwks.status = 503
    fake_clock.now += TTL + 1
    assert validator.validate(token)["aud"] == AUDIENCE
    assert jwks.hits == 2
    assert validator.validate(token) and jwks.hits == 2, "a failed refresh is retried after a pause, not every call"
    jwks.status = 200
    jwks.publish(("kid-2", rsa_keys[1]))
    fake_clock.now += 10
    assert validator.validate(bearer(mint(rsa_keys[1], kid="kid-2")))
    assert jwks.hits == 3
    assert "'kid-1' is not among" in refused(validator, token), "the retired key is gone after a good refresh"


def test_an_unknown_kid_during_an_outage_is_401_not_transient(validator, jwks, rsa_keys):
    validator.validate(bearer(mint(rsa_keys[0])))
    jwks.status = 500
    assert "not among the tenant's signing keys" in refused(validator, bearer(mint(rsa_keys[1], "kid-new")))
    assert jwks.hits == 2


# --- construction and cold start ---------------------------------------------------------------------------------

def test_the_jwks_url_and_issuers_follow_the_authority_and_tenant():
    validator = SecureWebhookValidator(TENANT, AUDIENCE)
    assert validator.issuers == (V1_ISSUER, V2_ISSUER)
    government = SecureWebhookValidator(TENANT, AUDIENCE, authority="https://login.microsoftonline.us/")
    assert government.jwks_url == f"https://login.microsoftonline.us/{TENANT}/discovery/v2.0/keys"
    assert government.issuers == (V1_ISSUER, f"https://login.microsoftonline.us/{TENANT}/v2.0")


@pytest.mark.parametrize(("authority", "expected"), [
    ("https://login.chinacloudapi.cn", (f"https://sts.chinacloudapi.cn/{TENANT}/",
                                        f"https://login.chinacloudapi.cn/{TENANT}/v2.0")),
    ("https://login.example.sovereign", (f"https://login.example.sovereign/{TENANT}/v2.0",)),  # v2.0 tokens only
])
def test_sovereign_clouds_accept_their_own_issuers(authority, expected):
    assert SecureWebhookValidator(TENANT, AUDIENCE, authority=authority).issuers == expected


@pytest.mark.parametrize(("tenant", "audience"), [("", AUDIENCE), (TENANT, " ")])
def test_an_empty_tenant_or_audience_is_refused_at_construction(tenant, audience):
    with pytest.raises(ValueError, match="empty"):
        SecureWebhookValidator(tenant, audience)


def test_importing_the_module_loads_neither_pyjwt_nor_cryptography():
    script = ("import sys, controlplane.adapters.secure_webhook as m; assert m.SecureWebhookValidator; "
              "print(sorted(n for n in sys.modules if n.split('.')[0] in ('jwt', 'cryptography')))")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert time.monotonic() - started < 10
