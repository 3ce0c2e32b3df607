"""The one error tree: every class is located (subject + reason), carries no HTTP status, and is answered at
the edge with a status chosen for it in ``triggers.http.statuses()``; the documented tree lists every class."""
from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

import controlplane
import triggers
from controlplane.domain import errors
from controlplane.domain.errors import ControlPlaneError
from controlplane.domain.ledger import TaskState
from controlplane.handlers.operations import Operation
from tests.support import ROOT
from triggers.http import error_answer, status_of, statuses


def _import_everything() -> None:
    for package in (controlplane, triggers):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    importlib.import_module("function_app")


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found.union(*(_subclasses(sub) for sub in found)) if found else found


_import_everything()
TREE = sorted((c for c in _subclasses(ControlPlaneError) | {ControlPlaneError}
               if c.__module__.startswith(("controlplane.", "triggers."))), key=lambda c: c.__name__)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
OPERATION = Operation("create_deployment", "churn-ep", "blue", NOW, NOW + timedelta(minutes=30))
TASK = SimpleNamespace(id="task-7", state=TaskState.PENDING, attempts=2, due_at=NOW)
# Classes whose constructor is not (subject, reason): an example of each, and the subject it must name.
EXAMPLES = {
    "TaskNotFound": (lambda: errors.TaskNotFound("task-7"), "task-7"),
    "TaskRefused": (lambda: errors.TaskRefused(TASK, "cancel", "only pending tasks are cancelled"), "task-7"),
    "TaskChanged": (lambda: errors.TaskChanged("retry", TASK), "task-7"),
    "EventInProgress": (lambda: errors.EventInProgress("ml:event-1"), "ml:event-1"),
    "OperationFailed": (lambda: errors.OperationFailed(OPERATION, "quota exceeded"), "churn-ep/blue"),
    "RequestError": (lambda: TREE_BY_NAME["RequestError"]("submit_pipeline", "request.name", "is missing"),
                     "request.name"),
}
TREE_BY_NAME = {cls.__name__: cls for cls in TREE}


def example(cls: type[ControlPlaneError]) -> tuple[ControlPlaneError, str]:
    """An instance of ``cls`` and the subject it was given."""
    if cls.__name__ in EXAMPLES:
        make, subject = EXAMPLES[cls.__name__]
        return make(), subject
    parameters = list(inspect.signature(cls).parameters)
    assert parameters[:2] == ["subject", "reason"], f"{cls.__name__}({parameters}): add it to EXAMPLES"
    return cls("data.essentials.alertId", "required field is missing"), "data.essentials.alertId"


def test_the_tree_is_found_whole():
    names = set(TREE_BY_NAME)
    assert len(names) == len(TREE), "two error classes share a name"
    assert {"InvalidEvent", "VoteForbidden", "TaskNotFound", "GatewayError", "ReferenceUnreachable",
            "DriftConfigError", "StoreUnavailable"} <= names


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__name__)
def test_every_error_is_located_and_says_why(cls):
    error, subject = example(cls)
    if cls is not ControlPlaneError:  # retry or not: exactly one of the two
        assert isinstance(error, errors.PermanentError) != isinstance(error, errors.TransientError)
    assert error.subject == subject and isinstance(error.reason, str) and error.reason
    message = str(error)
    assert subject in message and error.reason in message, "the message is made of subject and reason"


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__name__)
def test_every_error_has_a_deliberate_status_and_carries_none(cls):
    assert cls in statuses(), f"choose the HTTP status of {cls.__name__} in triggers.http.statuses()"
    status = statuses()[cls]
    assert status in (400, 401, 403, 404, 409, 411, 413, 503)
    if status >= 500:
        assert not issubclass(cls, errors.InvalidEvent | errors.Unauthorized | errors.VoteError)
    else:  # only the caller can fix a 4xx
        assert issubclass(cls, errors.InvalidEvent | errors.Unauthorized | errors.VoteError | errors.TaskNotFound
                          | errors.TaskRefused | errors.TaskChanged)
    error, _ = example(cls)
    assert not {"status", "status_code", "http_status"} & set(vars(error)), "statuses are chosen at the edge"


def test_a_new_subclass_without_an_entry_maps_through_its_base():
    class LinkReused(errors.VoteConflict):
        pass

    class CacheCold(errors.TransientError):
        pass

    class Novel(ControlPlaneError):
        pass

    assert LinkReused not in statuses() and status_of(LinkReused("review", "used already")) == 409
    assert status_of(CacheCold("cache", "cold")) == status_of(Novel("x", "y")) == 503
    assert status_of(errors.Forbidden("Authorization", "no role")) == 403  # its own entry, not its base's 401
    assert status_of(errors.NotFound("get_model", "gone")) == 503  # a workspace's model, not this API's resource


def test_a_callers_error_is_answered_naming_its_subject():
    answer = error_answer(errors.ReviewNotFound("id", "no review 'r-1'"))
    assert answer.status_code == 404
    assert json.loads(answer.get_body()) == {"error": {"field": "id", "reason": "no review 'r-1'"}}
    refused = error_answer(errors.Unauthorized("Authorization", "bearer token is not a well-formed JWT"))
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_services_own_error_is_503_naming_no_server_path():
    answer = error_answer(errors.StoreUnavailable("sqlite /srv/secret/ledger.db", "database is locked"),
                          decision="d-1")
    body = json.loads(answer.get_body())
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "30"
    assert body["error"]["field"] == "service" and body["decision"] == "d-1"
    assert "database is locked" in body["error"]["reason"] and "/srv/secret" not in body["error"]["reason"]


def test_drift_config_errors_keep_the_setting_they_were_found_in():
    error = errors.DriftConfigError("glucose", "unknown drift method 'x'", "methods")
    assert (error.subject, error.setting) == ("glucose", "methods")
    assert errors.DriftConfigError("alpha", "must be in (0, 1)").setting == "alpha"


def test_the_documented_tree_lists_every_class_once():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Errors", 1)[1].split("```", 2)[1]
    drawn = re.findall(r"^[\s│├└─]*(\w+)", section, re.MULTILINE)
    assert sorted(drawn) == sorted(TREE_BY_NAME)


def _required_arguments(cls: type) -> int:
    return sum(p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
               for p in inspect.signature(cls).parameters.values())


def test_every_raise_site_gives_what_its_class_requires():
    """A raise on a rare path (an adapter's failure) would otherwise fail with a TypeError only when it runs."""
    import ast

    required = {name: _required_arguments(cls) for name, cls in TREE_BY_NAME.items()}
    paths = [ROOT / "function_app.py", *(ROOT / "triggers").rglob("*.py"), *(ROOT / "controlplane").rglob("*.py")]
    short = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and not any(isinstance(a, ast.Starred) for a in node.args):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in required and len(node.args) + len(node.keywords) < required[name]:
                    short.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert not short, f"give these a subject and a reason: {short}"
