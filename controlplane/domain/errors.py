"""The control plane's one exception tree.

Every error names what it is about (``subject``: a payload field's path, a setting, a task id, a review
field, a reference source, a gateway operation, an idempotency key...) and why (``reason``); its message
is made from the two. Whether to retry is the class's other half: permanent or transient.

::

    ControlPlaneError              subject + reason
    ├── PermanentError             retrying cannot help: record it, answer 4xx (or 503 when it is ours), never retry
    │   ├── InvalidEvent           a payload field is missing or malformed (subject: the field's path)
    │   │   ├── UnsupportedEvent   a well-formed event of a type the control plane does not handle
    │   │   ├── PayloadTooLarge    a body over its size limit (subject: body)
    │   │   └── LengthRequired     a body sent without a length (chunked) (subject: Transfer-Encoding)
    │   ├── PolicyError            the policy file is invalid (subject: the key path)
    │   ├── ConfigurationError     a setting is missing or malformed (subject: the setting)
    │   ├── DriftConfigError       a drift setting or column is invalid (subject: its name; setting: its group)
    │   ├── ReferenceLoadError     reference data is missing, unreadable or unsupported (subject: the source)
    │   ├── RequestError           a stored outbox request's field is missing or malformed (domain/requests.py)
    │   ├── Unauthorized           a caller's credentials were refused (subject: Authorization)
    │   │   └── Forbidden          valid credentials without the right asked for
    │   ├── VoteError              a vote or approval link that must not count (subject: the request field)
    │   │   ├── TokenRequired      no approval token was given
    │   │   ├── VoteForbidden      the token or the approver is refused
    │   │   ├── ReviewNotFound     no review has this id
    │   │   └── VoteConflict       the review is closed, or the link or the approver has voted already
    │   ├── TaskNotFound           no outbox task has this id (subject: the task id)
    │   ├── TaskRefused            the task's state does not allow the change (subject: the task id)
    │   ├── GatewayError           the Azure ML workspace refused a request for good (subject: the operation)
    │   │   └── NotFound           the model, job, endpoint or deployment does not exist
    │   ├── OperationFailed        a long-running Azure ML operation failed or ran late (subject: its target)
    │   └── StoreRefused           the store refuses one write for good (an entity over its size limits)
    └── TransientError             a dependency failed for now: the host should retry
        ├── StoreUnavailable       the decision store cannot be reached or timed out
        ├── EventInProgress        another instance is handling the same event right now (subject: its key)
        ├── TaskChanged            somebody else changed the task meanwhile (subject: the task id)
        └── ReferenceUnreachable   the store holding reference data failed for now (subject: the source)

No error carries an HTTP status: triggers choose it from the class (``triggers/http.py``) and decide from the
class alone what the host does: permanent errors are recorded and answered, transient errors are raised so the
host's retry (or the sender's) runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controlplane.domain.ledger import Task


class ControlPlaneError(Exception):
    """Base class of every error the control plane raises on purpose: ``subject`` says what it is about,
    ``reason`` what is wrong with it; the message is ``template`` filled from the error's attributes."""

    template = "{subject}: {reason}"

    def __init__(self, subject: str, reason: str) -> None:
        self.subject = subject
        self.reason = reason
        super().__init__(self.template.format_map(vars(self)))


class PermanentError(ControlPlaneError):
    """Retrying the same input will fail the same way."""


class TransientError(ControlPlaneError):
    """A dependency failed in a way that may succeed on retry."""


# -- what callers send ------------------------------------------------------------------------------------------

class InvalidEvent(PermanentError):
    """A payload does not match its contract; ``subject`` is the offending field's path (``$``: the whole)."""

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(subject or "$", reason)


class UnsupportedEvent(InvalidEvent):
    """A well-formed event whose type the control plane does not handle."""


class PayloadTooLarge(InvalidEvent):
    """A body over the limit of what its receiver reads."""


class LengthRequired(InvalidEvent):
    """A body sent without a declared length (chunked), which is not read."""


# -- what the control plane is configured with -------------------------------------------------------------------

class PolicyError(PermanentError):
    """The policy file is invalid; ``subject`` is the offending key's path."""

    template = "policy {subject}: {reason}"

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(subject or "$", reason)


