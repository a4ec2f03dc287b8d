"""Who may call which route of the query API: the permission matrix, as data.

A route is named ``"<METHOD> <path template>"`` exactly as FastAPI matched it (the
``route`` of the request scope, also the label of the request metrics). ``deps.Caller``
looks the matched route up on every authenticated request, so this table is the one place
a permission is granted: a route without an entry is refused to every role (fail closed),
and the tests walk the app's routes so that one added without an entry fails them. README
"Query API" shows the same table (a unit test keeps the two in step).

The viewer role reads what the analyst reads except who the customers are (it is
CUSTOMER_BLIND): the customers routes are not in its entries, REDACTED_FIELDS come back
null wherever they sit in an answer, filtering by one of them is refused (a filter that
matches reveals the value), and what names a customer in its own identifier is left out
of its lists and refused by ref: customer alerts (id and message carry the customer) and
invoices filed under their customer (``cus:<customer_ref>``, the generic provider's
fallback when an event has neither an invoice nor a subscription ref).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from paywatch.risk.high_risk import KIND as HIGH_RISK_CUSTOMER
from paywatch.tenants.roles import ROLES, Role

M = TypeVar("M")

ANYONE: frozenset[Role] = frozenset(ROLES)
READERS: frozenset[Role] = frozenset({"viewer", "analyst", "operator", "admin"})
"""Everyone who may list: support reads one invoice at a time, by its ref."""
ANALYSTS: frozenset[Role] = frozenset({"analyst", "operator", "admin"})
OPERATORS: frozenset[Role] = frozenset({"operator", "admin"})
ADMINS: frozenset[Role] = frozenset({"admin"})

PERMISSIONS: Mapping[str, frozenset[Role]] = {
    "GET /v1/invoices": READERS,
    "GET /v1/invoices/{invoice_ref}": ANYONE,
    "GET /v1/invoices/{invoice_ref}/timeline": ANYONE,
    "POST /v1/invoices/{invoice_ref}/attempts": OPERATORS,
    "GET /v1/failures": READERS,
    "GET /v1/metrics/recovery": READERS,
    "GET /v1/metrics/at-risk": READERS,
    "GET /v1/customers": ANALYSTS,
    "GET /v1/customers/{customer_ref}": ANALYSTS,
    "GET /v1/customers/{customer_ref}/contact": OPERATORS,
    "PUT /v1/customers/{customer_ref}/contact": OPERATORS,
    "GET /v1/alerts": READERS,
    "GET /v1/alerts/{alert_id:path}": READERS,
    "GET /v1/policy": READERS,
    "PUT /v1/policy": OPERATORS,
    "GET /v1/policy/history": READERS,
    "GET /v1/apikeys": ADMINS,
    "POST /v1/apikeys": ADMINS,
    "POST /v1/apikeys/{key_id}/revoke": ADMINS,
    "POST /v1/apikeys/{key_id}/rotate": ADMINS,
    "GET /v1/endpoints": ADMINS,
    "POST /v1/endpoints": ADMINS,
    "POST /v1/endpoints/{endpoint_id}/disable": ADMINS,
    "POST /v1/endpoints/{endpoint_id}/rotate-secret": ADMINS,
    "GET /v1/deliveries": OPERATORS,
    "POST /v1/deliveries/{delivery_id}/redeliver": OPERATORS,
    "GET /v1/ops/audit": ADMINS,
    "POST /v1/ops/backtest": OPERATORS,
    "POST /v1/ops/replay": OPERATORS,
    "GET /v1/ops/replay/{job_id}": OPERATORS,
}
"""Route -> the roles that may call it."""

LINKS: frozenset[str] = frozenset(
    {"GET /v1/email/unsubscribe", "POST /v1/email/unsubscribe", "GET /v1/email/update"}
)
"""The links of customers' emails: no API key, the signed token in the URL is the authority
(paywatch/email/links.py), and it names the one tenant and customer they act on."""

PUBLIC: frozenset[str] = (
    frozenset(
        {
            "GET /health",
            "GET /metrics",
            "GET /openapi.json",
            "GET /docs",
            "GET /docs/oauth2-redirect",
            "GET /redoc",
        }
    )
    | LINKS
)
"""Routes answered without a key (they take no caller): probes, metrics, the API's docs,
and the email LINKS."""

INCLUDES: Mapping[Role, frozenset[Role]] = {
    "viewer": frozenset({"viewer"}),
    "support": frozenset({"support"}),
    "analyst": frozenset({"analyst", "viewer", "support"}),
    "operator": frozenset({"operator", "analyst", "viewer", "support"}),
    "admin": ANYONE,
}
"""Role -> the roles whose every permission it also has (``require_role`` reads this):
admin ⊇ operator ⊇ analyst ⊇ viewer, support. A unit test checks PERMISSIONS agrees."""

CUSTOMER_BLIND: frozenset[Role] = frozenset({"viewer"})
"""Roles whose answers must not tell which customer anything is about."""
REDACTED_FIELDS: frozenset[str] = frozenset({"customer_ref", "card"})
"""Answer fields a customer-blind caller gets as null, at any depth (the customer's ref,
and the card's brand and last four digits), and query parameters it may not send."""
CUSTOMER_ALERT_KINDS: frozenset[str] = frozenset({HIGH_RISK_CUSTOMER})
"""Alert kinds about one customer: its ref is the alert id's subject and is in the message."""
CUSTOMER_INVOICE_PREFIX = "cus:"
"""Invoice refs that are a customer's ref (providers/generic/schema.py ``_invoice_ref``)."""


def route_key(method: str, path: str) -> str:
    """A route's name in the matrix, e.g. ``GET /v1/invoices/{invoice_ref}``."""
    return f"{method} {path}"


def allowed(route: str) -> frozenset[Role]:
    """The roles that may call ``route``: none when it has no entry (fail closed)."""
    return PERMISSIONS.get(route, frozenset())


def listed(roles: frozenset[Role]) -> str:
    """The roles in the order of roles.ROLES, comma separated."""
    return ", ".join(role for role in ROLES if role in roles)


def refusal(route: str, role: Role) -> str:
    """Why ``role`` may not call ``route`` (the detail of the 403)."""
    roles = allowed(route)
    if not roles:
        return (
            f"{route} has no entry in the permission matrix"
            " (paywatch/api/query/permissions.py), so no role may call it"
        )
    return f"{route} needs one of the roles {listed(roles)}; this key's role is {role}"


def customer_invoice(invoice_ref: str) -> bool:
    """True for an invoice filed under its customer's ref."""
    return invoice_ref.startswith(CUSTOMER_INVOICE_PREFIX)


def customer_alert(alert_id: str) -> bool:
    """True for the id of a customer alert (``tenant/kind/subject/opened ms``).

    Decided from the id alone, so a customer-blind caller gets the same answer whether the
    alert exists or not: a 403 for an existing one only would confirm the customer's alert.
    """
    parts = alert_id.split("/", 2)
    return len(parts) > 1 and parts[1] in CUSTOMER_ALERT_KINDS


def redact(answer: M) -> M:
    """``answer`` with every REDACTED_FIELDS value nulled, in nested models and lists too.

    Response models are frozen, so the redacted copy is a new model; values without a
    redacted field are returned as they are.
    """
    return cast(M, _redact(answer))


def _redact(value: Any) -> Any:
    if isinstance(value, list):
        return [_redact(item) for item in value]
    if not isinstance(value, BaseModel):
        return value
    update: dict[str, Any] = {}
    for name in type(value).model_fields:
        current = getattr(value, name)
        new = None if name in REDACTED_FIELDS else _redact(current)
        if new is not current:
            update[name] = new
    return value.model_copy(update=update) if update else value
