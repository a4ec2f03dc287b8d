"""The permission matrix as data (issue 12 item 4): complete, consistent, documented.

Pure: the app is built (never started) only to list its routes and response models.
What the roles really get over HTTP is tests/integration/test_roles.py.
"""

from __future__ import annotations

import re
import typing
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, TypeAdapter, ValidationError

from paywatch.api.query import permissions
from paywatch.api.query.app import create_app
from paywatch.api.query.deps import Principal
from paywatch.api.query.permissions import (
    CUSTOMER_BLIND,
    INCLUDES,
    PERMISSIONS,
    PUBLIC,
    REDACTED_FIELDS,
    customer_alert,
    customer_invoice,
    redact,
    refusal,
    route_key,
)
from paywatch.api.query.schemas import (
    Card,
    FailureDecline,
    Invoice,
    KafkaCoordinates,
    Page,
)
from paywatch.api.query.schemas import Failure as FailureItem
from paywatch.schemas.models import DeclineCategory, SagaState
from paywatch.settings import Settings
from paywatch.tenants.roles import ROLES, Role
from tests.conftest import REPO

AT = datetime(2024, 5, 1, 10, tzinfo=UTC)
APIKEYS = {r for r in PERMISSIONS if r.split(" ", 1)[1].startswith("/v1/apikeys")}
ENDPOINTS = {r for r in PERMISSIONS if r.split(" ", 1)[1].startswith("/v1/endpoints")}
DELIVERIES = {"GET /v1/deliveries", "POST /v1/deliveries/{delivery_id}/redeliver"}
OPS_AUDIT = {"GET /v1/ops/audit"}
CUSTOMERS = {"GET /v1/customers", "GET /v1/customers/{customer_ref}"}
CONTACTS = {"GET /v1/customers/{customer_ref}/contact", "PUT /v1/customers/{customer_ref}/contact"}
OPERATOR_WRITES = {"PUT /v1/policy", "POST /v1/invoices/{invoice_ref}/attempts"}
REPLAY = {"POST /v1/ops/replay", "GET /v1/ops/replay/{job_id}"}
"""Rebuilds of the read models: operators start them and follow them."""
BACKTEST = {"POST /v1/ops/backtest"}
"""Policy backtests: operators run them (they replay history, they change nothing)."""
CELL = {"✓": True, "—": False}


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(Settings(), "postgresql://unused@127.0.0.1:1/unused")


def _routes(app: FastAPI) -> dict[str, Any]:
    """Every route of the app by its matrix name (HEAD is Starlette's twin of GET)."""
    return {
        route_key(method, str(context.path)): context.original_route
        for context in iter_route_contexts(app.routes)
        for method in sorted((context.methods or set()) - {"HEAD"})
    }


def _allowed(role: Role) -> set[str]:
    return {route for route, roles in PERMISSIONS.items() if role in roles}


def _gets() -> set[str]:
    return {route for route in PERMISSIONS if route.startswith("GET ")}


def test_every_route_of_the_app_has_an_entry_or_is_public(app: FastAPI) -> None:
    routes = set(_routes(app))
    assert routes - set(PERMISSIONS) - PUBLIC == set(), "routes missing from the matrix"
    assert set(PERMISSIONS) & PUBLIC == set()


def test_every_entry_names_a_route_of_the_app(app: FastAPI) -> None:
    routes = set(_routes(app))
    assert (set(PERMISSIONS) | PUBLIC) - routes == set(), "entries of routes that do not exist"


def test_every_role_appears_and_no_other() -> None:
    for role in ROLES:
        assert _allowed(role), f"{role} may call nothing"
    for route, roles in PERMISSIONS.items():
        assert roles and roles <= set(ROLES), route
    assert set(INCLUDES) == set(ROLES)


def test_admin_may_call_every_route() -> None:
    assert _allowed("admin") == set(PERMISSIONS)


def test_each_role_gets_what_the_issue_asks() -> None:
    admin_only = APIKEYS | ENDPOINTS | OPS_AUDIT
    assert _allowed("viewer") == _gets() - CUSTOMERS - CONTACTS - admin_only - DELIVERIES - REPLAY
    assert _allowed("support") == {
        "GET /v1/invoices/{invoice_ref}",
        "GET /v1/invoices/{invoice_ref}/timeline",
    }
    assert _allowed("analyst") == _gets() - CONTACTS - admin_only - DELIVERIES - REPLAY
    assert _allowed("operator") == (
        _allowed("analyst") | OPERATOR_WRITES | DELIVERIES | CONTACTS | REPLAY | BACKTEST
    )
    assert APIKEYS == {
        "GET /v1/apikeys",
        "POST /v1/apikeys",
        "POST /v1/apikeys/{key_id}/revoke",
        "POST /v1/apikeys/{key_id}/rotate",
    }
    for route in admin_only:
        assert PERMISSIONS[route] == {"admin"}, route


def test_a_role_that_includes_another_may_call_all_it_may() -> None:
    for role, included in INCLUDES.items():
        assert role in included
        for other in included:
            assert _allowed(other) <= _allowed(role), f"{role} includes {other}"


