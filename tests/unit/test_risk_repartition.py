"""Normalized events reach the risk agent keyed by customer (the very same bytes) and the
alerts agent as small signals keyed by tenant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from paywatch.risk.alerts import decode_signal
from paywatch.schemas.codec import SingleObjectCodec
from paywatch.schemas.models import EventType, PaymentEvent
from paywatch.streams.normalize_agent import EventTopics
from tests.integration.test_saga_agent import failure, success


@dataclass(frozen=True)
class Topic:
    """What EventTopics needs of a Faust topic."""

    name: str

    def get_topic_name(self) -> str:
        return self.name


def test_an_event_naming_its_customer_also_goes_to_risk_customers_keyed_by_it() -> None:
    topics = EventTopics(Topic("payments.events"), Topic("risk.customers"), Topic("risk.tenants"))
    at = datetime(2026, 11, 3, 9, 30, 1, 250000, tzinfo=UTC)  # Avro keeps milliseconds
    named = failure("acme", "in_1").model_copy(update={"customer_ref": "cus_9", "occurred_at": at})
    anonymous = failure("acme", "in_2").model_copy(update={"customer_ref": None})
    outputs = topics.outputs(SingleObjectCodec(), [named, anonymous])
    assert [(o.topic.name, o.key) for o in outputs] == [
        ("payments.events", b"acme/in_1"),
        ("risk.customers", b"acme/cus_9"),
        ("risk.tenants", b"acme"),
        ("payments.events", b"acme/in_2"),
        ("risk.tenants", b"acme"),
    ]
    assert outputs[0].value == outputs[1].value
    assert SingleObjectCodec().decode(outputs[1].value, PaymentEvent) == named
    signal = decode_signal(outputs[2].value)
    assert (signal.event_id, signal.provider, signal.kind, signal.decline_code) == (
        named.event_id,
        "generic",
        "failure",
        "51",
    )


def test_only_failures_and_successes_are_signals() -> None:
    topics = EventTopics(Topic("payments.events"), Topic("risk.customers"), Topic("risk.tenants"))
    paid = success("acme", "in_1").model_copy(update={"customer_ref": None})
    updated = paid.model_copy(update={"type": EventType.PAYMENT_METHOD_UPDATED})
    outputs = topics.outputs(SingleObjectCodec(), [paid, updated])
    assert [o.topic.name for o in outputs] == ["payments.events", "risk.tenants", "payments.events"]
    assert decode_signal(outputs[1].value).kind == "success"
