"""The control plane's one exception tree.

::

    ControlPlaneError
    ├── PermanentError           retrying cannot help: record it, answer 4xx, never retry
    │   ├── InvalidEvent         a payload field is missing or malformed (names the field's path)
    │   │   └── UnsupportedEvent a well-formed event of a type the control plane does not handle
    │   ├── PolicyError          the policy file is invalid (names the key path)
    │   ├── ConfigurationError   a setting is missing or malformed (names the setting)
    │   ├── Unauthorized         a caller's credentials were refused (401) or lack a right (403)
    │   └── StoreRefused         the store refuses one write for good (an entity over its size limits)
    └── TransientError           a dependency failed for now: the host should retry
        ├── StoreUnavailable     the decision store cannot be reached or timed out
        └── EventInProgress      another instance is handling the same event right now

Triggers decide from the class alone what the host does: permanent errors are recorded and answered,
transient errors are raised so the host's retry (or the sender's) runs.
"""
from __future__ import annotations


class ControlPlaneError(Exception):
    """Base class of every error the control plane raises on purpose."""


class PermanentError(ControlPlaneError):
    """Retrying the same input will fail the same way."""


class InvalidEvent(PermanentError):
    """A payload does not match its contract; ``path`` names the offending field."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path or "$"
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsupportedEvent(InvalidEvent):
    """A well-formed event whose type the control plane does not handle."""


class PolicyError(PermanentError):
    """The policy file is invalid; ``path`` names the offending key."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path or "$"
        self.reason = reason
        super().__init__(f"policy {self.path}: {reason}")


class ConfigurationError(PermanentError):
    """A setting is missing or malformed; ``setting`` names it."""

    def __init__(self, setting: str, reason: str) -> None:
        self.setting = setting
        self.reason = reason
        super().__init__(f"setting {setting}: {reason}")


class Unauthorized(PermanentError):
    """A request's credentials were refused: ``status`` is 401 (missing, malformed, expired, wrong issuer or
    audience, bad signature) or 403 (a valid token without the required role); ``reason`` says which."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


class TransientError(ControlPlaneError):
    """A dependency failed in a way that may succeed on retry."""


class StoreRefused(PermanentError):
    """The store refuses this write for good (an entity or property over the store's size limits): writing
    it again cannot succeed, unlike a store that is down."""


class StoreUnavailable(TransientError):
    """The decision store could not be reached, timed out or was throttled."""


class EventInProgress(TransientError):
    """Another instance holds the claim on this event; retry after its lease."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"event {key} is being handled by another instance")


class DriftConfigError(PermanentError):
    """A drift setting is invalid, or the data lacks or mistypes a configured column; ``name`` names it and
    ``setting`` the setting it was found in (``columns``, ``methods``, ...; ``name`` itself for a scalar)."""

    def __init__(self, name: str, reason: str, setting: str | None = None) -> None:
        self.name = name
        self.reason = reason
        self.setting = setting or name
        super().__init__(f"drift {name!r}: {reason}")