@pytest.mark.parametrize("role", ROLES)
def test_require_role_keeps_its_meaning(role: Role) -> None:
    caller = Principal(tenant="t", role=role)
    assert caller.has_role("admin") is (role == "admin")
    assert caller.has_role("operator") is (role in {"operator", "admin"})
    assert caller.has_role(role)


def test_the_readme_table_is_the_matrix() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    header = "| route | " + " | ".join(ROLES) + " |"
    assert header in lines, "the permission matrix's header (roles in roles.ROLES order)"
    start = lines.index(header) + 2
    documented: dict[str, frozenset[str]] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        route = cells[0].strip("`")
        marks = [CELL[cell.split()[0]] for cell in cells[1:]]
        documented[route] = frozenset(r for r, yes in zip(ROLES, marks, strict=True) if yes)
    # The README spells the alert id {alert_id}, without Starlette's :path converter.
    expected = {re.sub(r":\w+}", "}", route): roles for route, roles in PERMISSIONS.items()}
    assert documented == expected


def _failure(customer: str | None) -> FailureItem:
    return FailureItem(
        event_id=UUID(int=1), invoice_ref="in_1", provider="stripe", customer_ref=customer,
        payment_ref="pi_1", occurred_at=AT, amount_minor=100, currency="EUR", attempt=1,
        decline=FailureDecline(code="x", category=DeclineCategory.SOFT),
        card=Card(brand="visa", last4="4242"),
        kafka=KafkaCoordinates(topic="payments.events", partition=0, offset=1),
    )  # fmt: skip


def test_redact_nulls_the_fields_at_any_depth_and_nothing_else() -> None:
    page = Page[FailureItem](data=[_failure("cus_1"), _failure(None)], next_cursor="c")
    shown = redact(page)
    assert [(f.customer_ref, f.card) for f in shown.data] == [(None, None), (None, None)]
    unredacted = {"customer_ref", "card"}
    assert [f.model_dump(exclude=unredacted) for f in shown.data] == [
        f.model_dump(exclude=unredacted) for f in page.data
    ]
    assert shown.next_cursor == "c"
    assert page.data[0].customer_ref == "cus_1", "the original answer is left as it was"
    assert Principal("t", "analyst").redact(page) is page
    assert Principal("t", "viewer").redact(page) == shown


def test_redact_keeps_an_invoice_s_other_refs() -> None:
    invoice = Invoice(
        invoice_ref="in_1", status=SagaState.failed, provider="stripe", customer_ref="cus_1",
        subscription_ref="sub_1", amount_minor=1, currency="EUR", attempts=1,
        last_decline=None, first_failed_at=AT, last_failed_at=AT, recovered_at=None,
        canceled_at=None, last_event_at=AT, updated_at=AT,
    )  # fmt: skip
    assert redact(invoice) == invoice.model_copy(update={"customer_ref": None})


def _models(annotation: Any, found: set[type[BaseModel]] | None = None) -> set[type[BaseModel]]:
    """The pydantic models an annotation can hold, at any depth (a model that holds itself,
    like a policy with an experiment's challenger policy, is walked once)."""
    found = set() if found is None else found
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in found:
            return found
        found.add(annotation)
        for field in annotation.model_fields.values():
            _models(field.annotation, found)
    for arg in typing.get_args(annotation):
        _models(arg, found)
    return found


def _nullable(annotation: Any) -> bool:
    try:
        TypeAdapter(annotation).validate_python(None)
    except ValidationError:
        return False
    return True


def test_what_a_blind_role_gets_can_hold_null_where_it_is_redacted(app: FastAPI) -> None:
    routes = _routes(app)
    blind = {r for r, roles in PERMISSIONS.items() if roles & CUSTOMER_BLIND}
    checked = 0
    for name in sorted(blind):
        route = routes[name]
        assert isinstance(route, APIRoute), name
        for model in _models(route.response_model):
            for field_name, field in model.model_fields.items():
                if field_name in REDACTED_FIELDS:
                    assert _nullable(field.annotation), f"{name}: {model.__name__}.{field_name}"
                    checked += 1
    assert checked >= 3, "no redacted field found: the walk over the response models is broken"


def test_customer_ids_are_recognised_from_the_id_alone() -> None:
    assert customer_alert("acme/HIGH_RISK_CUSTOMER/cus_1/1714557600000")
    assert customer_alert("acme/HIGH_RISK_CUSTOMER/a/b/c")
    assert not customer_alert("acme/PROVIDER_FAILURE_SPIKE/stripe/1714557600000")
    assert not customer_alert("HIGH_RISK_CUSTOMER")
    assert customer_invoice("cus:cus_42")
    assert not customer_invoice("sub:sub_7") and not customer_invoice("in_cus:1")


def test_a_refusal_names_the_roles_that_may() -> None:
    said = refusal("GET /v1/customers", "viewer")
    assert "needs one of the roles analyst, operator, admin" in said and "viewer" in said
    assert "no entry in the permission matrix" in refusal("GET /v1/nowhere", "admin")
    assert permissions.allowed("GET /v1/nowhere") == frozenset()
