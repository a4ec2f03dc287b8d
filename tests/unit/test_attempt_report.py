"""Reported attempts (POST /v1/invoices/{ref}/attempts) as pure data: the body the route
takes, exactly what its OpenAPI schema says; the event it becomes; its deterministic id."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import jsonschema_rs
import pytest
from fastapi import Body
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from paywatch.api.query.app import create_app
from paywatch.api.query.attempt_report import (
    ATTEMPTED_AT,
    SOURCE_TYPE,
    AttemptFailed,
    AttemptReport,
    AttemptSucceeded,
    InvoiceFacts,
    Retry,
    conflicts,
    has_card_number,
    report_event,
    report_event_id,
)
from paywatch.schemas.models import DeclineCategory, EventType
from paywatch.settings import Settings

FACTS = InvoiceFacts(
    provider="adyen",
    customer_ref="cus_1",
    subscription_ref="sub_1",
    amount_minor=4900,
    currency="EUR",
    last_category=DeclineCategory.SOFT,
)
BODY: TypeAdapter[AttemptReport] = TypeAdapter(
    Annotated[AttemptReport, Body(discriminator="outcome")]
)


def read(body: dict[str, Any]) -> AttemptReport:
    """What FastAPI does with a JSON body: json.loads, then the union in strict mode."""
    return BODY.validate_python(json.loads(json.dumps(body)))


def failed(**changes: Any) -> dict[str, Any]:
    return {"attempt_id": "att_1", "attempted_at": "2026-05-01T10:00:00Z", "outcome": "failed"} | (
        changes
    )


# -- event ids -------------------------------------------------------------------------


def test_the_event_id_is_a_uuid_fixed_by_tenant_invoice_and_attempt() -> None:
    first = report_event_id("acme", "in_1", "att_1")
    assert first == report_event_id("acme", "in_1", "att_1")
    assert uuid.UUID(first).version == 5  # event_log.event_id and invoices.last_event_id are uuid
    others = {
        report_event_id("acme", "in_1", "att_2"),
        report_event_id("acme", "in_2", "att_1"),
        report_event_id("other", "in_1", "att_1"),
        # A slash in a ref cannot make two attempts one: the pair is encoded, not joined.
        report_event_id("acme", "in_1/att", "1"),
    }
    assert first not in others and len(others) == 4
    assert report_event_id("acme", "in/1", "att") != report_event_id("acme", "in", "1/att")


def test_a_retried_post_builds_the_very_same_event() -> None:
    report = read(failed(decline_code="insufficient_funds"))
    assert report_event("acme", "in_1", FACTS, report, None) == report_event(
        "acme", "in_1", FACTS, read(failed(decline_code="insufficient_funds")), None
    )


# -- the event -------------------------------------------------------------------------


def test_a_failure_is_a_canonical_event_of_the_invoices_provider() -> None:
    report = read(failed(attempted_at="2026-05-01T12:00:00.123456+02:00", decline_code="05"))
    event = report_event("acme", "in_1", FACTS, report, None)
    assert event.type is EventType.PAYMENT_FAILED and event.source_type == SOURCE_TYPE
    assert (event.provider, event.customer_ref, event.subscription_ref) == (
        "adyen",
        "cus_1",
        "sub_1",
    )
    assert event.occurred_at == datetime(2026, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)  # Avro ms
    assert (event.amount_minor, event.currency) == (4900, "EUR")  # the invoice's
    assert event.decline is not None and event.decline.code == "05"
    # No category given: the invoice's last one, as the sandbox executor's retries fail.
    assert event.decline.category is DeclineCategory.SOFT
    assert event.payment_ref == "att_1" and event.event_id == report_event_id(
        "acme", "in_1", "att_1"
    )
    assert not event.paywatch_retry and event.attempt is None  # counted like a provider retry


def test_given_facts_win_over_the_invoices() -> None:
    report = read(failed(amount_minor=100, currency="USD", decline_category="HARD"))
    event = report_event("acme", "in_1", FACTS, report, None)
    assert (event.amount_minor, event.currency) == (100, "USD")
    assert event.decline is not None and event.decline.category is DeclineCategory.HARD


def test_a_success_has_no_decline_and_the_outcome_of_a_scheduled_retry_is_marked() -> None:
    report = read({"attempt_id": "cmd-7", "attempted_at": "2026-05-01T10:00:00Z",
                   "outcome": "succeeded"})  # fmt: skip
    event = report_event("acme", "in_1", FACTS, report, Retry("cmd-7", 2))
    assert event.type is EventType.PAYMENT_SUCCEEDED and event.decline is None
    # The card's ledger counted the retry when it granted it: an outcome counts nothing.
    assert event.paywatch_retry and event.attempt == 2


# -- the body --------------------------------------------------------------------------


GOOD = [
    failed(),
    failed(amount_minor=0, currency="USD", decline_code="51", decline_message="Not sufficient"),
    failed(decline_category="FRAUD", amount_minor=None, currency=None, decline_code=None),
    failed(attempted_at="2024-02-29T23:59:59.5-05:00"),
    failed(attempted_at="2198-12-31T23:59:59+23:59"),
    failed(attempt_id="x" * 255),
    failed(amount_minor=5.0),  # JSON Schema's integer, so the route's too
    failed(amount_minor=1e15),
    {"attempt_id": "a", "attempted_at": "2000-01-01T00:00:00Z", "outcome": "succeeded"},
]
BAD = [
    {"attempt_id": "a", "attempted_at": "2026-05-01T10:00:00Z"},  # no outcome
    failed(outcome="refunded"),
    {"attempt_id": "a", "attempted_at": "2026-05-01T10:00:00Z", "outcome": "succeeded",
     "decline_code": "51"},  # a success has no decline
    failed(extra=1),
    failed(amount_minor="5"),  # strict: a string is not a number
    failed(amount_minor=5.5),
    failed(amount_minor=True),
    failed(amount_minor=-1),
    failed(amount_minor=10**15 + 1),
    failed(amount_minor=1.5e15),
    failed(currency="eur"),
    failed(attempt_id=""),
    failed(attempt_id="x" * 256),
    failed(attempt_id="a\x00b"),
    failed(decline_message="m" * 2001),
    failed(decline_category="soft"),
    failed(attempted_at="2026-05-01T10:00:00"),  # no offset
    failed(attempted_at="2026-05-01T10:00Z"),  # no seconds
    failed(attempted_at="2026-05-01 10:00:00Z"),
    failed(attempted_at="2023-02-29T10:00:00Z"),  # not a leap year
    failed(attempted_at="2100-02-29T10:00:00Z"),  # nor is 2100
    failed(attempted_at="2026-04-31T10:00:00Z"),
    failed(attempted_at="1999-12-31T10:00:00Z"),
    failed(attempted_at="2199-01-01T00:00:00Z"),
    failed(attempted_at="2026-05-01T10:00:00.1234567Z"),
    failed(attempted_at=1777629600),
]  # fmt: skip


@pytest.mark.parametrize("body", GOOD)
def test_good_bodies_are_read(body: dict[str, Any]) -> None:
    report = read(body)
    assert isinstance(report, AttemptFailed if body["outcome"] == "failed" else AttemptSucceeded)


@pytest.mark.parametrize("body", BAD)
def test_bad_bodies_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        read(body)


def test_a_lone_surrogate_is_refused_before_it_reaches_kafka_or_postgres() -> None:
    text = '{"attempt_id": "\\ud800", "attempted_at": "2026-05-01T10:00:00Z", "outcome": "failed"}'
    with pytest.raises(ValidationError, match="string_unicode"):
        BODY.validate_python(json.loads(text))  # json.loads keeps half a surrogate pair


@pytest.fixture(scope="module")
def published() -> jsonschema_rs.Validator:
    """The request body schema as the API publishes it (what schemathesis fuzzes with)."""
    doc = create_app(Settings(), "postgresql://unused@127.0.0.1:1/unused").openapi()
    operation = doc["paths"]["/v1/invoices/{invoice_ref}/attempts"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})


@pytest.mark.parametrize("body", GOOD + BAD)
def test_the_published_schema_accepts_exactly_what_the_route_reads(
    published: jsonschema_rs.Validator, body: dict[str, Any]
) -> None:
    assert published.is_valid(body) is (body in GOOD)


@settings(max_examples=300, deadline=None)
@given(st.from_regex(ATTEMPTED_AT, fullmatch=True))
def test_every_time_the_pattern_admits_is_an_instant_an_event_can_hold(text: str) -> None:
    at = datetime.fromisoformat(text).astimezone(UTC)
    assert 1970 <= at.year <= 2199  # PaymentEvent.occurred_at's bounds, whatever the offset
    assert read(failed(attempted_at=text)).at.tzinfo is UTC


def test_the_pattern_admits_every_calendar_day_of_the_range() -> None:
    pattern = re.compile(ATTEMPTED_AT)
    day, end, missed = date(2000, 1, 1), date(2198, 12, 31), []
    while day <= end:
        if not pattern.match(f"{day.isoformat()}T10:00:00Z"):
            missed.append(day)
        day += timedelta(days=1)
    assert missed == []


# -- card numbers and repeats ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "card"),
    [
        (failed(decline_message="declined for card 4111 1111 1111 1111"), True),
        (failed(decline_code="4111111111111111"), True),
        (failed(attempt_id="try-4111-1111-1111-1111"), True),
        (failed(decline_message="card \\u0034111111111111111"), True),  # an escape in text
        (failed(attempt_id="att_20260501100000", decline_message="do not honor"), False),
        (failed(decline_message="retry 2026-05-01 10:00:00 - 2026-05-08"), False),
    ],
)
def test_card_numbers_in_free_text_are_found(body: dict[str, Any], card: bool) -> None:
    assert has_card_number(read(body)) is card


def test_the_same_attempt_reported_again_conflicts_only_if_it_says_otherwise() -> None:
    first = read(failed(decline_code="51", amount_minor=4900))
    stored = report_event("acme", "in_1", FACTS, first, None)
    assert not conflicts(stored, first)
    assert not conflicts(stored, read(failed()))  # left-out facts say nothing
    assert not conflicts(stored, read(failed(attempted_at="2026-05-01T12:00:00+02:00")))
    assert conflicts(stored, read(failed(decline_code="05")))
    assert conflicts(stored, read(failed(amount_minor=100)))
    assert conflicts(stored, read(failed(attempted_at="2026-05-01T10:00:01Z")))
    succeeded = {"attempt_id": "att_1", "attempted_at": "2026-05-01T10:00:00Z",
                 "outcome": "succeeded"}  # fmt: skip
    assert conflicts(stored, read(succeeded))
