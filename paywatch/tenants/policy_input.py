"""Tenant recovery policies as input: validated into canonical form, errors with field paths.

Policies travel and are stored as canonical JSON (sorted keys, no spaces): equal policies
get equal revisions whatever order their ``owners`` were written in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from paywatch.errors import InvalidPolicy
from paywatch.recovery.tenant_policy import TenantPolicy

_MAX_GIVEN = 80


def canonical_json(policy: TenantPolicy) -> str:
    """The policy as JSON with sorted keys and no whitespace."""
    return json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def parse_policy(data: Any) -> TenantPolicy:
    """Validate decoded JSON as a TenantPolicy in canonical form; InvalidPolicy lists why not."""
    try:
        policy = TenantPolicy.model_validate(data)
    except ValidationError as exc:
        raise InvalidPolicy([field_error(e) for e in exc.errors(include_url=False)]) from exc
    return TenantPolicy.model_validate_json(canonical_json(policy))


def field_error(error: ErrorDetails) -> tuple[str, str]:
    """(field path such as ``dunning[0].day``, reason) of one pydantic error."""
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    reason = error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    if error["type"] != "value_error" and isinstance(given, str | int | float | bool):
        shown = repr(given)
        reason += f" (got {shown[:_MAX_GIVEN]}{'...' if len(shown) > _MAX_GIVEN else ''})"
    return path.lstrip(".") or "(policy)", reason


def describe(errors: Sequence[tuple[str, str]]) -> str:
    """One line per field error, for humans."""
    return "; ".join(f"{field}: {reason}" for field, reason in errors)
