"""Normalized events reach the risk agent keyed by customer, as the very same bytes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from paywatch.schemas.codec import SingleObjectCodec
from paywatch.schemas.models import PaymentEvent
from paywatch.streams.normalize_agent import EventTopics
from tests.integration.test_saga_agent import failure


@dataclass(frozen=True)
class Topic:
    """What EventTopics needs of a Faust topic."""

    name: str

    def get_topic_name(self) -> str:
        return self.name


def test_an_event_naming_its_customer_also_goes_to_risk_customers_keyed_by_it() -> None:
    topics = EventTopics(Topic("payments.events"), Topic("risk.customers"))
    at = datetime(2026, 11, 3, 9, 30, 1, 250000, tzinfo=UTC)  # Avro keeps milliseconds
    named = failure("acme", "in_1").model_copy(update={"customer_ref": "cus_9", "occurred_at": at})
    anonymous = failure("acme", "in_2").model_copy(update={"customer_ref": None})
    outputs = topics.outputs(SingleObjectCodec(), [named, anonymous])
    assert [(o.topic.name, o.key) for o in outputs] == [
        ("payments.events", b"acme/in_1"),
        ("risk.customers", b"acme/cus_9"),
        ("payments.events", b"acme/in_2"),
    ]
    assert outputs[0].value == outputs[1].value
    assert SingleObjectCodec().decode(outputs[1].value, PaymentEvent) == named
