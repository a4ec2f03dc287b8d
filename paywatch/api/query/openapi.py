"""The query API's OpenAPI document, corrected where FastAPI's generator misdescribes it.

Errors are contracts (README "Query API"): every error answer is an ``ErrorBody``, and a bad
parameter is a 400 (``app.py`` turns FastAPI's validation errors into 400 ``invalid_request``).
The generator does not know either, and pydantic writes ``format: time`` for times it
serializes without an offset, which JSON Schema's RFC 3339 ``time`` requires. So:

* the 422 ``HTTPValidationError`` FastAPI adds to every operation with parameters is
  dropped (never answered; the PUT /v1/policy 422 is ``InvalidPolicyBody`` and stays),
  and each such operation documents its 400 ``ErrorBody``;
* every operation documents its 429 ``rate_limited`` (the tenant's token bucket, with
  ``Retry-After``), and each one with a request body its 408 (body not read in time) and
  413 (body too large);
* ``format: time`` becomes the pattern of what the API reads and writes: ``HH:MM[:SS[.f]]``
  with an optional offset (``Z`` or ``+HH:MM``), e.g. ``10:00:00``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

_ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"
_FASTAPI_SCHEMAS = ("HTTPValidationError", "ValidationError")
_BAD_PARAMETER = {
    "description": 'A bad parameter: `{"error": "invalid_request" | "invalid_cursor", "detail"}`.',
    "content": {"application/json": {"schema": _ERROR_BODY}},
}
_LIMITS = {
    "429": "Too many requests for the key's tenant: `rate_limited`, see `Retry-After`.",
}
_BODY_LIMITS = {
    "408": "The request body was not read in time: `body_timeout`.",
    "413": "The request body is too large: `too_large`.",
}
TIME_PATTERN = (
    r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?"
    r"(Z|z|[+-]([01][0-9]|2[0-3]):?[0-5][0-9])?$"
)
"""Exactly the strings pydantic reads as a time (checked against it by a unit test)."""
_TIME = {
    "type": "string",
    "pattern": TIME_PATTERN,
    "description": "HH:MM[:SS[.ffffff]], optionally with an offset (Z or +HH:MM).",
    "examples": ["10:00:00"],
}


def corrected(document: dict[str, Any]) -> dict[str, Any]:
    """The document with the error responses and time strings this API really has."""
    for operation in _operations(document):
        _document_bad_parameters(operation)
    schemas = document.get("components", {}).get("schemas", {})
    for name in _FASTAPI_SCHEMAS:
        schemas.pop(name, None)
    for name, schema in schemas.items():
        schemas[name] = _without_time_format(schema)
    return document


def _operations(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict) and "responses" in operation:
                yield operation


def _document_bad_parameters(operation: dict[str, Any]) -> None:
    responses = operation["responses"]
    fastapi_422 = responses.get("422", {}).get("content", {}).get("application/json", {})
    if fastapi_422.get("schema", {}).get("$ref") == _FASTAPI_422:
        del responses["422"]
    if operation.get("parameters") and "400" not in responses:
        responses["400"] = _BAD_PARAMETER
    limits = _LIMITS | (_BODY_LIMITS if "requestBody" in operation else {})
    for status, description in limits.items():
        responses.setdefault(
            status,
            {"description": description, "content": {"application/json": {"schema": _ERROR_BODY}}},
        )


def _without_time_format(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_time_format(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "time":
        return _TIME | {k: node[k] for k in ("title", "default") if k in node}
    return {key: _without_time_format(value) for key, value in node.items()}
