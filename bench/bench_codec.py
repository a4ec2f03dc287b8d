"""Encode/decode throughput of PaymentEvent: the Avro codecs against JSON baselines.

Run: ``.venv/bin/python bench/bench_codec.py [records]``. Prints records/s (best
of three rounds) and payload size; takes about 15 s on a 2-vCPU VM.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient

from paywatch.kafka.registry import RegistryCodec
from paywatch.schemas.codec import SingleObjectCodec
from paywatch.schemas.models import (
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
    RawRef,
)

NOW = datetime(2026, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)
MINIMAL = PaymentEvent(
    event_id="5f0e6a52-3f0e-5a8e-9d1c-0c1f3e1f2a11",
    type=EventType.PAYMENT_SUCCEEDED,
    tenant="acme",
    provider="stripe",
    source_type="invoice.paid",
    occurred_at=NOW,
    invoice_ref="in_1OaBcDeFgHiJkLmN",
)
FULL = MINIMAL.model_copy(
    update={
        "type": EventType.PAYMENT_FAILED,
        "source_type": "invoice.payment_failed",
        "customer_ref": "cus_PqRsTuVwXyZ",
        "subscription_ref": "sub_1OaBcDeFgHiJ",
        "payment_ref": "ch_3OaBcDeFgHiJkLmN",
        "amount_minor": 4900,
        "currency": "usd",
        "decline": Decline(
            code="insufficient_funds",
            category=DeclineCategory.SOFT,
            network="visa",
            network_code="51",
            advice_code="try_again_later",
            message="Your card has insufficient funds.",
        ),
        "attempt": 2,
        "payment_method": PaymentMethod(
            brand="visa", last4="4242", exp_month=12, exp_year=2030, fingerprint="Xt5EWLLDS7FJjR1c"
        ),
        "provider_retry_at": NOW,
        "raw": RawRef(topic="webhooks.raw", partition=7, offset=1234567, provider_event_id="evt_1"),
    }
)


def rate(fn: Callable[[], Any], n: int) -> float:
    """Best records/s over three rounds of ``n`` calls."""
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = max(best, n / (time.perf_counter() - start))
    return best


def cases(event: PaymentEvent) -> list[tuple[str, Callable[[], Any], Callable[[], Any], int]]:
    """(name, encode, decode, payload bytes) for each way of serializing ``event``."""
    single = SingleObjectCodec()
    registry = RegistryCodec(SchemaRegistryClient.new_client({"url": "mock://bench"}))
    blob, framed = single.encode(event), registry.encode(event, topic="payments.events")
    as_json = json.dumps(event.model_dump(mode="json"))
    pyd_json = event.model_dump_json()
    return [
        ("avro single-object", lambda: single.encode(event),
         lambda: single.decode(blob, PaymentEvent), len(blob)),
        ("avro confluent (mock registry)", lambda: registry.encode(event, topic="payments.events"),
         lambda: registry.decode(framed, PaymentEvent), len(framed)),
        ("json.dumps(model_dump) / model_validate(json.loads)",
         lambda: json.dumps(event.model_dump(mode="json")),
         lambda: PaymentEvent.model_validate(json.loads(as_json)), len(as_json)),
        ("pydantic model_dump_json / model_validate_json", event.model_dump_json,
         lambda: PaymentEvent.model_validate_json(pyd_json), len(pyd_json)),
    ]  # fmt: skip


def main() -> None:
    """Print the comparison table for a minimal and a fully populated event."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    print(f"PaymentEvent, best of 3 x {n} records, Python {sys.version.split()[0]}")
    for label, event in (("minimal", MINIMAL), ("full", FULL)):
        print(f"\n{label} event")
        print(f"  {'codec':<52} {'encode/s':>10} {'decode/s':>10} {'bytes':>6}")
        for name, encode, decode, size in cases(event):
            print(f"  {name:<52} {rate(encode, n):>10,.0f} {rate(decode, n):>10,.0f} {size:>6}")


if __name__ == "__main__":
    main()
