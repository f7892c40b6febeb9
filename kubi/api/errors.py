"""API errors as upstream's `metav1.Status` with its reasons and causes.

Every layer raises `StatusError`; the API server turns it into the HTTP answer.
The constructors mirror upstream's `k8s.io/apimachinery/pkg/api/errors` so the
messages read the same to a kubectl user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Cause:
    """One `details.causes[]` entry: a field path and what is wrong with it."""

    type: str  # FieldValueInvalid, FieldValueRequired, FieldValueDuplicate, ...
    message: str
    field: str

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.type, "message": self.message, "field": self.field}


# Upstream's field error types and the words it prints for them.
REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
DUPLICATE = "FieldValueDuplicate"
NOT_SUPPORTED = "FieldValueNotSupported"
FORBIDDEN = "FieldValueForbidden"
TOO_LONG = "FieldValueTooLong"
UNKNOWN_FIELD = "FieldValueUnknown"  # strict decoding's "unknown field"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def required(path: str, detail: str = "") -> Cause:
    return Cause(REQUIRED, "Required value" + (f": {detail}" if detail else ""), path)


def invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(INVALID, f"Invalid value: {_show(value)}: {detail}", path)


def duplicate(path: str, value: Any) -> Cause:
    return Cause(DUPLICATE, f"Duplicate value: {_show(value)}", path)


def not_supported(path: str, value: Any, allowed: list[str]) -> Cause:
    choices = ", ".join(f'"{a}"' for a in allowed)
    return Cause(NOT_SUPPORTED, f"Unsupported value: {_show(value)}: supported values: {choices}",
                 path)


def forbidden(path: str, detail: str) -> Cause:
    return Cause(FORBIDDEN, f"Forbidden: {detail}", path)


def too_long(path: str, limit: int) -> Cause:
    return Cause(TOO_LONG, f"Too long: may not be more than {limit} bytes", path)


def cause_text(c: Cause) -> str:
    """How upstream joins a cause into the aggregate message: `field: message`."""
    return f"{c.field}: {c.message}" if c.field else c.message


@dataclass
class StatusError(Exception):
    code: int
    reason: str
    message: str
    name: str = ""
    group: str = ""
    kind: str = ""
    causes: list[Cause] = field(default_factory=list)
    retry_after: int | None = None

    def __str__(self) -> str:
        return self.message

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = [c.to_dict() for c in self.causes]
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        if details:
            status["details"] = details
        if not self.reason:
            del status["reason"]
        return status


def _qualified(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(group: str, resource: str, name: str) -> StatusError:
    return StatusError(404, "NotFound", f'{_qualified(group, resource)} "{name}" not found',
                       name, group, resource)


def already_exists(group: str, resource: str, name: str) -> StatusError:
    return StatusError(409, "AlreadyExists",
                       f'{_qualified(group, resource)} "{name}" already exists',
                       name, group, resource)


def conflict(group: str, resource: str, name: str, detail: str) -> StatusError:
    return StatusError(409, "Conflict",
                       f'Operation cannot be fulfilled on {_qualified(group, resource)} '
                       f'"{name}": {detail}', name, group, resource)


def invalid_object(group: str, kind: str, name: str, causes: list[Cause]) -> StatusError:
    """422 Invalid, worded as upstream's NewInvalid: `Kind.group "name" is invalid: …`."""
    qualified = f"{kind}.{group}" if group else kind
    if not causes:
        text = f'{qualified} "{name}" is invalid'
    elif len(causes) == 1:
        text = f'{qualified} "{name}" is invalid: {cause_text(causes[0])}'
    else:
        text = f'{qualified} "{name}" is invalid: [{", ".join(cause_text(c) for c in causes)}]'
    return StatusError(422, "Invalid", text, name, group, kind, causes)


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def method_not_allowed(
        message: str = "the server does not allow this method on the requested resource",
) -> StatusError:
    return StatusError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str) -> StatusError:
    return StatusError(415, "UnsupportedMediaType",
                       f'the body of the request was in an unknown format - accepted media '
                       f'types include: application/json, application/yaml, '
                       f'application/vnd.kubernetes.protobuf (got "{content_type}")')


def not_acceptable(accept: str) -> StatusError:
    return StatusError(406, "NotAcceptable",
                       "only the following media types are accepted: application/json, "
                       "application/yaml, application/vnd.kubernetes.protobuf")


def too_large(message: str = "Request entity too large: limit is 3145728") -> StatusError:
    return StatusError(413, "RequestEntityTooLarge", message)


def gone(message: str) -> StatusError:
    return StatusError(410, "Expired", message)


def forbidden_request(message: str) -> StatusError:
    return StatusError(403, "Forbidden", message)


def internal(message: str) -> StatusError:
    return StatusError(500, "InternalError", message)
