"""Topic models refuse what Kafka or Postgres could not hold (issue 8, poison records).

Each case was a real crash-loop on main: a NUL in an invoice id (Postgres rejects it), an
``attempt_count`` of 20000 (a 5.4 MB card-ledger changelog record) and an amount of 2^64
(Avro ``long`` overflow inside the normalize agent).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from paywatch.errors import PayloadError
from paywatch.providers.registry import get_provider
from paywatch.schemas.models import (
    MAX_ATTEMPT,
    MAX_BODY,
    MAX_MINOR,
    MAX_REF,
    MAX_TEXT,
    Decline,
    PaymentEvent,
    RawWebhook,
)
from tests.builders.stripe import stripe_body, stripe_event, stripe_invoice

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
EVENT = {
    "event_id": "e1",
    "type": "PAYMENT_FAILED",
    "tenant": "acme",
    "provider": "stripe",
    "source_type": "invoice.payment_failed",
    "occurred_at": NOW,
    "invoice_ref": "in_1",
}


def test_a_valid_event_passes() -> None:
    PaymentEvent.model_validate({**EVENT, "amount_minor": MAX_MINOR, "attempt": MAX_ATTEMPT})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("invoice_ref", "in_\x00"),
        ("invoice_ref", "x" * (MAX_REF + 1)),
        ("tenant", "ac\x00me"),
        ("customer_ref", "\x00"),
        ("amount_minor", 2**64),
        ("amount_minor", -(MAX_MINOR + 1)),
        ("attempt", 20000),
        ("attempt", -1),
        ("occurred_at", datetime(9999, 12, 31, tzinfo=UTC)),
        ("occurred_at", datetime(1900, 1, 1, tzinfo=UTC)),
        ("invoice_ref", "\ud800"),
    ],
)
def test_an_unstorable_value_is_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        PaymentEvent.model_validate({**EVENT, field: value})


def test_free_text_is_bounded_and_nul_free() -> None:
    Decline(message="x" * MAX_TEXT)
    with pytest.raises(ValidationError):
        Decline(message="x" * (MAX_TEXT + 1))
    with pytest.raises(ValidationError):
        Decline(message="a\x00b")


def test_a_raw_record_always_fits_under_kafkas_megabyte() -> None:
    raw = {"ingest_id": "i", "tenant": "t", "provider": "stripe", "received_at": NOW}
    RawWebhook.model_validate({**raw, "body": b"x" * MAX_BODY})
    with pytest.raises(ValidationError):
        RawWebhook.model_validate({**raw, "body": b"x" * (MAX_BODY + 1)})
    with pytest.raises(ValidationError):
        RawWebhook.model_validate(
            {**raw, "body": b"{}", "headers": {str(i): "v" for i in range(101)}}
        )


def _stripe(**invoice: object) -> RawWebhook:
    doc = stripe_event("invoice.payment_failed", stripe_invoice(basil=True, **invoice))  # type: ignore[arg-type]
    body = stripe_body(doc)
    return RawWebhook(ingest_id="i", tenant="acme", provider="stripe", received_at=NOW, body=body)


@pytest.mark.parametrize(
    ("invoice", "field"),
    [
        ({"invoice_id": "in_\x00poison"}, "invoice_ref"),
        ({"attempt_count": 20000}, "attempt"),
        ({"amount_due": 2**64}, "amount_minor"),
    ],
)
def test_a_poison_stripe_webhook_is_a_payload_error_naming_the_field(
    invoice: dict[str, object], field: str
) -> None:
    with pytest.raises(PayloadError, match=field):
        get_provider("stripe").normalize(_stripe(**invoice), "webhooks.raw", 0, 1)