class ConfigurationError(PermanentError):
    """A setting is missing or malformed; ``subject`` is its name (never its value)."""

    template = "setting {subject}: {reason}"


class DriftConfigError(PermanentError):
    """A drift setting is invalid, or the data lacks or mistypes a configured column; ``subject`` names it and
    ``setting`` the setting it was found in (``columns``, ``methods``, ...; ``subject`` itself for a scalar)."""

    template = "drift {subject!r}: {reason}"

    def __init__(self, subject: str, reason: str, setting: str | None = None) -> None:
        self.setting = setting or subject
        super().__init__(subject, reason)


class ReferenceLoadError(PermanentError):
    """The reference data cannot be read from ``subject`` (its source) however often it is tried."""

    template = "reference {subject}: {reason}"


# -- who asks ---------------------------------------------------------------------------------------------------

class Unauthorized(PermanentError):
    """A request's credentials are missing, malformed, expired, from the wrong issuer or audience, or badly
    signed; ``subject`` names where they were looked for (the ``Authorization`` header)."""


class Forbidden(Unauthorized):
    """Valid credentials that lack the right asked for (a token without the required role)."""


class VoteError(PermanentError):
    """A vote that must not count; ``subject`` is the request field at fault (``decision``, ``comment``)."""


class TokenRequired(VoteError):
    """The request carries no approval token."""


class VoteForbidden(VoteError):
    """The approval token is forged, foreign, malformed or expired, or the approver may not vote."""


class ReviewNotFound(VoteError):
    """No review has this id (``subject``: ``id``)."""


class VoteConflict(VoteError):
    """The review is closed or expired, the link or the approver has voted, or the review changed meanwhile."""


# -- the outbox and the workspace --------------------------------------------------------------------------------

class TaskNotFound(PermanentError):
    """No task has this id."""

    template = "task {subject} {reason}"

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id, "not found")


class TaskRefused(PermanentError):
    """The task's state does not allow the change asked for."""

    template = "cannot {action} task {subject}: {reason}"

    def __init__(self, task: Task, action: str, reason: str) -> None:
        self.state, self.action = task.state, action
        super().__init__(task.id, f"it is {task.state.value}; {reason}")


class TaskChanged(TransientError):
    """Somebody else changed the task between our read and our write; their version was kept."""

    template = "task {subject} changed while trying to {action} it; {reason}"

    def __init__(self, action: str, found: Task) -> None:
        self.action, self.found = action, found
        super().__init__(found.id, f"it is now {found.state.value} (attempts {found.attempts}, "
                                   f"due {found.due_at.isoformat()}); nothing was overwritten")


class GatewayError(PermanentError):
    """The workspace refused the request for good (not found, invalid, forbidden); ``subject`` is the gateway
    operation and ``azure_status`` the HTTP status Azure answered, when it answered one (evidence only)."""

    template = "{subject}: {reason}{answered}"

    def __init__(self, subject: str, reason: str, azure_status: int | None = None) -> None:
        self.azure_status = azure_status
        self.answered = f" (HTTP {azure_status})" if azure_status else ""
        super().__init__(subject, reason)


class NotFound(GatewayError):
    """The model, job, endpoint or deployment does not exist."""


class OperationFailed(PermanentError):
    """Azure ML reported the operation failed, or it ran past its deadline; ``subject`` is its target and
    ``operation`` the operation itself."""

    template = "{operation.kind} on {subject} failed: {reason}"

    def __init__(self, operation: Any, reason: str) -> None:
        self.operation = operation
        super().__init__(operation.target, reason)


# -- the store ---------------------------------------------------------------------------------------------------

class StoreRefused(PermanentError):
    """The store refuses this write for good (an entity or property over the store's size limits): writing
    it again cannot succeed, unlike a store that is down."""


class StoreUnavailable(TransientError):
    """The decision store could not be reached, timed out or was throttled."""


class EventInProgress(TransientError):
    """Another instance holds the claim on this event (``subject``: its idempotency key); retry after its lease."""

    template = "event {subject} is {reason}"

    def __init__(self, key: str) -> None:
        super().__init__(key, "being handled by another instance")


class ReferenceUnreachable(TransientError):
    """The service holding the reference failed in a way a retry may fix (network, throttling, 5xx)."""

    template = "reference {subject}: {reason}"
